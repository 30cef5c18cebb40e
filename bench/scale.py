#!/usr/bin/env python3
"""Write rewritten copies of the Synthea fixture set for the bench/run scale-up.

Copy c (1..N-1) of every bundle gets every UUID in its text replaced by
uuid5(NAMESPACE, "c:<old uuid>"). In these Synthea bundles every resource id, every
fullUrl / `urn:uuid:` reference and the Synthea person identifier are UUIDs, so one
consistent textual rewrite keeps each copy self-consistent (references resolve inside the
copy) while no id collides with the original or another copy. Names, codes and dates are
left as they are, so searches by name return N times as many patients at scale N.

Copies are written as .json.gz (gzip level 1) under OUT_DIR/copy-<c>/; a copy directory
that is complete (has its .done marker) is reused.

Usage: scale.py FIXTURE_DIR OUT_DIR --copies N [--jobs 2]
"""

import argparse
import gzip
import os
import re
import sys
import uuid
from multiprocessing import Pool

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://portico.invalid/bench/scale")
UUID_RE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def new_id(copy, old):
    return str(uuid.uuid5(NAMESPACE, f"{copy}:{old}"))


def rewrite_file(job):
    copy, src, dst = job
    with gzip.open(src, "rb") as f:
        data = f.read()
    cache = {}

    def sub(m):
        old = m.group(0)
        new = cache.get(old)
        if new is None:
            new = new_id(copy, old.decode()).encode()
            cache[old] = new
        return new

    out = UUID_RE.sub(sub, data)
    tmp = dst + ".tmp"
    with gzip.open(tmp, "wb", compresslevel=1) as f:
        f.write(out)
    os.replace(tmp, dst)
    return len(cache)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixture_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--copies", type=int, required=True, help="total copies wanted, the original counting as 1")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    files = sorted(f for f in os.listdir(args.fixture_dir) if f.endswith(".json.gz"))
    dirs = []
    for copy in range(1, args.copies):
        d = os.path.join(args.out_dir, f"copy-{copy}")
        dirs.append(d)
        if os.path.exists(os.path.join(d, ".done")):
            print(f"copy {copy}: reused {d}", file=sys.stderr)
            continue
        os.makedirs(d, exist_ok=True)
        jobs = [(copy, os.path.join(args.fixture_dir, f), os.path.join(d, f"c{copy}-{f}")) for f in files]
        with Pool(args.jobs) as pool:
            n = sum(pool.imap_unordered(rewrite_file, jobs, chunksize=8))
        open(os.path.join(d, ".done"), "w").close()
        print(f"copy {copy}: {len(files)} files, {n} uuids rewritten -> {d}", file=sys.stderr)
    for d in dirs:
        print(d)


if __name__ == "__main__":
    main()
