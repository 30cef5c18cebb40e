#!/usr/bin/env python3
"""Time one system-level Bulk Data export against a running `portico serve --dev-open-access`.

Kicks off GET [base]/$export, polls the status URL (every 0.25 s, the server allowing it),
samples the server process's resident memory from /proc/PID/status meanwhile, then reads the
manifest. Prints one JSON line: resources (the manifest's counts), files, seconds from kick-off
to manifest, resources/s, peak and start RSS in MB, and the bytes written.

Usage: bulk_export.py BASE_URL SERVER_PID [QUERY]   (QUERY: extra kick-off parameters, a=b&c=d)
"""

import json
import sys
import time
import urllib.request


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    base, pid = sys.argv[1].rstrip("/"), int(sys.argv[2])
    query = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else ""
    start_rss = rss_mb(pid)
    req = urllib.request.Request(f"{base}/$export" + (f"?{query}" if query else ""), headers={"Prefer": "respond-async", "Accept": "application/fhir+json"})
    t0 = time.monotonic()
    with urllib.request.urlopen(req) as r:
        assert r.status == 202, r.status
        status_url = r.headers["Content-Location"]
    peak = start_rss
    manifest = None
    while manifest is None:
        time.sleep(0.25)
        peak = max(peak, rss_mb(pid))
        try:
            with urllib.request.urlopen(status_url) as r:
                if r.status == 200:
                    manifest = json.load(r)
        except urllib.error.HTTPError as e:
            if e.code != 429:
                raise
    seconds = time.monotonic() - t0
    peak = max(peak, rss_mb(pid))
    resources = sum(f["count"] for f in manifest["output"])
    print(json.dumps({
        "resources": resources,
        "files": len(manifest["output"]),
        "types": len({f["type"] for f in manifest["output"]}),
        "seconds": round(seconds, 2),
        "resources_per_s": round(resources / seconds),
        "rss_start_mb": round(start_rss, 1),
        "rss_peak_mb": round(peak, 1),
    }))


if __name__ == "__main__":
    main()
