#!/usr/bin/env python3
"""Time the two shapes of a `Patient/{id}/$everything` page statement on a SQLite database.

`old` is the shape before c72bf09 (`r.rkey IN (SELECT rkey FROM compartment …) AND r.rkey > ?`),
`new` the shape since (the compartment's key walked from the cursor). Both run on the patient
with the largest compartment, for the first page and for the last full page of 101 rows.

Usage: bench/everything_pages.py /tmp/portico-bench/bulk-x1.db [--runs 200] [--rounds 3]
"""
import argparse
import sqlite3
import time

OLD = (
    "SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, h.body FROM resources r "
    "JOIN resource_history h ON h.hid = r.hid WHERE r.deleted = 0 AND r.rkey IN "
    "(SELECT c.rkey FROM compartment c WHERE c.patient_id = ?) AND r.rkey > ? ORDER BY r.rkey LIMIT 101"
)
NEW = (
    "SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, h.body FROM compartment pc "
    "JOIN resources r ON r.rkey = pc.rkey JOIN resource_history h ON h.hid = r.hid "
    "WHERE pc.patient_id = ? AND pc.rkey > ? AND r.deleted = 0 ORDER BY pc.rkey LIMIT 101"
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("database")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    db = sqlite3.connect(f"file:{a.database}?mode=ro", uri=True)
    db.execute("PRAGMA cache_size = -2000")  # as Portico's readers
    patient, size = db.execute(
        "SELECT patient_id, COUNT(*) FROM compartment GROUP BY patient_id ORDER BY 2 DESC LIMIT 1"
    ).fetchone()
    rkeys = [r[0] for r in db.execute("SELECT rkey FROM compartment WHERE patient_id = ? ORDER BY rkey", (patient,))]
    last_cursor = rkeys[max(0, len(rkeys) - 102)]
    print(f"patient {patient}: {size} records in the compartment")
    best = {}
    for _ in range(a.rounds):
        for name, sql in (("old", OLD), ("new", NEW)):
            for page, cursor in (("first", 0), ("last", last_cursor)):
                t = time.perf_counter()
                for _ in range(a.runs):
                    db.execute(sql, (patient, cursor)).fetchall()
                us = (time.perf_counter() - t) / a.runs * 1e6
                best[(name, page)] = min(us, best.get((name, page), us))
    for page in ("first", "last"):
        print(f"{page} page: old {best[('old', page)]:.0f} µs, new {best[('new', page)]:.0f} µs (best of {a.rounds})")


if __name__ == "__main__":
    main()
