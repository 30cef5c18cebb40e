// Token exchange as the person sees it: beside the running demo, a helper service (a CDS Hooks
// service, say) is registered with `portico client add` and the demo app's token for the member
// (`portico token issue`) is exchanged at /auth/token (RFC 8693) for a narrower one for that
// service. In Chromium the member signs in to Connected apps, finds "Shared by … with …" under
// the app, and stops the sharing; the service's token dies and the app's keeps working.
//
// Run: node --test tests/browser/token-exchange.test.mjs (needs what smart-launch.test.mjs needs).

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
  waitForPath,
} from "./support.mjs";

const PASSWORD = "portico-demo";
const { active, skip } = browserPrerequisites("token-exchange");

let tmpDir;
let demo;
let browser;

before(
  async () => {
    if (!active) return;
    const { chromium } = await import("playwright-core");
    tmpDir = await mkdtemp(path.join(os.tmpdir(), "portico-token-exchange-"));
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

async function fhirStatus(token, query) {
  const r = await fetch(`${demo.fhirBase}/${query}`, { headers: { authorization: `Bearer ${token}` } });
  return r.status;
}

test("the member sees what an app shared with a service, and stops it", { skip, timeout: 60_000 }, async () => {
  const common = ["--database-url", demo.databaseUrl, "--base-url", demo.fhirBase];
  await porticoJson(["client", "add", "--name", "Growth chart CDS service", "--client-id", "growth-cds",
    "--confidential", "--scopes", "patient/Observation.rs", ...common]);
  const app = await porticoJson(["token", "issue", "--client", "portico-demo-app", "--username", "member",
    "--patient", demo.memberId, "--scopes", "launch/patient patient/Observation.rs patient/Condition.rs", ...common]);

  const origin = new URL(demo.fhirBase).origin;
  const exchanged = await fetch(`${origin}/auth/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
      client_id: "portico-demo-app",
      subject_token: app.access_token,
      subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
      audience: "growth-cds",
      scope: "patient/Observation.rs",
    }),
  });
  const child = await exchanged.json();
  assert.equal(exchanged.status, 200, JSON.stringify(child));
  assert.equal(child.issued_token_type, "urn:ietf:params:oauth:token-type:access_token");
  assert.equal(await fhirStatus(child.access_token, `Observation?patient=${demo.memberId}&_count=1`), 200);
  assert.equal(await fhirStatus(child.access_token, `Condition?patient=${demo.memberId}&_count=1`), 403);

  const { context, page, log } = await openPage(browser, "phone");
  try {
    await page.goto(`${origin}/account/signin`);
    await page.getByLabel("Username").fill("member");
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();
    await waitForPath(page, log, "/account/apps");
    const shared = page.getByText(/Shared by .+ with Growth chart CDS service/);
    await shared.waitFor();
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "token-exchange-connected-apps.png"), fullPage: true });
    assert.deepEqual(await accessibilityProblems(page), [], "accessibility problems on Connected apps");
    await page.getByRole("button", { name: /Stop sharing/ }).click();
    await waitForPath(page, log, "/account/apps");
    assert.equal(await page.getByRole("button", { name: /Stop sharing/ }).count(), 0);
  } finally {
    await context.close();
  }
  // The service's token is dead; the app's, its parent, still works.
  assert.equal(await fhirStatus(child.access_token, `Observation?patient=${demo.memberId}&_count=1`), 401);
  assert.equal(await fhirStatus(app.access_token, `Observation?patient=${demo.memberId}&_count=1`), 200);
});
