// Helpers for smart-launch.test.mjs: the Portico demo server, the static test app, Chromium
// pages and the DOM accessibility checks. Kept out of the test file so that it reads as the
// flows a person goes through.

import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, "..", "..");
export const SCREENSHOT_DIR = path.join(HERE, "out", "screenshots");

export const PORTICO_BIN = process.env.PORTICO_BIN || path.join(REPO_ROOT, "target", "debug", "portico");
export const CHROMIUM_BIN = process.env.PORTICO_CHROMIUM || "/usr/bin/chromium";

// Without the background-networking switches Chromium keeps trying to reach Google's
// services, and on a closed network its connections end up refused.
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export const VIEWPORTS = {
  desktop: { viewport: { width: 1280, height: 800 } },
  phone: { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true },
};

export function envFlag(name) {
  return ["1", "true", "yes"].includes((process.env[name] || "").trim().toLowerCase());
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// The server and CLI get explicit flags for everything; drop PORTICO_* settings from the
// caller's environment (a PORTICO_BASE_URL, say) so that none of them leaks in.
function childEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("PORTICO_")) env[k] = v;
  }
  env.PORTICO_LOG = process.env.PORTICO_LOG || "warn";
  return env;
}

const EXIT_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"];

/**
 * `portico demo` on a fresh SQLite file. Resolves once the banner's last line (Ctrl-C) is
 * printed, with the FHIR base URL and the demo people parsed from the banner.
 */
