// Payer-to-payer in a real browser (Da Vinci PDex / HRex): `portico demo` serves the member's
// old health plan and Link. A new health plan — its own Portico database — registers a backend
// client at the old plan and asks `$member-match` with the member's demographics and old
// coverage; the member connects the old plan through the new plan's Link app in Chromium,
// signing in there and leaving behavioral health unshared; `portico link import` loads the
// history into the new plan with Provenance naming the old plan, and running it again writes
// nothing. The new plan's server then shows the history and no behavioral-health record.
//
// Run: node --test tests/browser/payer-to-payer.test.mjs (needs what smart-launch.test.mjs needs).

import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { createSign, generateKeyPairSync, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";

import {
  CHROMIUM_ARGS,
  CHROMIUM_BIN,
  PORTICO_BIN,
  SCREENSHOT_DIR,
  accessibilityProblems,
  freePort,
  openPage,
  porticoJson,
  startPortico,
  waitForPath,
  browserPrerequisites,
} from "./support.mjs";

const PASSWORD = "portico-demo";
// The member's behavioral-health and substance-use conditions (the generator's ICD-10-CM codes).
const WITHHELD_CODES = ["F32.9", "F41.1", "F10.20"];
const SENSITIVE_LABELS = ["PSY", "ETH"];
const REGULAR_POLICY = "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition-hrex-consent.html#regular";

const { active, skip } = browserPrerequisites("payer-to-payer");

let tmpDir;
let demo;
let browser;
let welcome;
let newPlan;

before(
  async () => {
    if (!active) return;
    const { chromium } = await import("playwright-core");
    tmpDir = await mkdtemp(path.join(os.tmpdir(), "portico-p2p-browser-"));
    await mkdir(SCREENSHOT_DIR, { recursive: true });
    demo = await startPortico(tmpDir, { link: true });
    browser = await chromium.launch({ executablePath: CHROMIUM_BIN, args: CHROMIUM_ARGS });
    welcome = await startWelcomePage();
  },
  { timeout: 180_000 },
);

after(async () => {
  await browser?.close();
  await newPlan?.stop();
  await demo?.stop();
  welcome?.server.close();
  if (tmpDir) await rm(tmpDir, { recursive: true, force: true });
});

/** The new plan's own page the member lands on after connecting (Link's client URL). */
async function startWelcomePage() {
  const port = await freePort();
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end('<!doctype html><html lang="en"><title>Welcome</title><main><h1>Welcome to New Health Plan</h1></main></html>');
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${port}/welcome` };
}

/** `portico serve` on the new plan's database, ready when /readyz answers. */
async function serveNewPlan(databaseUrl) {
  const port = await freePort();
  const child = spawn(PORTICO_BIN, ["serve", "--database-url", databaseUrl, "--listen", `127.0.0.1:${port}`, "--dev-open-access"], {
    env: { ...process.env, PORTICO_LOG: "warn" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d) => (stderr += d));
  const origin = `http://127.0.0.1:${port}`;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${origin}/readyz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null || i > 600) throw new Error(`portico serve did not start: ${stderr}`);
    await new Promise((r) => setImmediate(r));
  }
  return {
    base: `${origin}/fhir`,
    async stop() {
      child.kill("SIGTERM");
      await exited;
    },
  };
}

const base64url = (data) => Buffer.from(data).toString("base64url");

/** A backend client's key pair, its JWK Set, and a signed client assertion for a token URL. */
function backendKeys() {
  const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: "jwk" }), kid: "new-plan-1", alg: "RS384", use: "sig" };
  const assertion = (clientId, aud) => {
    const header = base64url(JSON.stringify({ alg: "RS384", typ: "JWT", kid: jwk.kid }));
    const now = Math.floor(Date.now() / 1000);
    const claims = base64url(JSON.stringify({ iss: clientId, sub: clientId, aud, exp: now + 240, jti: randomUUID() }));
    const signature = createSign("RSA-SHA384").update(`${header}.${claims}`).sign(privateKey);
    return `${header}.${claims}.${base64url(signature)}`;
  };
  return { jwks: { keys: [jwk] }, assertion };
}

