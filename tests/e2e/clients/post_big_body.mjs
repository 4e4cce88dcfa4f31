// Posts a body of N bytes to URL with Node's fetch and prints the status it got, or the error
// that hid it.
const [url, size] = process.argv.slice(2);
try {
  const res = await fetch(url, { method: "POST", body: Buffer.alloc(Number(size), 0x78) });
  console.log(res.status);
} catch (e) {
  console.log("error", e.name, e.message, e.cause ? String(e.cause) : "");
}
