"""DSTU2 and STU3 to R4: `portico convert` over all 100 DSTU2 and all 100 STU3 fixture bundles,
every resource it writes validated with the `fhir.resources` R4 models (independently of
Portico's own validator), the per-type counts checked against the source bundles, and every
reference resolving inside the output. Skips without ../shared/fixtures unless
PORTICO_REQUIRE_SHARED=1.
"""

from __future__ import annotations

import collections
import gzip
import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from portico_support import SHARED_DIR, required, validate_r4

RENAMED = {("dstu2", "MedicationOrder"): "MedicationRequest"}


def fixture_dir(name: str) -> Path:
    folder = SHARED_DIR / "fixtures" / name
    if not folder.is_dir():
        message = f"{folder} not found (a fresh clone has no ../shared)"
        if required("PORTICO_REQUIRE_SHARED"):
            pytest.fail(f"{message}; PORTICO_REQUIRE_SHARED=1", pytrace=False)
        pytest.skip(f"{message}; set PORTICO_REQUIRE_SHARED=1 to make this a failure")
    return folder


def references(value, out: list[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "reference" and isinstance(v, str):
                out.append(v)
            else:
                references(v, out)
    elif isinstance(value, list):
        for v in value:
            references(v, out)


@pytest.mark.parametrize("version,folder", [("dstu2", "dstu2-synthea"), ("stu3", "stu3-synthea")])
def test_legacy_exports_convert_to_valid_r4(binary, version, folder):
    source = fixture_dir(folder)
    files = sorted(source.glob("*.json.gz"))
    assert len(files) == 100
    expected = collections.Counter()
    for f in files:
        for entry in json.load(gzip.open(f))["entry"]:
            t = entry["resource"]["resourceType"]
            expected[RENAMED.get((version, t), t)] += 1
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.ndjson"
        proc = subprocess.run(
            [str(binary), "convert", "--from", version, str(source), "--out", str(out)],
            capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stderr)
        assert summary["failed"] == [] and summary["report"]["refused"] == [], summary
        resources = [json.loads(line) for line in out.read_text().splitlines()]
    counts = collections.Counter(r["resourceType"] for r in resources)
    assert counts == expected
    keys = {f"{r['resourceType']}/{r['id']}" for r in resources}
    assert len(keys) == len(resources), "every resource has its own id"
    for r in resources:
        validate_r4(r, r["resourceType"], where=f"{version} {r['resourceType']}/{r['id']}")
        assert any(t.get("system") == "http://hl7.org/fhir/FHIR-version" for t in r["meta"]["tag"]), r["meta"]
        refs: list[str] = []
        references(r, refs)
        for ref in refs:
            assert ref in keys, f"{r['resourceType']}/{r['id']}: {ref} does not resolve"
