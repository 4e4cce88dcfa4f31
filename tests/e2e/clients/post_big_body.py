# Posts a body of N bytes to URL with Python's http.client (which sends the whole body before it
# reads the answer) and prints the status it got, or the exception that hid it.
import http.client
import sys
import urllib.parse

url, size = sys.argv[1], int(sys.argv[2])
parts = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
try:
    conn.request("POST", parts.path, body=b"x" * size, headers={"Content-Type": "application/json"})
    print(conn.getresponse().status)
except Exception as e:  # the answer was lost: say how
    print("error", type(e).__name__, e)
