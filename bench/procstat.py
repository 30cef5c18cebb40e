#!/usr/bin/env python3
"""CPU-time snapshot for bench/run, read from /proc (Linux only).

  procstat.py SERVER_PID   ->  one JSON line: wall clock, the server's CPU ticks, the summed
                               CPU ticks of every `postgres` process, and the machine's busy
                               and total ticks from /proc/stat (SERVER_PID 0: none).
  procstat.py --wait-quiet MAX_SECONDS [THRESHOLD_CORES]
                           ->  waits until the whole machine used less than THRESHOLD_CORES
                               (default 0.25) over 2 s, at most MAX_SECONDS; prints one JSON line
                               with how long it waited and the last measured load. The machine is
                               shared (e.g. with compilers), so each measurement starts quiet.

Two snapshots taken around a wrk run give the CPU each side used (report.py does the sums).
"""

import json
import os
import sys
import time


def proc_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is state (field 3); utime and stime are fields 14 and 15.
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def machine_ticks():
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    idle = cpu[3] + (cpu[4] if len(cpu) > 4 else 0)
    total = sum(cpu[:8])
    return total - idle, total


def wait_quiet(max_seconds, threshold):
    hz = os.sysconf("SC_CLK_TCK")
    start = time.time()
    while True:
        b0, _ = machine_ticks()
        t0 = time.time()
        time.sleep(2)
        b1, _ = machine_ticks()
        busy = (b1 - b0) / hz / (time.time() - t0)
        waited = time.time() - start
        if busy < threshold or waited >= max_seconds:
            print(json.dumps({"waited_s": round(waited, 1), "busy_cores": round(busy, 2), "quiet": busy < threshold}))
            return


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def main():
    if sys.argv[1] == "--wait-quiet":
        wait_quiet(float(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.25)
        return
    server = int(sys.argv[1])
    # Only the backends serving the benchmark database ("postgres: 15/main: USER DB ADDR ..."):
    # other sessions (e.g. a test suite on the same server) are not the server under test.
    db = os.environ.get("BENCH_PG_DB", "portico_bench")
    pg = 0
    pg_procs = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and comm(entry) in ("postgres", "postmaster") and f" {db} " in cmdline(entry):
            pg += proc_ticks(entry)
            pg_procs += 1
    busy, total = machine_ticks()
    print(json.dumps({
        "wall": time.time(),
        "hz": os.sysconf("SC_CLK_TCK"),
        "server_ticks": proc_ticks(server) if server else 0,
        "postgres_ticks": pg,
        "postgres_procs": pg_procs,
        "machine_busy_ticks": busy,
        "machine_total_ticks": total,
    }))


if __name__ == "__main__":
    main()
