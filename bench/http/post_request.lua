-- wrk script for bench/http/run.sh: POST /request for a model (run.sh replaces MODEL).
wrk.method = "POST"
wrk.body = '{"model":"MODEL"}'
wrk.headers["Content-Type"] = "application/json"
