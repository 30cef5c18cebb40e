#!/usr/bin/env python3
"""Offline-sync figures against a running `portico serve` (issue 16's sync benchmark).

  first pull     every page of GET $sync for a practitioner's patients until caught up
                 (seconds, entries, entries/s), and `portico sync pull` into a fresh mirror
                 (wall seconds: HTTP plus writing the local SQLite database)
  empty pull     GET $sync with the caught-up cursor, --repeat times: p50/p90/p99 ms
                 (each answer also stores its next cursor: one small write)
  push 100       one batch of 100 Observation updates with If-Match, --runs times: p50/max ms

Usage: sync_bench.py BASE_URL TOKEN PORTICO_BIN WORKDIR [--repeat 300] [--runs 10]
Prints one JSON line.
"""

import argparse
import json
import os
import statistics
import subprocess
import time
import urllib.request


def call(url, token, method="GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/fhir+json",
        **({"Content-Type": "application/fhir+json"} if body is not None else {})})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def next_cursor(bundle):
    for link in bundle.get("link", []):
        if link["relation"] == "next":
            return link["url"].split("cursor=")[1].split("&")[0]
    return None


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("token")
    ap.add_argument("portico")
    ap.add_argument("workdir")
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    base = a.base.rstrip("/")

    t0 = time.monotonic()
    cursor, entries, observations = None, 0, []
    while True:
        url = f"{base}/$sync?_count=1000" + (f"&cursor={cursor}" if cursor else "")
        bundle = call(url, a.token)
        page = bundle.get("entry", [])
        entries += len(page)
        for e in page:
            r = e.get("resource") or {}
            if r.get("resourceType") == "Observation" and len(observations) < 100:
                observations.append(r)
        cursor = next_cursor(bundle)
        if len(page) < 1000:
            break
    first_s = time.monotonic() - t0

    mirror = os.path.join(a.workdir, f"mirror-{os.getpid()}.db")
    t0 = time.monotonic()
    subprocess.run([a.portico, "sync", "--server", base, "--token", a.token, "--database-url", mirror, "pull"],
                   check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, PORTICO_LOG="warn"))
    cli_s = time.monotonic() - t0

    empty = []
    for _ in range(a.repeat):
        t = time.monotonic()
        bundle = call(f"{base}/$sync?_count=1000&cursor={cursor}", a.token)
        empty.append((time.monotonic() - t) * 1000)
        assert not bundle.get("entry"), "changes arrived during the empty-pull measurement"
        cursor = next_cursor(bundle)

    push = []
    for run in range(a.runs):
        batch = []
        for o in observations:
            o = dict(o)
            version = o["meta"]["versionId"]
            o.pop("meta", None)
            o["status"] = "amended" if run % 2 == 0 else "final"
            batch.append({"resource": o, "request": {"method": "PUT", "url": f"Observation/{o['id']}",
                                                      "ifMatch": f'W/"{version}"'}})
        t = time.monotonic()
        answer = call(f"{base}", a.token, "POST", {"resourceType": "Bundle", "type": "batch", "entry": batch})
        push.append((time.monotonic() - t) * 1000)
        statuses = [e["response"]["status"] for e in answer["entry"]]
        assert all(s.startswith("200") for s in statuses), statuses[:3]
        # The next run's If-Match: the versions just written.
        for o, e in zip(observations, answer["entry"]):
            o["meta"] = {"versionId": e["response"]["etag"].split('"')[1]}

    print(json.dumps({
        "first_pull_entries": entries,
        "first_pull_s": round(first_s, 2),
        "first_pull_entries_per_s": round(entries / first_s),
        "cli_first_pull_s": round(cli_s, 2),
        "empty_pull_ms": {"p50": round(pct(empty, 50), 2), "p90": round(pct(empty, 90), 2), "p99": round(pct(empty, 99), 2)},
        "push_100_ms": {"p50": round(statistics.median(push), 1), "max": round(max(push), 1), "edits": len(observations)},
    }))


if __name__ == "__main__":
    main()
