"""A Bulk Data client's export flow against `portico serve` (SQLite and PostgreSQL): kick-off
with `Prefer: respond-async`, polling the Content-Location while honouring Retry-After (and
backing off on 429), then downloading every NDJSON file of the manifest. Every line must
validate as FHIR R4 (fhir.resources), and the export must hold every imported resource once."""

from __future__ import annotations

import json

import requests

from portico_support import run_export, validate_r4


def test_system_export_is_every_resource_once_and_valid_r4(loaded):
    server = loaded.server
    manifest = run_export(server, "$export")
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"].endswith("/fhir/$export")
    seen: dict[tuple[str, str], int] = {}
    for item in manifest["output"]:
        resp = requests.get(item["url"], timeout=60)
        assert resp.status_code == 200, resp.text[:300]
        assert resp.headers["Content-Type"] == "application/fhir+ndjson"
        lines = [l for l in resp.text.split("\n") if l]
        assert len(lines) == item["count"], item
        for n, line in enumerate(lines):
            doc = json.loads(line)
            validate_r4(doc, item["type"], f"{item['url']} line {n + 1}")
            key = (doc["resourceType"], doc["id"])
            seen[key] = seen.get(key, 0) + 1
    twice = [k for k, c in seen.items() if c > 1]
    assert not twice, f"exported more than once: {twice[:5]}"
    expected = set(loaded.fixtures.resources)
    assert expected <= set(seen), f"missing from the export: {sorted(expected - set(seen))[:5]}"


def test_patient_export_with_type_and_elements(loaded):
    server = loaded.server
    manifest = run_export(server, "Patient/$export?_type=Patient&_elements=gender,birthDate")
    [item] = manifest["output"]
    lines = [json.loads(l) for l in requests.get(item["url"], timeout=60).text.split("\n") if l]
    assert len(lines) == len(loaded.fixtures.ids["Patient"])
    for doc in lines:
        assert set(doc) <= {"resourceType", "id", "meta", "gender", "birthDate"}
        assert any(t.get("code") == "SUBSETTED" for t in doc["meta"]["tag"])
        validate_r4(doc, "Patient", "subsetted Patient")


def test_associated_provenance_is_exported_and_valid_r4(loaded):
    """`includeAssociatedData=LatestProvenanceResources`: the newest Provenance naming an exported
    resource comes with it (an older one does not), as valid R4 in a Provenance file."""
    server = loaded.server
    obs_id = loaded.fixtures.ids["Observation"][0]
    created = []
    try:
        for recorded in ("2020-01-01T00:00:00Z", "2024-01-01T00:00:00Z"):
            prov = {
                "resourceType": "Provenance",
                "recorded": recorded,
                "target": [{"reference": f"Observation/{obs_id}"}],
                "agent": [{"who": {"display": "pytest"}}],
            }
            resp = requests.post(
                server.url("Provenance"),
                data=json.dumps(prov),
                headers={"Content-Type": "application/fhir+json"},
                timeout=30,
            )
            assert resp.status_code == 201, resp.text[:300]
            created.append(resp.json()["id"])
        type_filter = requests.utils.quote(f"Observation?_id={obs_id}", safe="")
        manifest = run_export(
            server,
            f"$export?_type=Observation&_typeFilter={type_filter}&includeAssociatedData=LatestProvenanceResources",
        )
        by_type: dict[str, list[dict]] = {}
        for item in manifest["output"]:
            for n, line in enumerate(l for l in requests.get(item["url"], timeout=60).text.split("\n") if l):
                doc = json.loads(line)
                validate_r4(doc, item["type"], f"{item['url']} line {n + 1}")
                by_type.setdefault(item["type"], []).append(doc)
        assert [d["id"] for d in by_type["Observation"]] == [obs_id]
        assert [d["id"] for d in by_type["Provenance"]] == [created[1]]
    finally:
        for pid in created:
            requests.delete(server.url(f"Provenance/{pid}"), timeout=30)
