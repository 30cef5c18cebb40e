#!/usr/bin/env python3
"""bench/audit_insert.py — what one audit row costs SQLite, by index set and commit size.

Creates throw-away SQLite databases (WAL, synchronous=NORMAL, 16 MB cache: the server's write
connection settings) with Portico's audit_events table, preloads 200,000 rows spread over 500
patients, then times 38,000 more rows inserted in transactions of the given sizes. Python's
sqlite3 module and the system SQLite, so the absolute figures include Python's per-row cost
(about 3 µs); the differences between lines are what the server's writer sees.

Usage: python3 bench/audit_insert.py [DIR]     (default DIR: a temporary directory)
"""
import os
import random
import sqlite3
import sys
import tempfile
import time

COLS = ("recorded_ms, interaction, action, outcome, status, user_id, fhir_user, client_id, "
        "grant_id, patient_id, resource_type, resource_id, detail")
TABLE = ("CREATE TABLE audit_events (id INTEGER PRIMARY KEY, recorded_ms INTEGER NOT NULL, "
         "interaction TEXT NOT NULL, action TEXT NOT NULL, outcome INTEGER NOT NULL, "
         "status INTEGER NOT NULL, user_id TEXT, fhir_user TEXT, client_id TEXT, grant_id TEXT, "
         "patient_id TEXT, resource_type TEXT, resource_id TEXT, detail TEXT);")
RECORDED = "CREATE INDEX r ON audit_events (recorded_ms);"
PATIENT = "CREATE INDEX p ON audit_events (patient_id) WHERE patient_id IS NOT NULL;"
USER = "CREATE INDEX u ON audit_events (user_id) WHERE user_id IS NOT NULL;"

random.seed(7)
PATIENTS = [f"{random.getrandbits(128):032x}" for _ in range(500)]
clock = [1_800_000_000_000]


def rows(n):
    out = []
    for _ in range(n):
        clock[0] += 1
        p = random.choice(PATIENTS)
        out.append((clock[0], "read", "R", 0, 200, None, None, None, None, p, "Patient", p, None))
    return out


def run(path, label, indexes, commit_rows, preload=200_000, measured=38_000):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA cache_size=-16000")
    db.executescript(TABLE + indexes)
    insert = f"INSERT INTO audit_events ({COLS}) VALUES ({', '.join('?' * 13)})"

    def commit(batch):
        db.execute("BEGIN")
        db.executemany(insert, batch)
        db.execute("COMMIT")

    for _ in range(preload // 20_000):
        commit(rows(20_000))
    batches = [rows(commit_rows) for _ in range(measured // commit_rows)]
    started = time.perf_counter()
    for b in batches:
        commit(b)
    elapsed = time.perf_counter() - started
    n = sum(len(b) for b in batches)
    print(f"| {label} | {commit_rows:,} | {elapsed / n * 1e6:.1f} |")
    db.close()


def main():
    where = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="portico-audit-")
    print(f"SQLite {sqlite3.sqlite_version}, files in {where}\n")
    print("| indexes | rows per commit | µs per row |")
    print("|---|---:|---:|")
    cases = [
        ("none", "", 1_900),
        ("recorded_ms", RECORDED, 1_900),
        ("patient_id", PATIENT, 1_900),
        ("all three", RECORDED + PATIENT + USER, 1_900),
        ("all three", RECORDED + PATIENT + USER, 9_500),
        ("all three", RECORDED + PATIENT + USER, 19_000),
    ]
    for i, (label, idx, size) in enumerate(cases):
        path = os.path.join(where, f"audit-{i}.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        run(path, label, idx, size)


if __name__ == "__main__":
    main()
