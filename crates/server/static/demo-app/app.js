// A minimal SMART App Launch 2 standalone client: discovery, PKCE (S256), state, the code
// exchange, then FHIR reads with the access token. No libraries, so a newcomer can read it.
"use strict";

const CLIENT_ID = "portico-demo-app";
const FHIR_BASE = location.origin + "/fhir";
const REDIRECT_URI = location.origin + "/demo-app/";
const SCOPE = "launch/patient openid fhirUser offline_access patient/Patient.rs patient/Condition.rs patient/Observation.rs";

function b64url(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
function randomString(n) { const a = new Uint8Array(n); crypto.getRandomValues(a); return b64url(a); }
async function s256(text) { return b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text))); }
function show(id) { for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== id; }
function fail(message) { document.getElementById("error-text").textContent = message; show("error"); }
async function discover() {
  const r = await fetch(FHIR_BASE + "/.well-known/smart-configuration");
  if (!r.ok) throw new Error("discovery failed: HTTP " + r.status);
  return r.json();
}

async function connect() {
  const config = await discover();
  const verifier = randomString(32);
  const state = randomString(16);
  sessionStorage.setItem("smart", JSON.stringify({ verifier, state, token_endpoint: config.token_endpoint }));
  const params = new URLSearchParams({
    response_type: "code", client_id: CLIENT_ID, redirect_uri: REDIRECT_URI, scope: SCOPE, state,
    aud: FHIR_BASE, code_challenge: await s256(verifier), code_challenge_method: "S256",
  });
  location.assign(config.authorization_endpoint + "?" + params);
}

async function fhir(token, path) {
  const r = await fetch(FHIR_BASE + "/" + path, { headers: { Authorization: "Bearer " + token, Accept: "application/fhir+json" } });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function text(concept) {
  if (!concept) return "";
  return concept.text || (concept.coding && concept.coding[0] && (concept.coding[0].display || concept.coding[0].code)) || "";
}
function item(listId, words) {
  const li = document.createElement("li");
  li.textContent = words;
  document.getElementById(listId).appendChild(li);
}

async function finish(query) {
  const saved = JSON.parse(sessionStorage.getItem("smart") || "null");
  sessionStorage.removeItem("smart");
  if (query.get("error")) return fail((query.get("error_description") || query.get("error")) + ".");
  if (!saved || query.get("state") !== saved.state) return fail("The answer did not match this app's request (state).");
  show("working");
  history.replaceState(null, "", REDIRECT_URI);
  const r = await fetch(saved.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "authorization_code", code: query.get("code"), redirect_uri: REDIRECT_URI, client_id: CLIENT_ID, code_verifier: saved.verifier }),
  });
  const token = await r.json();
  if (!r.ok) return fail("Token request failed: " + (token.error_description || token.error));
  document.getElementById("granted").textContent = token.scope;
  const patient = await fhir(token.access_token, "Patient/" + token.patient);
  const name = patient.name && patient.name[0];
  document.getElementById("patient-name").textContent = name ? [].concat(name.given || [], name.family || []).join(" ") : "Patient " + patient.id;
  document.getElementById("patient-details").textContent = [patient.gender, patient.birthDate && "born " + patient.birthDate].filter(Boolean).join(", ");
  try {
    const conditions = await fhir(token.access_token, "Condition?patient=" + token.patient + "&_count=20");
    for (const e of conditions.entry || []) item("conditions", text(e.resource.code) + (e.resource.onsetDateTime ? " (since " + e.resource.onsetDateTime.slice(0, 10) + ")" : ""));
    if (!(conditions.entry || []).length) item("conditions", "None shared.");
  } catch (e) { item("conditions", "Not shared with this app."); }
  try {
    const labs = await fhir(token.access_token, "Observation?patient=" + token.patient + "&category=laboratory&_sort=-date&_count=10");
    for (const e of labs.entry || []) {
      const o = e.resource, q = o.valueQuantity;
      item("labs", text(o.code) + ": " + (q ? q.value + " " + (q.unit || "") : text(o.valueCodeableConcept)) + (o.effectiveDateTime ? " on " + o.effectiveDateTime.slice(0, 10) : ""));
    }
    if (!(labs.entry || []).length) item("labs", "None shared.");
  } catch (e) { item("labs", "Not shared with this app."); }
  show("summary");
}

const query = new URLSearchParams(location.search);
document.getElementById("connect").addEventListener("click", () => connect().catch((e) => fail(e.message)));
if (query.has("code") || query.has("error")) finish(query).catch((e) => fail(e.message));
