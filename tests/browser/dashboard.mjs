// Drives Debian's Chromium, headless, through the dashboard of a library where a conversion
// runs. Run by tests/dashboard.rs:
//
//   node dashboard.mjs URL LIBRARY HOST control|readonly [SCREENSHOT.png]
//
// Prints one JSON line of what it saw; exits non-zero, with the reason, when the page does
// not behave.
import { chromium } from "playwright-core";
import { existsSync } from "node:fs";
import { join } from "node:path";

const [url, library, host, mode, screenshot] = process.argv.slice(2);
const seen = { mode };

function fail(message) {
  console.error("browser test: " + message);
  console.log(JSON.stringify({ ...seen, error: message }));
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 1300 } });
  const errors = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  page.on("console", (msg) => { if (msg.type() === "error") errors.push(msg.text()); });
  await page.goto(url);

  // The host, working, and its percent moving.
  const state = page.locator(`tr[data-host="${host}"] td.state`);
  await state.and(page.locator('[data-state="working"]')).waitFor({ timeout: 90000 })
    .catch(() => fail(`${host} never shown working`));
  seen.state = await state.textContent();
  const job = page.locator(`.job[data-host="${host}"]`).first();
  const percent = async () => Number(await job.getAttribute("data-percent", { timeout: 30000 }));
  seen.first_percent = await percent();
  const deadline = Date.now() + 60000;
  seen.later_percent = seen.first_percent;
  while (seen.later_percent === seen.first_percent) {
    if (Date.now() > deadline) fail(`the percent stayed at ${seen.first_percent}`);
    await page.waitForTimeout(250);
    seen.later_percent = await percent();
  }
  seen.file = await job.getAttribute("data-file");
  await page.locator("#chart svg").waitFor({ timeout: 30000 }).catch(() => fail("no chart drawn"));
  seen.hosts = await page.locator("#hosts tbody tr").count();
  seen.chart = await page.locator("#chart svg polyline").count();
  seen.cards = await page.locator("#totals .card").allTextContents();
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });

  seen.errors = [...errors];
  const pauseFile = join(library, ".mediabox.pause");
  const controls = page.locator("#controls");
  seen.controls_visible = await controls.isVisible();
  seen.retry_buttons = await page.locator("button.retry").count();
  seen.failures = await page.locator("#failures tbody tr").count();
  if (mode === "control") {
    if (!seen.controls_visible) fail("the controls are not shown with --allow-control");
    await page.locator("#pause").click();
    const until = Date.now() + 10000;
    while (!existsSync(pauseFile)) {
      if (Date.now() > until) fail("pressing pause wrote no pause file");
      await page.waitForTimeout(100);
    }
    await page.locator("#paused").waitFor({ state: "visible", timeout: 10000 })
      .catch(() => fail("the page never said paused"));
    seen.banner = await page.locator("#paused").textContent();
    seen.paused = true;
  } else {
    // No control on the page, and a hand-made request is refused by the server.
    seen.refused = await page.evaluate(async () => (await fetch("/api/pause", {
      method: "POST", headers: { "Content-Type": "application/json", "X-Token": "guess" }, body: "{}",
    })).status);
    seen.paused = existsSync(pauseFile);
  }
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
