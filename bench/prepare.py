#!/usr/bin/env python3
"""Pick the request targets for bench/run from the Synthea fixtures.

Reads every fixture bundle once (only Patient and Observation entries matter) and writes,
into OUT_DIR:

  patients.json   every patient: id, family name, number of laboratory Observations dated
                  2015-01-01 or later (what the Observation search returns for that patient)
  read.txt        /fhir/Patient/{id}                      (~500 patients, seeded shuffle)
  obs.txt         /fhir/Observation?patient={id}&category=laboratory&date=ge2015-01-01
  name.txt        /fhir/Patient?name={prefix}             (distinct 3-letter family prefixes)
  healthz.txt     /healthz
  targets.json    a summary (counts, expected result sizes) for the report

and, because the server keeps an in-process cache of reads and search pages (32 MB by default)
that ~500 rotating keys fit in, three cache-defeating variants of the same requests:

  read-any.txt    /fhir/{type}/{id} over every resource in the set (~190k keys per copy)
  obs-nc.txt      the Observation search with date=ge2015-01-01T00:MM:SSZ, MM:SS varying:
                  the same matches (no lab result is dated in the first hour of 2015) under
                  500 × 3600 distinct keys
  name-nc.txt     the name search with _count=50..249: the same first page whenever a prefix has
                  at most 50 matches (nearly all), under 287 × 200 distinct keys

With --copies N the patient ids are spread over the original set and copies 1..N-1
(ids rewritten exactly as bench/scale.py rewrites them), so the scale-up run reads rows
from the whole table and not only from the first copy.

Usage: prepare.py FIXTURE_DIR OUT_DIR [--copies N] [--patients 500]
"""

import argparse
import gzip
import json
import os
import random
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale import new_id  # noqa: E402


def scan(fixture_dir):
    patients = {}
    labs = {}
    resources = {}
    for name in sorted(os.listdir(fixture_dir)):
        if not name.endswith(".json.gz"):
            continue
        with gzip.open(os.path.join(fixture_dir, name), "rt", encoding="utf-8") as f:
            bundle = json.load(f)
        for entry in bundle.get("entry", []):
            r = entry.get("resource", {})
            rt = r.get("resourceType")
            if rt and r.get("id"):
                resources[(rt, r["id"])] = None
            if rt == "Patient":
                family = ""
                for n in r.get("name", []):
                    if n.get("family"):
                        family = n["family"]
                        break
                patients[r["id"]] = family
            elif rt == "Observation":
                cats = [c.get("code") for cat in r.get("category", []) for c in cat.get("coding", [])]
                date = r.get("effectiveDateTime") or (r.get("effectivePeriod") or {}).get("start") or ""
                if "laboratory" in cats and date[:10] >= "2015-01-01":
                    subj = (r.get("subject") or {}).get("reference", "")
                    pid = subj.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
                    labs[pid] = labs.get(pid, 0) + 1
    return {
        "patients": [{"id": pid, "family": fam, "labs_since_2015": labs.get(pid, 0)} for pid, fam in patients.items()],
        "resources": [f"{rt}/{rid}" for rt, rid in resources],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixture_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--copies", type=int, default=1, help="total copies in the database (1 = original only)")
    ap.add_argument("--patients", type=int, default=500)
    ap.add_argument("--cache", help="patients.json from an earlier scan, reused if present")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    data = None
    if args.cache and os.path.exists(args.cache):
        with open(args.cache) as f:
            data = json.load(f)
        if not isinstance(data, dict) or "resources" not in data:
            data = None
    if data is None:
        data = scan(args.fixture_dir)
        if args.cache:
            with open(args.cache, "w") as f:
                json.dump(data, f)
    patients = data["patients"]
    with open(os.path.join(args.out_dir, "patients.json"), "w") as f:
        json.dump(patients, f)

    rng = random.Random(20240601)
    chosen = sorted(patients, key=lambda p: p["id"])
    rng.shuffle(chosen)
    chosen = chosen[: args.patients]
    ids = []
    for i, p in enumerate(chosen):
        copy = i % args.copies
        ids.append(p["id"] if copy == 0 else new_id(copy, p["id"]))

    prefixes = sorted({p["family"][:3] for p in patients if len(p["family"]) >= 3})
    rng.shuffle(prefixes)

    def write(name, lines):
        with open(os.path.join(args.out_dir, name), "w") as f:
            for line in lines:
                f.write(line + "\n")

    write("healthz.txt", ["/healthz"])
    write("read.txt", [f"/fhir/Patient/{i}" for i in ids])
    write(
        "obs.txt",
        [f"/fhir/Observation?patient={i}&category=laboratory&date=ge2015-01-01" for i in ids],
    )
    write("name.txt", [f"/fhir/Patient?name={urllib.parse.quote(p)}" for p in prefixes])

    # Cache-defeating variants (see the module comment).
    keys = list(data["resources"])
    rng.shuffle(keys)
    any_paths = []
    for i, key in enumerate(keys):
        rt, rid = key.split("/", 1)
        copy = i % args.copies
        any_paths.append(f"/fhir/{rt}/{rid if copy == 0 else new_id(copy, rid)}")
    write("read-any.txt", any_paths)
    obs_nc = []
    for pid in ids:
        for sec in rng.sample(range(3600), 120):
            obs_nc.append(
                f"/fhir/Observation?patient={pid}&category=laboratory&date=ge2015-01-01T00:{sec // 60:02d}:{sec % 60:02d}Z"
            )
    rng.shuffle(obs_nc)
    write("obs-nc.txt", obs_nc)
    name_nc = [f"/fhir/Patient?name={urllib.parse.quote(p)}&_count={c}" for p in prefixes for c in range(50, 250)]
    rng.shuffle(name_nc)
    write("name-nc.txt", name_nc)

    # Expected result sizes, to say what each search returns (default page size applies).
    labs = [p["labs_since_2015"] for p in chosen]
    by_prefix = {}
    for p in patients:
        by_prefix[p["family"][:3]] = by_prefix.get(p["family"][:3], 0) + 1
    name_hits = [by_prefix[p] * args.copies for p in prefixes]
    summary = {
        "resources_per_copy": len(keys),
        "read_any_keys": len(any_paths),
        "obs_nc_keys": len(set(obs_nc)),
        "name_nc_keys": len(name_nc),
        "patients_total": len(patients),
        "copies": args.copies,
        "read_ids": len(ids),
        "obs_mean_matches": sum(labs) / len(labs),
        "obs_max_matches": max(labs),
        "obs_zero_match_ids": sum(1 for n in labs if n == 0),
        "name_prefixes": len(prefixes),
        "name_mean_matches": sum(name_hits) / len(name_hits),
        "name_max_matches": max(name_hits),
    }
    with open(os.path.join(args.out_dir, "targets.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
