// Link end to end in a real browser: `portico demo` serves a clinical portal, a health plan,
// Link and a sample aggregator app. A person uses the aggregator: searches the directory,
// connects the clinic (signing in and consenting there, leaving behavioral-health records
// unshared), then the health plan, fetches both as one job; the aggregator receives Link's
// signed webhook and verifies it; every record returned validates as R4 and the withheld
// category is absent.
//
// Run: node --test tests/browser/link.test.mjs (needs what smart-launch.test.mjs needs).

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";

import {
  CHROMIUM_ARGS,
  CHROMIUM_BIN,
  PORTICO_BIN,
  SCREENSHOT_DIR,
  accessibilityProblems,
  openPage,
  startPortico,
  waitForPath,
  browserPrerequisites,
} from "./support.mjs";

const PASSWORD = "portico-demo";
// The member's behavioral-health and substance-use conditions (the generator's ICD-10-CM codes).
const WITHHELD_CODES = ["F32.9", "F41.1", "F10.20"];
const SENSITIVE_LABELS = ["PSY", "ETH"];

const { active, skip } = browserPrerequisites("Link");

let tmpDir;
let demo;
let browser;

before(
  async () => {
    if (!active) return;
    const { chromium } = await import("playwright-core");
    tmpDir = await mkdtemp(path.join(os.tmpdir(), "portico-link-browser-"));
    await mkdir(SCREENSHOT_DIR, { recursive: true });
    demo = await startPortico(tmpDir, { link: true });
    browser = await chromium.launch({ executablePath: CHROMIUM_BIN, args: CHROMIUM_ARGS });
  },
  { timeout: 180_000 },
);

after(async () => {
  await browser?.close();
  await demo?.stop();
  if (tmpDir) await rm(tmpDir, { recursive: true, force: true });
});

async function shot(page, name) {
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, `link-${name}.png`), fullPage: true });
}

/** From the aggregator's home page: find a portal, connect it, sign in and consent there. */
async function connectPortal(tab, { category, query, portalName, portalOrigin }) {
  const { page, log } = tab;
  await page.getByLabel("Looking for").selectOption(category);
  await page.getByLabel("Name or zip code").fill(query);
  await page.getByRole("button", { name: "Search" }).click();
  await waitForPath(page, log, "/search");
  const row = page.locator("tr.portal", { hasText: portalName });
  assert.equal(await row.count(), 1, `the directory lists ${portalName}`);
  await shot(page, `search-${category}`);
  assert.deepEqual(await accessibilityProblems(page), [], "the search results page");
  await row.getByRole("link", { name: `Connect ${portalName}` }).click();
  // Link sends the browser to the portal's own sign-in page.
  await page.waitForURL((u) => u.origin === portalOrigin && u.pathname === "/auth/signin");
  await page.getByLabel("Username").fill("member");
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await waitForPath(page, log, "/auth/consent");
  for (const box of await page.locator('input[name="share"]').all()) {
    assert.equal(await box.isChecked(), false, "sensitive categories start unshared");
  }
  await page.locator('button[name="decision"][value="allow"]').click();
  // Through Link's callback and back to the aggregator.
  await page.waitForURL((u) => u.origin === new URL(demo.aggregator).origin && u.pathname === "/");
  assert.match(await page.locator('[role="status"]').textContent(), new RegExp(`Connected ${portalName}`));
}

