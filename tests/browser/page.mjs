// Opens the candlecast page in headless Chromium, uses it as a trader would, and
// reports what it shows, one `STEP {json}` line per step (tests/browser.rs checks them).
// Usage: node page.mjs URL [SCREENSHOT.png]
//
//   READY     the page is live on its default view: every coin's window is held
//   UPDATED   after the Rust test closes a BTCUSDT candle, the page has it
//   OLDER     after dragging the chart to the right, older candles came from the history API
//   SWITCHED  after clicking 5m, five-minute candles are drawn
//   FORMING   after each line on stdin ({"open_time":…,"close":…}, sent once the test's
//             fake has sent the forming frame), the chart's last candle is that one;
//             two such lines are expected
//   RSI       after choosing ETHUSDT and clicking RSI 14, its pane is there
//   RELOADED  after a reload, the same view from the URL
//   DONE      after choosing BTCUSDT, 1m, SMA 20, BB 20 and MACD (the screenshot's view)
//   DROPPED   the page's connection was dropped, as by an outage
//   RESUMED   after a line on stdin ({"through": open_time}: the test closed candles
//             meanwhile), the page reconnected and holds BTCUSDT up to that candle
//
// Exits non-zero on any failure, a page error, or after 120 s.
import readline from "node:readline";
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const timer = setTimeout(() => { console.error("timed out"); process.exit(3); }, 120_000);
const input = readline.createInterface({ input: process.stdin });
const commands = input[Symbol.asyncIterator]();

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("pageerror", (error) => { console.error("page error:", error.message); process.exit(4); });
  const report = async (step, extra = {}) => {
    const seen = await page.evaluate(() => ({
      state: window.candlecast,
      pageUrl: location.href,
      pressed: [...document.querySelectorAll('[aria-pressed="true"]')].map((b) => b.dataset.interval || b.dataset.indicator || b.dataset.coin),
    }));
    console.log(step + " " + JSON.stringify({ ...seen, ...extra }));
    return seen;
  };
  // Live, every coin's window held, and the chart drawing the chosen coin.
  const settled = () => page.waitForFunction(() => {
    const s = window.candlecast;
    return s && s.status === "live" && Object.keys(s.coins).length === 5
      && Object.values(s.coins).every((c) => c.windowCount > 0) && s.chart && s.chart.coin === s.coin && s.chart.bars > 0;
  });

  await page.goto(url);
  await settled();
  const ready = await report("READY", {
    status: await page.textContent("#status"),
    tiles: await page.$$eval(".coin[data-coin]", (tiles) => tiles.map((t) => t.dataset.coin)),
    canvas: await page.locator("#chart canvas").count(),
  });

  // The Rust test closes a BTCUSDT candle.
  const before = ready.state.coins.BTCUSDT.newestOpenTime;
  await page.waitForFunction((t) => window.candlecast.coins.BTCUSDT.newestOpenTime > t, before);
  await report("UPDATED", { price: await page.textContent('.coin[data-coin="BTCUSDT"] .price') });

  // Drag the chart to the right, as a trader scrolls back in time.
  const box = await page.locator("#chart").boundingBox();
  const y = box.y + box.height * 0.4;
  await page.mouse.move(box.x + box.width * 0.3, y);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.3 + 400, y, { steps: 12 });
  await page.mouse.up();
  await page.waitForFunction(() => window.candlecast.coins.BTCUSDT.exhausted);
  await report("OLDER");

  await page.click('[data-interval="5m"]');
  await settled();
  await page.waitForFunction(() => window.candlecast.interval === "5m");
  await report("SWITCHED");

  for (let i = 0; i < 2; i += 1) {
    const { value: line, done } = await commands.next();
    if (done) throw new Error("stdin closed before a forming candle was announced");
    const expected = JSON.parse(line);
    await page.waitForFunction(({ open_time, close }) => {
      const s = window.candlecast;
      const forming = s.coins.BTCUSDT.forming;
      return forming && forming.open_time === open_time && forming.close === close
        && s.chart.lastTime === open_time && s.chart.last.close === close;
    }, expected);
    await report("FORMING");
  }

  await page.click('.coin[data-coin="ETHUSDT"]');
  await page.click('[data-indicator="rsi14"]');
  await page.waitForFunction(() => {
    const s = window.candlecast;
    return s.chart.coin === "ETHUSDT" && s.panes.length === 2 && s.chart.points.rsi14 > 0;
  });
  await report("RSI");

  await page.reload();
  await settled();
  await page.waitForFunction(() => window.candlecast.chart.points.rsi14 > 0);
  await report("RELOADED");

  await page.click('.coin[data-coin="BTCUSDT"]');
  await page.click('[data-interval="1m"]');
  for (const id of ["sma20", "bb20", "macd"]) await page.click(`[data-indicator="${id}"]`);
  await settled();
  await page.waitForFunction(() => {
    const s = window.candlecast;
    return s.interval === "1m" && s.chart.coin === "BTCUSDT" && s.panes.length === 3
      && s.chart.points.sma20 > 0 && s.chart.points.rsi14 > 0;
  });
  // Bands and MACD lines draw when their values have the shapes the feed promises;
  // the Rust test checks the counts.
  await page.waitForFunction(() => window.candlecast.chart.points.bb20 > 0 && window.candlecast.chart.points.macd > 0,
    null, { timeout: 3000 }).catch(() => {});
  await page.mouse.move(box.x + box.width * 0.75, box.y + box.height * 0.3);
  await page.waitForTimeout(300);
  if (screenshot) await page.screenshot({ path: screenshot });
  await report("DONE");

  await page.evaluate(() => window.candlecast.dropConnection());
  await report("DROPPED");
  const { value: resumeLine, done: noResume } = await commands.next();
  if (noResume) throw new Error("stdin closed before the candles closed during the outage were announced");
  const { through } = JSON.parse(resumeLine);
  await page.waitForFunction((t) => {
    const s = window.candlecast;
    return s.status === "live" && s.connects >= 2 && s.coins.BTCUSDT.newestOpenTime >= t;
  }, through);
  await report("RESUMED");
} finally {
  clearTimeout(timer);
  input.close();
  await browser.close();
}
