// Single-task action links in a real browser: `portico demo` prints a click-through link to the
// member's prior authorization request; `portico task-link create` mints a PIN link and a
// sign-in link for the two children's requests (the parent acts for them). Each policy is
// used as a person would, on a phone and on a desktop: the page shows the one request in plain
// words, wrong PINs are counted, a signed-in stranger is turned away, the decision is recorded
// and a used link says so.
//
// Run: node --test tests/browser/action-links.test.mjs (needs what smart-launch.test.mjs needs).
// Expiry and the API side (Task search, audit, revocation) are covered over HTTP in
// crates/portico/tests/api/action_links.rs, where the server's clock can be moved.

import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import {
  CHROMIUM_ARGS,
  CHROMIUM_BIN,
  SCREENSHOT_DIR,
  accessibilityProblems,
  browserPrerequisites,
  openPage,
  porticoJson,
  startPortico,
} from "./support.mjs";

const PASSWORD = "portico-demo";
const { active, skip } = browserPrerequisites("action-links");

let tmpDir;
let demo;
let browser;

before(
  async () => {
    if (!active) return;
    const { chromium } = await import("playwright-core");
    tmpDir = await mkdtemp(path.join(os.tmpdir(), "portico-action-links-"));
    await mkdir(SCREENSHOT_DIR, { recursive: true });
    demo = await startPortico(tmpDir);
    browser = await chromium.launch({ executablePath: CHROMIUM_BIN, args: CHROMIUM_ARGS });
  },
  { timeout: 120_000 },
);

after(async () => {
  await browser?.close();
  await demo?.stop();
  if (tmpDir) await rm(tmpDir, { recursive: true, force: true });
});

/** `portico task-link create` against the running demo's database. */
function mint(task, policy) {
  return porticoJson([
    "task-link", "create",
    "--database-url", demo.databaseUrl,
    "--base-url", demo.fhirBase,
    "--task", task,
    "--policy", policy,
    "--expires", "2h",
  ]);
}

async function check(page, name) {
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, `action-link-${name}.png`), fullPage: true });
  assert.deepEqual(await accessibilityProblems(page), [], `accessibility problems on the ${name} page`);
}

test("click-through: the member approves the request from the link the demo printed", { skip, timeout: 60_000 }, async () => {
  const url = demo.output().stdout.match(/A to-do link\s+(\S+)/)?.[1];
  assert.ok(url?.includes("/act/"), `no to-do link in the banner:\n${demo.output().stdout}`);
  const { context, page } = await openPage(browser, "phone");
  try {
    await page.goto(url);
    await page.getByRole("heading", { name: "Approve a prior authorization request" }).waitFor();
    const facts = await page.locator("#action-facts").innerText();
    assert.match(facts, /MRI of the knee without contrast/);
    assert.match(facts, /Health plan/);
    assert.match(await page.locator("#action-summary").innerText(), /before it happens/);
    await check(page, "click-through");
    await page.getByRole("button", { name: "Approve" }).click();
    await page.locator("#action-done").waitFor();
    assert.match(await page.locator("#action-done").innerText(), /goes ahead/);
    await check(page, "done");
    // The link is spent.
    const again = await page.goto(url);
    assert.equal(again.status(), 410);
    assert.match(await page.locator("#action-closed").innerText(), /approved on/);
    await check(page, "used");
  } finally {
    await context.close();
  }
});

test("pin: wrong PINs are counted, the right one shows the request, the decision is kept", { skip, timeout: 60_000 }, async () => {
  const minted = await mint("demo-prior-auth-child-1", "pin");
  assert.match(minted.pin, /^\d{6}$/);
  const wrong = minted.pin === "000000" ? "111111" : "000000";
  const { context, page } = await openPage(browser, "desktop");
  try {
    await page.goto(minted.url);
    await page.getByRole("heading", { name: "Enter your PIN" }).waitFor();
    assert.doesNotMatch(await page.locator("main").innerText(), /MRI/, "nothing is shown before the PIN");
    await check(page, "pin");
    await page.getByLabel("PIN").fill(wrong);
    await page.getByRole("button", { name: "Continue" }).click();
    await page.locator("#action-error").waitFor();
    assert.match(await page.locator("#action-error").innerText(), /4 attempts left/);
    await page.getByLabel("PIN").fill(minted.pin);
    await page.getByRole("button", { name: "Continue" }).click();
    await page.getByRole("heading", { name: "Approve a prior authorization request" }).waitFor();
    assert.match(await page.locator("#action-facts").innerText(), /MRI of the knee/);
    await check(page, "pin-request");
    await page.getByRole("button", { name: "Decline" }).click();
    await page.locator("#action-done").waitFor();
    assert.match(await page.locator("#action-done").innerText(), /withdrawn/);
    await page.goto(minted.url);
    assert.match(await page.locator("#action-closed").innerText(), /declined on/);
  } finally {
    await context.close();
  }
  // A Task that has been decided gets no new link.
  await assert.rejects(mint("demo-prior-auth-child-1", "pin"), /only a Task that is requested/);
});

test("sign-in: a stranger is turned away; the parent signs in and approves for the child", { skip, timeout: 60_000 }, async () => {
  const minted = await mint("demo-prior-auth-child-2", "sign-in");
  assert.equal(minted.pin, undefined);
  const { context, page } = await openPage(browser, "phone");
  const signIn = async (username) => {
    await page.getByLabel("Username").fill(username);
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();
  };
  try {
    await page.goto(minted.url);
    await page.getByRole("heading", { name: "Sign in to continue" }).waitFor();
    await check(page, "sign-in");
    // The member is a patient here, but not this child's.
    await signIn("member");
    await page.getByRole("heading", { name: "This request is for someone else" }).waitFor();
    assert.doesNotMatch(await page.locator("main").innerText(), /MRI/);
    await page.getByRole("button", { name: /Sign out/ }).click();
    await page.getByRole("heading", { name: "Sign in to continue" }).waitFor();
    await signIn("parent");
    await page.getByRole("heading", { name: "Approve a prior authorization request" }).waitFor();
    assert.match(await page.locator("#action-facts").innerText(), /MRI of the knee/);
    await check(page, "sign-in-request");
    await page.getByRole("button", { name: "Approve" }).click();
    await page.locator("#action-done").waitFor();
    const again = await page.goto(minted.url);
    assert.equal(again.status(), 410);
  } finally {
    await context.close();
  }
});
