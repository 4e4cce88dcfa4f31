// Opens gpumod's web page in Debian's headless Chromium (driven by playwright-core) as a person
// would: waits for the services to show, switches a mode with its button, waits until the page
// shows the new states (it learns them from the event stream), opens a service's log, and saves
// a screenshot before and after. Prints one JSON object after "RESULT " for the C++ test
// (tests/e2e/ui_test.cpp). usage: node ui_check.mjs URL MODE SERVICE SHOT_DIR [TOKEN]
import { chromium } from "playwright-core";

const [url, mode, service, shots, token] = process.argv.slice(2);
const out = {};
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const requests = [];
  page.on("request", (r) => requests.push(new URL(r.url()).pathname));
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url + "/ui");
  if (token) {
    await page.waitForSelector("#tokenbox", { state: "visible" });
    out.asked_for_token = true;
    await page.fill("#token", token);
    await page.click("#tokenform button");
  }
  await page.waitForSelector(`#services tr[data-service="${service}"]`);
  out.services = await page.$$eval("#services tbody tr", (rows) =>
    rows.map((r) => ({ id: r.dataset.service, state: r.querySelector(".state").textContent })));
  out.gpu_bars = await page.$$eval("#gpus .bar", (b) => b.length);
  await page.screenshot({ path: shots + "/ui-before.png", fullPage: true });
  const before = requests.length;
  await page.click(`#modes tr[data-mode="${mode}"] button`);
  await page.waitForFunction(
    (m) => document.querySelector("#mode").textContent === "mode: " + m,
    mode, { timeout: 30000 });
  await page.waitForFunction(
    (s) => document.querySelector(`#services tr[data-service="${s}"] .state`)?.textContent === "ready",
    service, { timeout: 30000 });
  out.after = await page.$$eval("#services tbody tr", (rows) =>
    rows.map((r) => ({ id: r.dataset.service, state: r.querySelector(".state").textContent })));
  out.events = await page.$$eval("#events div", (d) => d.map((x) => x.dataset.kind));
  out.service_segments = await page.$$eval("#gpus .seg-svc", (s) => s.map((x) => x.title));
  await page.selectOption("#logsvc", service);
  await page.waitForFunction(() => document.querySelector("#log").textContent.length > 0, null, { timeout: 15000 });
  out.log = await page.textContent("#log");
  await page.screenshot({ path: shots + "/ui-after.png", fullPage: true });
  // Live means the event stream, not a timer: over two idle seconds the page asks for nothing.
  const idleFrom = requests.length;
  await page.waitForTimeout(2000);
  out.requests_while_idle = requests.slice(idleFrom);
  out.requests_after_click = requests.slice(before, idleFrom).length;
  out.page_errors = errors;
} catch (e) {
  out.failure = String(e && e.stack ? e.stack : e);
} finally {
  await browser.close();
}
console.log("RESULT " + JSON.stringify(out));