async function json(response, what) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${what}: not JSON (${response.status}): ${text.slice(0, 500)}`);
  }
}

test("payer-to-payer: member-match, the member connects the old plan, the history moves", { skip, timeout: 240_000 }, async () => {
  const planDb = path.join(tmpDir, "demo-plan.db");
  const linkDb = path.join(tmpDir, "demo-link.db");
  const linkKeys = path.join(tmpDir, "demo-link.keys");
  const newPlanDb = path.join(tmpDir, "new-plan.db");

  // 1. The new plan's backend client at the old plan (private_key_jwt, system scopes).
  const keys = backendKeys();
  const jwksFile = path.join(tmpDir, "new-plan-jwks.json");
  await writeFile(jwksFile, JSON.stringify(keys.jwks));
  const scopes = "system/Patient.rs system/Coverage.rs";
  await porticoJson(["client", "add", "--database-url", planDb, "--name", "New Health Plan", "--client-id", "new-plan", "--jwks", jwksFile, "--scopes", scopes]);
  const smart = await json(await fetch(`${demo.planBase}/.well-known/smart-configuration`), "SMART configuration");
  const tokenResponse = await fetch(smart.token_endpoint, {
    method: "POST",
    body: new URLSearchParams({
      grant_type: "client_credentials",
      scope: scopes,
      client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
      client_assertion: keys.assertion("new-plan", smart.token_endpoint),
    }),
  });
  const token = await json(tokenResponse, "the token endpoint");
  assert.equal(tokenResponse.status, 200, JSON.stringify(token));
  const asBackend = { authorization: `Bearer ${token.access_token}` };

  // 2. What the member tells the new plan at enrollment: who they are and their old card.
  const oldPatient = await json(await fetch(`${demo.planBase}/Patient/${demo.memberId}`, { headers: asBackend }), "the member");
  const coverages = await json(await fetch(`${demo.planBase}/Coverage?beneficiary=Patient/${demo.memberId}`, { headers: asBackend }), "coverage");
  const oldCoverage = coverages.entry[0].resource;
  assert.ok(oldCoverage.subscriberId, "the old card has a subscriber id");
  const demographics = { name: oldPatient.name, birthDate: oldPatient.birthDate, gender: oldPatient.gender };

  // 3. $member-match at the old plan.
  const matchBody = (subscriberId) => ({
    resourceType: "Parameters",
    parameter: [
      { name: "MemberPatient", resource: { resourceType: "Patient", ...demographics } },
      { name: "CoverageToMatch", resource: { resourceType: "Coverage", status: "active", subscriberId, beneficiary: { reference: "Patient/1" }, payor: [{ display: "Portico Health Plan" }] } },
      { name: "CoverageToLink", resource: { resourceType: "Coverage", status: "active", subscriberId: "NEW-0001", beneficiary: { reference: "Patient/1" }, payor: [{ display: "New Health Plan" }] } },
      { name: "Consent", resource: { resourceType: "Consent", status: "active", scope: { coding: [{ system: "http://terminology.hl7.org/CodeSystem/consentscope", code: "patient-privacy" }] }, category: [{ coding: [{ system: "http://loinc.org", code: "64292-6" }] }], patient: { reference: "Patient/1" }, policy: [{ uri: REGULAR_POLICY }] } },
    ],
  });
  const memberMatch = (body) =>
    fetch(`${demo.planBase}/Patient/$member-match`, {
      method: "POST",
      headers: { ...asBackend, "content-type": "application/fhir+json" },
      body: JSON.stringify(body),
    });
  const matched = await memberMatch(matchBody(oldCoverage.subscriberId));
  const answer = await json(matched, "$member-match");
  assert.equal(matched.status, 200, JSON.stringify(answer));
  assert.equal(answer.parameter[0].name, "MemberIdentifier");
  assert.equal(answer.parameter[0].valueIdentifier.type.coding[0].code, "MB");
  const unmatched = await memberMatch(matchBody("NOT-A-MEMBER"));
  assert.equal(unmatched.status, 422);
  assert.equal((await unmatched.json()).resourceType, "OperationOutcome");

  // 4. The new plan enrolls the member in its own Portico.
  const enrolled = path.join(tmpDir, "new-plan-member.ndjson");
  await writeFile(
    enrolled,
    JSON.stringify({
      resourceType: "Patient",
      id: "new-member",
      ...demographics,
      identifier: [{ system: "https://new-plan.example/member", value: "NEW-0001", type: { coding: [{ system: "http://terminology.hl7.org/CodeSystem/v2-0203", code: "MB" }] } }, answer.parameter[0].valueIdentifier],
    }) + "\n",
  );
  await promisify(execFile)(PORTICO_BIN, ["import", "--database-url", newPlanDb, "--quiet", enrolled], { timeout: 60_000 });

  // 5. The new plan's app at Link, landing on the new plan's welcome page.
  const app = await porticoJson(["link", "app", "add", "--database-url", linkDb, "--key-file", linkKeys, "--name", "New Health Plan", "--client-url", welcome.url]);
  const asApp = { authorization: `Bearer ${app.secretKey}`, "content-type": "application/json" };
  const payers = await json(await fetch(`${demo.linkBase}/link/v1/directory/payer`, { headers: asApp }), "the directory");
  const oldPlan = payers.find((p) => p.fhirBase === demo.planBase);
  assert.ok(oldPlan, "the old plan is in Link's directory");

  // 6. The member connects the old plan in Chromium: signs in there, leaves behavioral health unshared.
  const tab = await openPage(browser, "desktop");
  const { page, log } = tab;
  let code;
  try {
    const connect = new URL(oldPlan.connectUrl);
    connect.search = new URLSearchParams({ app: app.appId, clientURL: welcome.url, state: "p2p-1", person: "member-1" }).toString();
    await page.goto(connect.toString());
    await page.waitForURL((u) => u.origin === new URL(demo.planBase).origin && u.pathname === "/auth/signin");
    await page.getByLabel("Username").fill("member");
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();
    await waitForPath(page, log, "/auth/consent");
    assert.deepEqual(await accessibilityProblems(page), [], "the old plan's consent page");
    const sensitive = await page.locator('input[name="share"]').all();
    assert.ok(sensitive.length > 0, "the consent page offers sensitive categories");
    for (const box of sensitive) assert.equal(await box.isChecked(), false, "sensitive categories start unshared");
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "p2p-consent.png"), fullPage: true });
    await page.locator('button[name="decision"][value="allow"]').click();
    await page.waitForURL((u) => u.href.startsWith(welcome.url));
    const landed = new URL(page.url());
    assert.equal(landed.searchParams.get("state"), "p2p-1");
    code = landed.searchParams.get("code");
    assert.ok(code, `a one-time code for the new plan: ${page.url()}`);
  } finally {
    if (log.length) console.log(log.join("\n"));
    await page.context().close();
  }
  const redeemed = await fetch(`${demo.linkBase}/link/v1/token`, { method: "POST", headers: asApp, body: JSON.stringify({ code }) });
  const connection = await json(redeemed, "redeeming the code");
  assert.equal(redeemed.status, 200, JSON.stringify(connection));
  assert.equal(connection.endpointId, oldPlan.id);

  // 7. The import, twice.
  const importArgs = ["link", "import", "--connection", connection.connectionId, "--patient", "new-member", "--database-url", newPlanDb, "--link-database-url", linkDb, "--link-key-file", linkKeys];
  const first = await porticoJson(importArgs);
  assert.ok(first.written > 20, JSON.stringify(first));
  assert.ok(first.byType.ExplanationOfBenefit > 0, "claims history");
  assert.equal(first.byType.Provenance, 1);
  const second = await porticoJson(importArgs);
  assert.equal(second.written, 0, "re-running writes nothing");
  assert.equal(second.unchanged, first.written);

  // 8. The new plan's server: the history under the member's Patient, Provenance, nothing withheld.
  newPlan = await serveNewPlan(newPlanDb);
  const everything = await json(await fetch(`${newPlan.base}/Patient/new-member/$everything?_count=1000`), "$everything");
  const resources = everything.entry.map((e) => e.resource);
  assert.ok(resources.some((r) => r.resourceType === "ExplanationOfBenefit"), "the claims history is there");
  const text = JSON.stringify(everything);
  for (const codeText of WITHHELD_CODES) assert.ok(!text.includes(`"${codeText}"`), `withheld condition ${codeText} is absent`);
  for (const r of resources) {
    const labels = (r.meta?.security || []).map((s) => s.code);
    assert.ok(!labels.some((l) => SENSITIVE_LABELS.includes(l)), `${r.resourceType}/${r.id} carries a withheld label`);
  }
  const provenance = await json(await fetch(`${newPlan.base}/Provenance?target=Patient/new-member`), "Provenance");
  assert.equal(provenance.entry.length, 1);
  const p = provenance.entry[0].resource;
  assert.equal(p.agent[0].who.display, "Portico Health Plan");
  assert.equal(p.entity[0].what.identifier.value, demo.planBase);
  assert.equal(p.target.length, first.written, "every imported record and the member");
});
