#!/usr/bin/env python3
"""Write one Provenance per Synthea bundle, as a payer-to-payer import records one per member:
its `target` names every resource of the bundle (the Patient included), `recorded` is fixed.
For timing `includeAssociatedData` (bench/bulk --provenance): 623 Provenance, one per bundle of
the fixture set, naming all of its 189k resources.

Usage: provenance.py FIXTURE_DIR OUT.ndjson
"""

import gzip
import json
import pathlib
import sys


def main():
    src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    written = 0
    with out.open("w") as fh:
        for n, path in enumerate(sorted(src.glob("*.json.gz"))):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                bundle = json.load(f)
            targets = [
                {"reference": f"{e['resource']['resourceType']}/{e['resource']['id']}"}
                for e in bundle.get("entry", [])
                if "resource" in e and "id" in e["resource"]
            ]
            prov = {
                "resourceType": "Provenance",
                "id": f"bench-prov-{n}",
                "target": targets,
                "recorded": "2026-01-01T00:00:00Z",
                "agent": [{"who": {"display": "bench/provenance.py"}}],
            }
            fh.write(json.dumps(prov) + "\n")
            written += 1
    print(f"{written} Provenance written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
