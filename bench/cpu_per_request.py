#!/usr/bin/env python3
"""Server and PostgreSQL CPU per request under one wrk load, for comparing two binaries.

Starts `BIN serve --dev-open-access --cache-mb 0` on DATABASE_URL, warms up for 3 s, runs
`wrk -t2 -c32 -d10s` through bench/rotate.lua over the paths in PATHS_FILE (one per line, e.g.
a bench/search run's postgres/lab10.txt), and prints req/s, p99 and the CPU time (user + system,
from /proc) the server process and PostgreSQL's processes spent per request. Run it alternately for the binaries being compared: the machine drifts.

Usage: bench/cpu_per_request.py BIN PATHS_FILE [DATABASE_URL]
       (default postgres://postgres@127.0.0.1:5432/bench_bulk_x1, the database bench/search loads)
"""

import os
import re
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        return None


def postgres_cpu():
    pids = subprocess.run(["pgrep", "-u", "postgres"], capture_output=True, text=True).stdout.split()
    return {p: c for p in pids if (c := cpu_seconds(p)) is not None}


def wrk(origin, paths, seconds):
    lua = os.path.join(HERE, "rotate.lua")
    cmd = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", lua, origin, "--", paths]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binary, paths = sys.argv[1], sys.argv[2]
    url = sys.argv[3] if len(sys.argv) > 3 else "postgres://postgres@127.0.0.1:5432/bench_bulk_x1"
    port = 18557
    origin = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [binary, "serve", "--database-url", url, "--listen", f"127.0.0.1:{port}", "--dev-open-access", "--cache-mb", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{origin}/readyz", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        wrk(origin, paths, 3)
        pg0, s0 = postgres_cpu(), cpu_seconds(server.pid)
        out = wrk(origin, paths, 10)
        pg1, s1 = postgres_cpu(), cpu_seconds(server.pid)
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p99 = re.search(r"99%\s+(\S+)", out).group(1)
        n = rps * 10
        # A process started during the load counts whole: the backends of connections the
        # server opened then (wrk's end abandons requests, and their connections are closed).
        # One that ended during the load is missed.
        pg = sum(c - pg0.get(p, 0.0) for p, c in pg1.items())
        print(f"{binary}: {rps:.0f} req/s, p99 {p99}, server {1e6 * (s1 - s0) / n:.1f} µs/request, "
              f"PostgreSQL {1e6 * pg / n:.1f} µs/request")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
