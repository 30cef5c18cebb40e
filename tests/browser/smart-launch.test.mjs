// End-to-end tests of Portico's SMART App Launch flows in a real browser: headless Chromium
// (driven by playwright-core) runs a tiny static app (app/*.html) that uses SMART's own
// JavaScript client, fhirclient.js, against `portico demo`. A person's steps are taken on
// Portico's sign-in, patient-picker and consent pages; the app then reads the patient in
// context with the token it got.
//
// Run (from the repository root):
//   npm ci --prefix tests/browser            # once; installs playwright-core and fhirclient
//   node --test tests/browser/*.test.mjs     # or: scripts/test --python-only
//
// Needs Debian's Chromium at /usr/bin/chromium (`apt-get install chromium`; Playwright's own
// browser downloads are not used) and the portico binary (`cargo build -p portico`).
// Environment:
//   PORTICO_BIN              the portico binary (default target/debug/portico)
//   PORTICO_CHROMIUM         the Chromium binary (default /usr/bin/chromium)
//   PORTICO_REQUIRE_BROWSER=1  fail instead of skipping when either is missing (CI sets it)
// Screenshots of the Portico pages at a desktop and a phone viewport are written to
// tests/browser/out/screenshots/ (ignored by git).

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import {
  CHROMIUM_ARGS,
  CHROMIUM_BIN,
  HERE,
  PORTICO_BIN,
  SCREENSHOT_DIR,
  accessibilityProblems,
  appOutcome,
  envFlag,
  openPage,
  porticoJson,
  startApp,
  startPortico,
  waitForPath,
} from "./support.mjs";

const CLIENT_ID = "browser-app";
const PASSWORD = "portico-demo";
const STANDALONE_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs";
const EHR_SCOPE = "launch openid fhirUser patient/*.rs";

// --- Skip rule ----------------------------------------------------------------------------------
const missing = [];
if (!existsSync(CHROMIUM_BIN)) missing.push(`Chromium not found at ${CHROMIUM_BIN} (apt-get install chromium)`);
if (!existsSync(PORTICO_BIN)) {
  missing.push(`Portico binary not found at ${PORTICO_BIN} (cargo build -p portico, or set PORTICO_BIN)`);
}
if (!existsSync(path.join(HERE, "node_modules", "playwright-core"))) {
  missing.push("tests/browser/node_modules is missing (npm ci --prefix tests/browser)");
}
const required = envFlag("PORTICO_REQUIRE_BROWSER");
const active = missing.length === 0;
const skip = active
  ? false
  : required
    ? "prerequisites missing: see the failing test"
    : `${missing.join("; ")}; set PORTICO_REQUIRE_BROWSER=1 to make this a failure`;
if (!active && required) {
  // A failing test next to the skipped ones, so that the run cannot pass.
  test("browser test prerequisites", () => {
    assert.fail(`${missing.join("; ")} (PORTICO_REQUIRE_BROWSER=1 turns the skip into a failure)`);
  });
}

// --- One server, one test app and one browser for the whole file ------------------------------
let tmpDir;
let portico;
let app;
let browser;

before(
  async () => {
    if (!active) return;
    const { chromium } = await import("playwright-core");
    tmpDir = await mkdtemp(path.join(os.tmpdir(), "portico-browser-"));
    await mkdir(SCREENSHOT_DIR, { recursive: true });
    app = await startApp();
    portico = await startPortico(tmpDir);
    await porticoJson([
      "client", "add",
      "--database-url", portico.databaseUrl,
      "--name", "Browser Test App",
      "--client-id", CLIENT_ID,
      "--redirect-uri", `${app.origin}/index.html`,
    ]);
    browser = await chromium.launch({ executablePath: CHROMIUM_BIN, args: CHROMIUM_ARGS });
  },
  { timeout: 120_000 },
);

after(async () => {
  await browser?.close();
  await portico?.stop();
  await app?.stop();
  if (tmpDir) await rm(tmpDir, { recursive: true, force: true });
});

// --- Steps a person takes -----------------------------------------------------------------------

function launchUrl({ launch, scope }) {
  const url = new URL("/launch.html", app.origin);
  url.searchParams.set("iss", portico.fhirBase);
  if (launch) url.searchParams.set("launch", launch);
  url.searchParams.set("scope", scope);
  return url.href;
}

/**
 * When `shots` names a viewport, saves a full-page PNG of a Portico page (before checking it,
 * so that a failing page is on file too); then checks the page's DOM.
 */