test("an aggregator on Link: search, connect two portals, fetch, webhooks", { skip, timeout: 180_000 }, async () => {
  const tab = await openPage(browser, "desktop");
  const { page, log } = tab;
  try {
    await page.goto(`${demo.aggregator}/`);
    assert.deepEqual(await accessibilityProblems(page), [], "the aggregator's home page");
    await connectPortal(tab, {
      category: "clinical",
      query: "springfield",
      portalName: "Springfield Community Clinic",
      portalOrigin: new URL(demo.fhirBase).origin,
    });
    await connectPortal(tab, {
      category: "payer",
      query: "02110",
      portalName: "Portico Health Plan",
      portalOrigin: new URL(demo.planBase).origin,
    });
    assert.equal(await page.locator("tr.connection").count(), 2, "both portals are connected");
    await shot(page, "connected");

    await page.getByRole("button", { name: "Fetch my records from all portals" }).click();
    await page.waitForURL((u) => u.pathname.startsWith("/jobs/"));
    const jobId = new URL(page.url()).pathname.split("/")[2];
    // The page refreshes itself until the job is finished.
    await page.locator("#job-status", { hasText: /^(done|partial|failed)$/ }).waitFor({ timeout: 60_000 });
    assert.equal(await page.locator("#job-status").textContent(), "done", (await page.locator("main").innerText()).slice(0, 2000));
    const sources = await page.locator("section.source h2").allTextContents();
    assert.deepEqual(sources.sort(), ["From Portico Health Plan", "From Springfield Community Clinic"], "records side by side by source");
    await shot(page, "records");
    assert.deepEqual(await accessibilityProblems(page), [], "the records page");

    // The fetched Bundle: every resource is valid R4 (checked by `portico validate`), each says
    // where it came from, and nothing of the withheld category is there.
    const response = await page.request.get(`${demo.aggregator}/jobs/${jobId}/result.json`);
    assert.equal(response.status(), 200);
    const bundle = await response.json();
    const everything = bundle.entry.map((e) => e.resource);
    const resources = everything.filter((r) => r.resourceType !== "Provenance");
    const provenances = everything.filter((r) => r.resourceType === "Provenance");
    assert.equal(provenances.length, 2, "one Provenance per portal");
    assert.ok(resources.length > 50, `a whole record from two portals (${resources.length} resources)`);
    const bases = new Set(resources.map((r) => r.meta?.source));
    assert.deepEqual([...bases].sort(), [demo.fhirBase, demo.planBase].sort());
    const text = JSON.stringify(bundle);
    for (const code of WITHHELD_CODES) assert.ok(!text.includes(`"${code}"`), `withheld condition ${code} is absent`);
    for (const r of resources) {
      const labels = (r.meta?.security || []).map((s) => s.code);
      assert.ok(!labels.some((l) => SENSITIVE_LABELS.includes(l)), `${r.resourceType}/${r.id} carries a withheld label`);
    }
    assert.ok(resources.some((r) => r.resourceType === "ExplanationOfBenefit"), "claims from the health plan");
    assert.ok(resources.some((r) => r.resourceType === "Observation"), "results from the clinic");
    const file = path.join(tmpDir, "fetched.json");
    await writeFile(file, JSON.stringify(bundle));
    const { stdout } = await promisify(execFile)(PORTICO_BIN, ["validate", file], { timeout: 60_000 });
    const summary = JSON.parse(stdout);
    assert.equal(summary.invalid, 0, stdout);
    assert.equal(summary.resources, everything.length);

    // Link's webhook reached the aggregator and its signature verified.
    let events = [];
    for (let i = 0; i < 100; i++) {
      events = await (await page.request.get(`${demo.aggregator}/events.json`)).json();
      if (events.some((e) => e.type === "fetch.completed" && e.data.transactionId === jobId)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const completed = events.find((e) => e.type === "fetch.completed" && e.data.transactionId === jobId);
    assert.ok(completed, `fetch.completed arrived: ${JSON.stringify(events)}`);
    assert.equal(completed.verified, true, "the webhook's signature verified");
    assert.ok(events.every((e) => e.verified), "every webhook verified");
    await page.goto(`${demo.aggregator}/`);
    assert.ok((await page.locator("tr.event", { hasText: "fetch.completed" }).textContent()).includes("verified"));
  } finally {
    if (log.length) console.log(log.join("\n"));
    await tab.context.close();
  }
});
