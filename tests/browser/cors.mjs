// Reads the candlecast HTTP API from a page on another origin, in headless Chromium.
// Usage: node cors.mjs API_BASE PAGE_ORIGIN
// PAGE_ORIGIN serves a blank page (the test runs it); its fetches go to the real API.
// Prints `RESULT {json}`: per path, the status the page could
// read, or the error the browser gave it (a CORS refusal is a TypeError).
import { chromium } from "playwright-core";

const [api, origin] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const timer = setTimeout(() => { console.error("timed out"); process.exit(3); }, 60_000);

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"],
});
try {
  const page = await browser.newPage();
  await page.goto(origin + "/");
  const result = await page.evaluate(async (api) => {
    const read = async (path, init) => {
      try {
        const response = await fetch(api + path, init);
        await response.text();
        return { status: response.status };
      } catch (error) {
        return { error: String(error) };
      }
    };
    return {
      origin: window.location.origin,
      history: await read("/api/v1/candles/BTCUSDT?limit=2"),
      health: await read("/health"),
      ready: await read("/ready"),
      metrics: await read("/metrics"),
      // A custom header makes the browser send a preflight OPTIONS first.
      preflighted: await read("/api/v1/candles/BTCUSDT", { headers: { "X-Chart-App": "1" } }),
    };
  }, api);
  console.log("RESULT " + JSON.stringify(result));
} finally {
  clearTimeout(timer);
  await browser.close();
}