async function inspect(page, name, shots) {
  if (shots) await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${shots}-${name}.png`), fullPage: true });
  assert.deepEqual(await accessibilityProblems(page), [], `accessibility problems on the ${name} page at ${page.url()}`);
}

async function signIn({ page, log }, username, shots) {
  await waitForPath(page, log, "/auth/signin");
  await inspect(page, "signin", shots);
  // By label: this also proves the fields are labelled as a screen reader would read them.
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** On the picker, chooses the child listed last and returns its patient id. */
async function pickChild({ page, log }, shots) {
  await waitForPath(page, log, "/auth/patient");
  await inspect(page, "picker", shots);
  const buttons = page.locator('button[name="patient"]');
  const values = await buttons.evaluateAll((els) => els.map((b) => b.value));
  const children = values.filter((v) => portico.childIds.includes(v));
  assert.deepEqual([...children].sort(), [...portico.childIds].sort(), `the picker offers both children: ${values}`);
  assert.ok(values.length >= 3, `the parent can act for themself and two children: ${values}`);
  const choice = children[children.length - 1];
  assert.notEqual(choice, values[0], "the chosen child is not the first button");
  await buttons.nth(values.indexOf(choice)).click();
  return choice;
}

/**
 * On the consent page: checks the defaults, unticks the permissions in `untick` (by scope
 * value) and clicks Allow or Deny. Returns the label texts of the unticked boxes.
 */
async function consent({ page, log }, { untick = [], decision = "allow", shots } = {}) {
  await waitForPath(page, log, "/auth/consent");
  const scopes = page.locator('input[type="checkbox"][name="scope"]');
  const values = await scopes.evaluateAll((els) => els.map((e) => e.value));
  assert.ok(values.length > 0, "the consent page lists permissions");
  for (const box of await scopes.all()) assert.ok(await box.isChecked(), "every permission starts ticked");
  for (const box of await page.locator('input[name="share"]').all()) {
    assert.ok(!(await box.isChecked()), "sensitive categories start unticked");
  }
  await inspect(page, "consent", shots);
  const labels = {};
  for (const value of untick) {
    assert.ok(values.includes(value), `the consent page offers ${value}: ${values}`);
    const box = page.locator(`input[name="scope"][value="${value}"]`);
    labels[value] = await box.evaluate((el) => [...el.labels].map((l) => l.textContent.trim()).join(" "));
    await box.uncheck();
  }
  const label = decision === "allow" ? "Allow" : "Deny";
  await page.locator(`button[name="decision"][value="${decision}"]`, { hasText: label }).click();
  return labels;
}

/** What the app shows after the redirect back, also noted in the test's TAP output. */
async function appResult(t, { page, log }) {
  const outcome = await appOutcome(page, log);
  t.diagnostic(`app: ${outcome.error ? `error ${outcome.error}` : JSON.stringify(outcome.result)}`);
  return outcome;
}

function scopeList(scope) {
  return scope.split(/\s+/).filter(Boolean);
}

// --- The flows ----------------------------------------------------------------------------------

test("standalone launch: parent picks a child and withholds offline access", { skip, timeout: 60_000 }, async (t) => {
  const tab = await openPage(browser, "desktop");
  try {
    await tab.page.goto(launchUrl({ scope: STANDALONE_SCOPE }));
    await signIn(tab, "parent", "desktop");
    const child = await pickChild(tab, "desktop");
    const unticked = await consent(tab, { untick: ["offline_access"], shots: "desktop" });
    assert.match(unticked.offline_access, /^Keep access/, "the box is explained in plain language");
    const outcome = await appResult(t, tab);
    assert.equal(outcome.error, undefined, `the app failed: ${outcome.error}`);
    const { result } = outcome;
    assert.equal(result.resourceType, "Patient");
    assert.equal(result.patientId, child, "the app read the chosen child");
    assert.equal(result.tokenPatient, child, "the token's patient is the chosen child");
    const granted = scopeList(result.scope);
    assert.ok(!granted.includes("offline_access"), `offline_access was withheld: ${result.scope}`);
    assert.ok(granted.includes("patient/*.rs"), `patient/*.rs was granted: ${result.scope}`);
    assert.equal(result.hasRefreshToken, false, "no refresh token without offline_access");
    assert.equal(result.refresh, null, "nothing to refresh without a refresh token");
    // The signed-in person is the parent, not the child whose records are shared.
    assert.match(result.fhirUser || "", /^Patient\//, "the id_token names the parent as fhirUser");
    assert.notEqual(result.fhirUser, `Patient/${child}`);
  } finally {
    await tab.context.close();
  }
});

test("EHR launch: the launch context fixes the member as patient", { skip, timeout: 60_000 }, async (t) => {
  const { launch } = await porticoJson(["launch", "create", "--database-url", portico.databaseUrl, "--patient", portico.memberId]);
  const tab = await openPage(browser, "desktop");
  try {
    await tab.page.goto(launchUrl({ launch, scope: EHR_SCOPE }));
    await signIn(tab, "member");
    // Straight to consent: no picker.
    await waitForPath(tab.page, tab.log, "/auth/consent");
    assert.equal(await tab.page.locator('button[name="patient"]').count(), 0, "no patient picker");
    await consent(tab, { untick: ["identity"] });
    const outcome = await appResult(t, tab);
    assert.equal(outcome.error, undefined, `the app failed: ${outcome.error}`);
    const { result } = outcome;
    assert.equal(result.patientId, portico.memberId, "the app read the member's Patient");
    assert.equal(result.tokenPatient, portico.memberId, "the token's patient is the member");
    const granted = scopeList(result.scope);
    assert.ok(granted.includes("patient/*.rs"), `patient/*.rs was granted: ${result.scope}`);
    assert.ok(!granted.includes("openid") && !granted.includes("fhirUser"), `identity was withheld: ${result.scope}`);
    assert.equal(result.hasIdToken, false, "no id_token without identity");
  } finally {
    await tab.context.close();
  }
});

test("EHR launch: no picker even for someone who acts for several patients", { skip, timeout: 60_000 }, async (t) => {
  const child = portico.childIds[0];
  const { launch } = await porticoJson(["launch", "create", "--database-url", portico.databaseUrl, "--patient", child]);
  const tab = await openPage(browser, "desktop");
  try {
    await tab.page.goto(launchUrl({ launch, scope: EHR_SCOPE }));
    await signIn(tab, "parent");
    await waitForPath(tab.page, tab.log, "/auth/consent");
    await consent(tab);
    const outcome = await appResult(t, tab);
    assert.equal(outcome.error, undefined, `the app failed: ${outcome.error}`);
    assert.equal(outcome.result.patientId, child);
    assert.equal(outcome.result.tokenPatient, child);
  } finally {
    await tab.context.close();
  }
});

test("deny: the app gets access_denied", { skip, timeout: 60_000 }, async (t) => {
  const tab = await openPage(browser, "desktop");
  try {
    await tab.page.goto(launchUrl({ scope: STANDALONE_SCOPE }));
    await signIn(tab, "member");
    await consent(tab, { decision: "deny" });
    const outcome = await appResult(t, tab);
    assert.equal(outcome.result, undefined, "the app must not get a token");
    assert.match(outcome.error, /access_denied/, "fhirclient reports access_denied");
    assert.equal(new URL(outcome.url).origin, app.origin, "the person ends up back in the app");
  } finally {
    await tab.context.close();
  }
});

test("phone viewport: sign-in, picker and consent pages", { skip, timeout: 60_000 }, async (t) => {
  const tab = await openPage(browser, "phone");
  try {
    await tab.page.goto(launchUrl({ scope: STANDALONE_SCOPE }));
    await signIn(tab, "parent", "phone");
    const child = await pickChild(tab, "phone");
    await consent(tab, { shots: "phone" });
    const outcome = await appResult(t, tab);
    assert.equal(outcome.error, undefined, `the app failed: ${outcome.error}`);
    assert.equal(outcome.result.patientId, child);
    // Everything left ticked: offline access is granted, with a refresh token.
    assert.ok(scopeList(outcome.result.scope).includes("offline_access"), outcome.result.scope);
    assert.equal(outcome.result.hasRefreshToken, true);
    // fhirclient's refresh() with its default options (no refreshTokenWithClientId): a public
    // app's refresh token alone gets new tokens, and the new access token reads the patient.
    const { refresh } = outcome.result;
    assert.ok(refresh, "the app refreshed its token");
    assert.equal(refresh.ok, true, `client.refresh() failed: ${refresh.error}`);
    assert.equal(refresh.accessTokenChanged, true, "a new access token");
    assert.equal(refresh.refreshTokenChanged, true, "the refresh token rotated");
    assert.equal(refresh.patientId, child, "the new access token reads the chosen child");
  } finally {
    await tab.context.close();
  }
});

test("Connected apps: the member revokes the app and its next call fails", { skip, timeout: 60_000 }, async (t) => {
  const tab = await openPage(browser, "desktop");
  try {
    // Connect the app (everything offered left ticked, so it also holds a refresh token).
    await tab.page.goto(launchUrl({ scope: STANDALONE_SCOPE }));
    await signIn(tab, "member");
    await consent(tab);
    const first = await appResult(t, tab);
    assert.equal(first.error, undefined, `the app failed: ${first.error}`);
    assert.equal(first.result.patientId, portico.memberId);

    // The same browser is signed in to Portico: the Connected apps page lists the app.
    const origin = new URL(portico.fhirBase).origin;
    await tab.page.goto(`${origin}/account/apps`);
    await waitForPath(tab.page, tab.log, "/account/apps");
    await inspect(tab.page, "connected-apps", "desktop");
    // The newest connection is listed first (an earlier test connected the member too).
    const live = tab.page.locator("section.grant", { hasText: "Browser Test App" }).filter({ hasText: "Connected" });
    assert.ok((await live.count()) >= 1, "the test app is listed as connected");
    const card = live.first();
    assert.match(await card.textContent(), /Keep access when you are not using the app/, "the newest grant, with offline access");
    assert.match(await card.textContent(), /Not shared:.*Behavioral health/s, "withheld categories are listed");
    await card.getByRole("button", { name: "Revoke Browser Test App" }).click();
    await tab.page.locator('[role="status"]').waitFor();
    assert.match(await tab.page.locator('[role="status"]').textContent(), /can no longer reach your records/);

    // Back in the app: its stored token no longer works.
    await tab.page.goto(`${app.origin}/index.html`);
    const after = await appResult(t, tab);
    assert.equal(after.result, undefined, "the app must not read anything after the revocation");
    assert.match(after.error, /401|Unauthorized|invalid_token|invalid_grant/i, `the app's call was refused: ${after.error}`);
  } finally {
    await tab.context.close();
  }
});
