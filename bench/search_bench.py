#!/usr/bin/env python3
"""Issue 17's uncached per-patient search benchmark against one database.

Starts `portico serve --cache-mb 0 --dev-open-access` on DATABASE_URL, picks --patients patients
spread evenly over every Patient in the database (so a ×6 database is read across all its
copies), and runs wrk (-t2 -c32, --duration seconds, after a warm-up) on:

  healthz      /healthz (the same process's ceiling, which every figure is divided by)
  lab10        Observation?patient=P&category=laboratory&_count=10
  lab          Observation?patient=P&category=laboratory           (the default page)
  conditions   Condition?patient=P
  encounters   Encounter?patient=P&date=ge2015-01-01&_count=10
  medreqs      MedicationRequest?patient=P
  everything   Patient/P/$everything

each rotating through the patients (wrk and bench/rotate.lua). Before the load, every URL is
fetched once to count the resources it returns (so `$everything` can be compared per resource
with the per-type searches). /healthz is measured before the first target and again after each
one, and a target's ratio is to the mean of the /healthz runs on either side of it: these
machines drift by 10-30% within minutes, and one /healthz figure at the start let that drift
into every later ratio. Prints one JSON line per target: req/s, p50/p99 in ms, the ratio to
/healthz (and the two /healthz rates it used), and resources/s; the /healthz line gives the mean
and range of all its runs.

Usage: search_bench.py PORTICO_BIN DATABASE_URL OUT_DIR [--patients 60] [--duration 15]
       [--only lab10,everything]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))

TARGETS = [
    ("lab10", "/fhir/Observation?patient={p}&category=laboratory&_count=10"),
    ("lab", "/fhir/Observation?patient={p}&category=laboratory"),
    ("conditions", "/fhir/Condition?patient={p}"),
    ("encounters", "/fhir/Encounter?patient={p}&date=ge2015-01-01&_count=10"),
    ("medreqs", "/fhir/MedicationRequest?patient={p}"),
    ("everything", "/fhir/Patient/{p}/$everything"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    req = urllib.request.Request(url, headers={"Accept": "application/fhir+json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def patient_ids(origin):
    ids, url = [], f"{origin}/fhir/Patient?_elements=id&_count=1000"
    while url:
        bundle = get_json(url)
        ids.extend(e["resource"]["id"] for e in bundle.get("entry", []))
        url = next((l["url"] for l in bundle.get("link", []) if l["relation"] == "next"), None)
    return ids


def wrk(origin, paths_file, duration, out_json):
    env = dict(os.environ, WRK_JSON=out_json)
    subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{duration}s", "--latency", "-s", os.path.join(HERE, "rotate.lua"), origin, "--", paths_file],
        check=True, stdout=subprocess.DEVNULL, env=env,
    )
    with open(out_json) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("portico")
    ap.add_argument("database_url")
    ap.add_argument("out")
    ap.add_argument("--patients", type=int, default=60)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    log = open(os.path.join(a.out, "serve.log"), "ab")
    server = subprocess.Popen(
        [a.portico, "serve", "--database-url", a.database_url, "--listen", f"127.0.0.1:{port}",
         "--dev-open-access", "--cache-mb", "0"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PORTICO_LOG="warn"), cwd=a.out,
    )
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{origin}/readyz", timeout=2)
                break
            except Exception:
                time.sleep(0.1)
        ids = patient_ids(origin)
        step = max(1, len(ids) // a.patients)
        chosen = ids[::step][: a.patients]
        wanted = [t for t in a.only.split(",") if t]
        targets = [t for t in TARGETS if not wanted or t[0] in wanted]

        def load(name, paths):
            paths_file = os.path.join(a.out, f"{name}.txt")
            with open(paths_file, "w") as f:
                f.write("\n".join(paths) + "\n")
            wrk(origin, paths_file, a.warmup, os.path.join(a.out, f"{name}-warmup.json"))
            return wrk(origin, paths_file, a.duration, os.path.join(a.out, f"{name}.json"))

        def rate(result):
            return result["requests"] / (result["duration_us"] / 1e6)

        healthz_runs = [rate(load("healthz-0", ["/healthz"]))]
        rows = []
        for i, (name, template) in enumerate(targets, start=1):
            paths = [template.format(p=urllib.parse.quote(p)) for p in chosen]
            counts = [len(get_json(origin + p).get("entry", [])) for p in paths]
            resources = sum(counts) / len(counts)
            result = load(name, paths)
            healthz_runs.append(rate(load(f"healthz-{i}", ["/healthz"])))
            rps = rate(result)
            around = (healthz_runs[-2] + healthz_runs[-1]) / 2
            print(f"{name}: {rps:.0f} req/s, /healthz around it {around:.0f}", file=sys.stderr, flush=True)
            rows.append({
                "target": name,
                "patients": len(chosen),
                "req_per_s": round(rps),
                "p50_ms": round(result["latency_us"]["p50"] / 1000, 2),
                "p99_ms": round(result["latency_us"]["p99"] / 1000, 2),
                "errors": sum(result["errors"].values()),
                "resources_per_response": round(resources, 1),
                "resources_per_s": round(rps * resources),
                "x_healthz": round(rps / around, 3),
                "healthz_before_after": [round(healthz_runs[-2]), round(healthz_runs[-1])],
            })
        print(json.dumps({
            "target": "healthz",
            "patients": None,
            "req_per_s": round(sum(healthz_runs) / len(healthz_runs)),
            "req_per_s_min_max": [round(min(healthz_runs)), round(max(healthz_runs))],
            "runs": len(healthz_runs),
            "x_healthz": 1.0,
        }), flush=True)
        for row in rows:
            print(json.dumps(row), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
