// Opens the candlecast page in headless Chromium and reports what it shows.
// Usage: node page.mjs URL [SCREENSHOT.png]
// Prints `READY {json}` once five charts hold data, then waits for a new candle on
// BTCUSDT (the Rust test closes one) and prints `UPDATED {json}`. Exits non-zero on
// any failure or after 60 s.
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const timer = setTimeout(() => { console.error("timed out"); process.exit(3); }, 60_000);

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("pageerror", (error) => { console.error("page error:", error.message); process.exit(4); });
  await page.goto(url);
  await page.waitForFunction(() => {
    const s = window.candlecast;
    return s && s.status === "live" && Object.keys(s.coins).length === 5
      && Object.values(s.coins).every((c) => c.count > 0);
  });
  const ready = await page.evaluate(() => ({
    state: window.candlecast,
    charts: document.querySelectorAll("section[data-coin] canvas").length > 0
      ? [...document.querySelectorAll("section[data-coin]")].map((s) => s.dataset.coin) : [],
    status: document.getElementById("status").textContent,
  }));
  console.log("READY " + JSON.stringify(ready));
  const before = ready.state.coins.BTCUSDT.newestOpenTime;
  await page.waitForFunction((t) => window.candlecast.coins.BTCUSDT.newestOpenTime > t, before);
  if (screenshot) await page.screenshot({ path: screenshot });
  const updated = await page.evaluate(() => ({
    state: window.candlecast,
    price: document.querySelector('section[data-coin="BTCUSDT"] .price').textContent,
  }));
  console.log("UPDATED " + JSON.stringify(updated));
} finally {
  clearTimeout(timer);
  await browser.close();
}