export async function startPortico(dir, { link = false } = {}) {
  const port = await freePort();
  const databaseUrl = path.join(dir, "demo.db");
  const args = ["demo", "--patients", "6", "--listen", `127.0.0.1:${port}`, "--database-url", databaseUrl];
  if (link) {
    // Every listener on a port of its own, free now (the defaults are the clinic's + 1, 10, 11).
    for (const flag of ["--plan-listen", "--link-listen", "--aggregator-listen"]) {
      args.push(flag, `127.0.0.1:${await freePort()}`);
    }
  } else {
    args.push("--no-link");
  }
  const child = spawn(PORTICO_BIN, args, { env: childEnv(), stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d) => (stderr += d));
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  // If this process ends without the after() hook (a crash, or a signal), the server must not
  // outlive it.
  const killOnExit = () => child.kill("SIGKILL");
  const killOnSignal = (signal) => {
    killOnExit();
    process.exit(128 + os.constants.signals[signal]);
  };
  process.once("exit", killOnExit);
  for (const signal of EXIT_SIGNALS) process.once(signal, killOnSignal);

  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error("portico demo did not finish starting within 90 s")), 90_000);
    const onData = () => {
      if (stdout.includes("Ctrl-C")) {
        cleanup();
        resolve();
      }
    };
    const fail = (err) => {
      cleanup();
      child.kill("SIGKILL");
      err.message += `\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`;
      reject(err);
    };
    const onExit = ({ code, signal }) => fail(new Error(`portico demo exited early (code ${code}, signal ${signal})`));
    function cleanup() {
      clearTimeout(timer);
      child.stdout.off("data", onData);
    }
    child.stdout.on("data", onData);
    exited.then((how) => {
      if (!stdout.includes("Ctrl-C")) onExit(how);
    });
    child.once("error", fail);
  });

  const grab = (re, what) => {
    const m = stdout.match(re);
    if (!m) throw new Error(`cannot find ${what} in the output of portico demo:\n${stdout}`);
    return m[1];
  };
  const fhirBase = grab(/FHIR base URL\s+(\S+)/, "the FHIR base URL");
  const memberId = grab(/the member is Patient\/([A-Za-z0-9.-]+?)\.?\s*$/m, "the member's patient id");
  // "parent     a parent who also acts for two children (ID1, ID2)"
  const childIds = grab(/^\s*parent\s.*\(([^)]*)\)/m, "the parent's children").split(/,\s*/);

  const linkUrls = link
    ? {
        aggregator: grab(/Sample aggregator app\s+(\S+?)\/?\s*$/m, "the sample aggregator's URL"),
        linkBase: grab(/Link API\s+(\S+?)\/link\/v1\//, "Link's URL"),
        planBase: grab(/Health plan portal\s+(\S+)/, "the health plan's FHIR base"),
      }
    : {};
  return {
    port,
    databaseUrl,
    fhirBase,
    memberId,
    childIds,
    ...linkUrls,
    output: () => ({ stdout, stderr }),
    async stop() {
      process.off("exit", killOnExit);
      for (const signal of EXIT_SIGNALS) process.off(signal, killOnSignal);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Runs a `portico` CLI command and parses the JSON it prints. */
export async function porticoJson(args) {
  try {
    const { stdout } = await execFileAsync(PORTICO_BIN, args, { env: childEnv(), timeout: 60_000 });
    return JSON.parse(stdout);
  } catch (e) {
    throw new Error(`portico ${args.join(" ")} failed: ${e.message}\n${e.stdout || ""}${e.stderr || ""}`);
  }
}

/** The static test app (app/*.html plus fhirclient's browser build) on 127.0.0.1. */
export async function startApp() {
  const files = {
    "/launch.html": [path.join(HERE, "app", "launch.html"), "text/html; charset=utf-8"],
    "/index.html": [path.join(HERE, "app", "index.html"), "text/html; charset=utf-8"],
    "/fhir-client.js": [
      path.join(HERE, "node_modules", "fhirclient", "build", "fhir-client.js"),
      "text/javascript; charset=utf-8",
    ],
  };
  const server = http.createServer(async (req, res) => {
    const file = files[new URL(req.url, "http://app").pathname];
    if (req.method !== "GET" || !file) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    try {
      const body = await readFile(file[0]);
      res.writeHead(200, { "content-type": file[1], "cache-control": "no-store" }).end(body);
    } catch (e) {
      res.writeHead(500, { "content-type": "text/plain" }).end(String(e));
    }
  });
  const port = await freePort();
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  return {
    origin: `http://127.0.0.1:${port}`,
    stop: () => new Promise((resolve) => server.close(resolve)),
  };
}

/**
 * A fresh browser context and page with the given viewport. The page's console messages and
 * uncaught errors are kept for failure messages.
 */
export async function openPage(browser, viewportName) {
  const context = await browser.newContext(VIEWPORTS[viewportName]);
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  const log = [];
  page.on("console", (m) => log.push(`console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => log.push(`page error: ${e.message}`));
  return { context, page, log };
}

async function describePage(page, log) {
  let text = "";
  try {
    text = (await page.locator("body").innerText({ timeout: 2_000 })).slice(0, 1_500);
  } catch {
    // the page may be mid-navigation; the URL is still useful
  }
  return `now at ${page.url()}\n--- page text ---\n${text}\n--- browser log ---\n${log.join("\n")}`;
}

/** Waits for a Portico page by its path, failing with what the browser shows instead. */
export async function waitForPath(page, log, pathname) {
  try {
    await page.waitForURL((u) => u.pathname === pathname);
  } catch (e) {
    throw new Error(`expected the page ${pathname}: ${e.message.split("\n")[0]}\n${await describePage(page, log)}`);
  }
}

/** The test app's outcome after the redirect back: `{ result }` or `{ error }`. */
export async function appOutcome(page, log) {
  try {
    await page.locator("#result:not([hidden]), #error:not([hidden])").first().waitFor();
  } catch (e) {
    throw new Error(`the app showed no result: ${e.message.split("\n")[0]}\n${await describePage(page, log)}`);
  }
  const error = await page.locator("#error:not([hidden])").count();
  if (error) return { error: await page.locator("#error").textContent(), url: page.url() };
  return { result: JSON.parse(await page.locator("#result").textContent()), url: page.url() };
}

/**
 * Basic accessibility and small-screen checks from the DOM; returns a list of problems.
 * The page must be served as HTML. Every visible form control needs a non-empty label (<label for>, a wrapping <label>,
 * aria-label or aria-labelledby), every button a text, and the page an <h1>, a lang on <html>
 * and a device-width meta viewport. Nothing may be wider than the viewport.
 */
export function accessibilityProblems(page) {
  return page.evaluate(() => {
    // Served as anything but HTML, Chromium shows the markup as text: nothing else applies.
    if (document.contentType !== "text/html") {
      return [`the page is served as ${document.contentType}, not text/html, so the browser shows its source`];
    }
    const problems = [];
    const lang = document.documentElement.getAttribute("lang");
    if (!lang || !lang.trim()) problems.push("<html> has no lang attribute");
    if (!document.querySelector("h1")) problems.push("the page has no <h1>");
    const viewport = document.querySelector('meta[name="viewport"]');
    if (!viewport || !/width\s*=\s*device-width/.test(viewport.content)) {
      problems.push("no <meta name=viewport content=width=device-width…>");
    }
    const visible = (el) =>
      el.checkVisibility ? el.checkVisibility() : Boolean(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
    const accessibleName = (el) => {
      const byLabels = [...(el.labels || [])].map((l) => l.textContent.trim()).join(" ");
      const byAria = (el.getAttribute("aria-label") || "").trim();
      const byRefs = (el.getAttribute("aria-labelledby") || "")
        .split(/\s+/)
        .map((id) => (id && document.getElementById(id) ? document.getElementById(id).textContent.trim() : ""))
        .join(" ")
        .trim();
      return byLabels || byAria || byRefs;
    };
    for (const el of document.querySelectorAll("input, select, textarea")) {
      if (el.type === "hidden" || !visible(el)) continue;
      if (!accessibleName(el)) {
        problems.push(`<${el.localName} name="${el.name}" value="${el.value}" id="${el.id}"> has no label`);
      }
    }
    for (const el of document.querySelectorAll("button")) {
      if (visible(el) && !el.textContent.trim() && !(el.getAttribute("aria-label") || "").trim()) {
        problems.push(`<button name="${el.name}" value="${el.value}"> has no text`);
      }
    }
    const root = document.documentElement;
    if (root.scrollWidth > root.clientWidth + 1) {
      problems.push(`the page scrolls sideways (${root.scrollWidth}px content in a ${root.clientWidth}px viewport)`);
    }
    return problems;
  });
}

/// What a browser suite needs (Chromium, the portico binary, playwright-core). Missing pieces skip
/// the suite with the reason, or, under PORTICO_REQUIRE_BROWSER=1, register a failing test named
/// after the suite. Returns `{ active, skip }` for the suite's tests.
export function browserPrerequisites(suite) {
  const missing = [];
  if (!existsSync(CHROMIUM_BIN)) missing.push(`Chromium not found at ${CHROMIUM_BIN} (apt-get install chromium)`);
  if (!existsSync(PORTICO_BIN)) missing.push(`Portico binary not found at ${PORTICO_BIN} (cargo build -p portico)`);
  if (!existsSync(path.join(HERE, "node_modules", "playwright-core"))) missing.push("tests/browser/node_modules is missing (npm ci --prefix tests/browser)");
  const required = envFlag("PORTICO_REQUIRE_BROWSER");
  const active = missing.length === 0;
  const skip = active ? false : required ? "prerequisites missing: see the failing test" : `${missing.join("; ")}; set PORTICO_REQUIRE_BROWSER=1 to make this a failure`;
  if (!active && required) {
    test(`${suite} browser test prerequisites`, () => assert.fail(`${missing.join("; ")} (PORTICO_REQUIRE_BROWSER=1)`));
  }
  return { active, skip };
}
