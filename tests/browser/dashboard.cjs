// Drives toolgate's dashboard in a real headless Chromium (playwright-core), step by step
// with the Python test that runs it (tests/e2e/test_dashboard.py):
//
//   node dashboard.cjs BASE_URL ADMIN_TOKEN
//
// Each step prints "STEP <name> [value]" on stdout; where the test must act on the gateway
// (make a call) the script then waits for a line "go" on stdin. Any failure prints
// "FAIL <reason>" and exits 1. Chromium: $TOOLGATE_CHROMIUM (default /usr/bin/chromium).
"use strict";

const { chromium } = require("playwright-core");
const readline = require("readline");

const [base, token] = process.argv.slice(2);
const input = readline.createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
const step = (name, value) => console.log("STEP " + name + (value === undefined ? "" : " " + value));
const go = async () => {
  const { value, done } = await lines.next();
  if (done || value.trim() !== "go") throw new Error("expected 'go' from the test, got " + JSON.stringify(value));
};

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.TOOLGATE_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  // Script errors fail the test; failed requests do not (the refused sign-in is one).
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push("console: " + m.text());
  });
  try {
    await page.goto(base + "/admin");
    // A wrong token is refused on the page itself.
    await page.fill("#token", "tg-not-an-admin-token");
    await page.click("#login-button");
    await page.waitForFunction(() => document.getElementById("login-error").textContent.includes("Not signed in"));
    step("refused-wrong-token");

    await page.fill("#token", token);
    await page.click("#login-button");
    await page.waitForFunction(() => document.getElementById("whoami").textContent.includes("(admin)"));
    step("signed-in", await page.textContent("#whoami"));

    // The live log: a call made now appears without a reload.
    await page.click('nav button[data-tab="calls"]');
    step("calls-open");
    await go();
    await page.waitForSelector('#call-rows tr >> text="echo"', { timeout: 15000 });
    step("call-seen");

    // The denial count moves when a call is refused.
    await page.click('nav button[data-tab="overview"]');
    await page.waitForSelector("#denials-py");
    const before = Number(await page.textContent("#denials-py"));
    step("denials", before);
    await go();
    await page.waitForFunction((n) => Number(document.getElementById("denials-py").textContent) === n + 1,
      before, { timeout: 15000 });
    step("denials-moved", before + 1);

    // A pending approval, approved with its button.
    await page.click('nav button[data-tab="approvals"]');
    const pending = await page.waitForSelector("#approval-rows tr[data-approval-id]", { timeout: 15000 });
    const id = await pending.getAttribute("data-approval-id");
    await pending.$eval("button.approve", (b) => b.click());
    await page.waitForFunction((id) => !document.querySelector('#approval-rows tr[data-approval-id="' + id + '"]'),
      id, { timeout: 15000 });
    step("approved", id);

    // Servers with their tools' risk, and a call tried against a policy.
    await page.click('nav button[data-tab="servers"]');
    await page.waitForSelector('#server-list td >> text="delete_everything"', { timeout: 15000 });
    step("tools-shown");
    await page.click('nav button[data-tab="policies"]');
    await page.waitForSelector("#evaluate-policy option", { state: "attached" });
    await page.fill("#evaluate-tool", "delete_everything");
    await page.click('#evaluate-form button[type="submit"]');
    await page.waitForFunction(() => document.getElementById("evaluate-result").dataset.decision === "deny");
    step("evaluated", JSON.stringify(await page.textContent("#evaluate-result")));

    if (problems.length) throw new Error(problems.join("; "));
    step("done");
  } catch (e) {
    console.log("FAIL " + (e && e.message ? e.message.split("\n")[0] : e) + (problems.length ? " | " + problems.join("; ") : ""));
    process.exitCode = 1;
  } finally {
    await browser.close();
    input.close();
  }
})();
