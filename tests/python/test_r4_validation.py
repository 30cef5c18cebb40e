"""Every kind of response Portico sends must validate as FHIR R4 (4.0.1) with the
fhir.resources models: reads of each resource type, searchset, history and
transaction-response Bundles, and the CapabilityStatement."""

from __future__ import annotations

import uuid

import pytest

from portico_support import EXPECTED_TYPES, fhir_json, validate_r4

READS_PER_TYPE = 10


def test_validator_is_r4():
    import fhir.resources
    import pydantic

    assert fhir.resources.__fhir_version__ == "4.0.1"
    assert pydantic.VERSION.startswith("1.")
    # An R4B/R5-only element must be rejected by the R4 models.
    from fhir.resources.patient import Patient
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Patient.parse_obj({"resourceType": "Patient", "notAnR4Element": True})


def test_capability_statement(server):
    resp = server.get("metadata")
    assert resp.status_code == 200, resp.text[:500]
    doc = fhir_json(resp, "GET /fhir/metadata")
    cs = validate_r4(doc, "CapabilityStatement", "GET /fhir/metadata")
    assert cs.fhirVersion == "4.0.1"
    assert cs.kind == "instance"
    assert "json" in cs.format or "application/fhir+json" in cs.format
    rest = [r for r in cs.rest if r.mode == "server"]
    assert rest, "no rest entry with mode=server"
    types = {r.type for r in rest[0].resource or []}
    missing = set(EXPECTED_TYPES) - types
    assert not missing, f"CapabilityStatement does not list {sorted(missing)}"


@pytest.mark.parametrize("rtype", EXPECTED_TYPES)
def test_read_validates(loaded, rtype):
    ids = loaded.fixtures.ids.get(rtype, [])
    assert ids, f"the selected fixture bundles contain no {rtype}"
    for rid in ids[:READS_PER_TYPE]:
        where = f"GET /fhir/{rtype}/{rid}"
        resp = loaded.server.get(f"{rtype}/{rid}")
        assert resp.status_code == 200, f"{where}: {resp.status_code} {resp.text[:500]}"
        doc = fhir_json(resp, where)
        model = validate_r4(doc, rtype, where)
        assert model.id == rid
        assert doc["meta"]["versionId"], f"{where}: no meta.versionId"
        assert resp.headers.get("ETag", "").startswith('W/"'), f"{where}: ETag {resp.headers.get('ETag')!r}"


def _unresolved_references(node, path="$"):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and v.startswith("urn:uuid:"):
                yield f"{path}.reference = {v}"
            else:
                yield from _unresolved_references(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _unresolved_references(v, f"{path}[{i}]")


@pytest.mark.parametrize("rtype", ["Observation", "Encounter", "Claim", "ExplanationOfBenefit"])
def test_imported_references_resolved(loaded, rtype):
    """Transaction Bundles use urn:uuid fullUrls; after import references point at Type/id."""
    for rid in loaded.fixtures.ids[rtype][:READS_PER_TYPE]:
        doc = loaded.server.get(f"{rtype}/{rid}").json()
        bad = list(_unresolved_references(doc))
        assert not bad, f"GET /fhir/{rtype}/{rid} still has urn:uuid references: {bad[:5]}"


def _busiest_patient(fixtures, rtype="Observation"):
    return max(fixtures.by_patient, key=lambda p: (fixtures.by_patient[p][rtype], p))


def search_all(server, query, where_prefix="GET /fhir/"):
    """Follow `next` links from `query`, validating each searchset page; returns
    (match entries, include entries, pages)."""
    matches, includes, pages = [], [], 0
    url = query
    seen_urls = set()
    while url:
        assert url not in seen_urls, f"paging loops: {url}"
        seen_urls.add(url)
        where = url if url.startswith("http") else where_prefix + url
        resp = server.get(url)
        assert resp.status_code == 200, f"{where}: {resp.status_code} {resp.text[:500]}"
        doc = fhir_json(resp, where)
        bundle = validate_r4(doc, "Bundle", where)
        assert bundle.type == "searchset", f"{where}: Bundle.type {bundle.type}"
        pages += 1
        for entry in bundle.entry or []:
            mode = entry.search.mode if entry.search else None
            if mode == "match":
                matches.append(entry)
            elif mode == "include":
                includes.append(entry)
        url = next((link.url for link in bundle.link or [] if link.relation == "next"), None)
        assert pages < 500, "more than 500 pages"
    return matches, includes, pages


@pytest.mark.parametrize("rtype", EXPECTED_TYPES)
def test_every_imported_resource_validates(loaded, rtype):
    """Page through every resource of the type (each page validated as an R4 Bundle, so every
    resource in it is validated too) and find each imported id exactly once."""
    matches, _, _ = search_all(loaded.server, f"{rtype}?_count=200&_sort=_id")
    ids = [e.resource.id for e in matches]
    assert len(ids) == len(set(ids)), f"{rtype}: duplicate ids across pages"
    missing = set(loaded.fixtures.ids[rtype]) - set(ids)
    assert not missing, f"{rtype}: {len(missing)} imported resources not found by search, e.g. {sorted(missing)[:3]}"


def test_searchset_paging(loaded):
    pid = _busiest_patient(loaded.fixtures)
    expected = loaded.fixtures.by_patient[pid]["Observation"]
    assert expected > 20, "need a patient with more than one page of Observations"
    first = loaded.server.get(f"Observation?patient={pid}&_count=20&_total=accurate")
    assert first.status_code == 200, first.text[:500]
    bundle = validate_r4(fhir_json(first), "Bundle", f"Observation?patient={pid}&_total=accurate")
    assert bundle.total == expected
    matches, _, pages = search_all(loaded.server, f"Observation?patient={pid}&_count=20")
    assert pages == -(-expected // 20), f"{pages} pages for {expected} matches at 20 per page"
    ids = [e.resource.id for e in matches]
    assert len(ids) == expected and len(set(ids)) == expected, f"{len(ids)} matches, {len(set(ids))} distinct"
    for e in matches:
        assert e.fullUrl.endswith(f"/Observation/{e.resource.id}"), e.fullUrl
        assert e.resource.subject.reference == f"Patient/{pid}"


@pytest.mark.parametrize(
    "rtype",
    [t for t in EXPECTED_TYPES if t not in ("Patient", "Organization", "Practitioner")],
)
def test_search_by_patient_counts(loaded, rtype):
    fixtures = loaded.fixtures
    candidates = [p for p in fixtures.by_patient if fixtures.by_patient[p][rtype]]
    assert candidates, f"no fixture patient has a {rtype}"
    pid = max(candidates, key=lambda p: (fixtures.by_patient[p][rtype], p))
    matches, _, _ = search_all(loaded.server, f"{rtype}?patient=Patient/{pid}&_count=50")
    ids = sorted(e.resource.id for e in matches)
    assert len(ids) == fixtures.by_patient[pid][rtype], f"{rtype}?patient=Patient/{pid}"
    assert len(set(ids)) == len(ids)


def test_searchset_include_and_revinclude(loaded):
    pid = _busiest_patient(loaded.fixtures, "Encounter")
    matches, includes, _ = search_all(
        loaded.server, f"Encounter?patient={pid}&_count=5&_include=Encounter:patient&_revinclude=Condition:encounter"
    )
    assert matches and all(e.resource.resource_type == "Encounter" for e in matches)
    types = {e.resource.resource_type for e in includes}
    assert "Patient" in types, f"included types: {types}"


@pytest.mark.parametrize(
    "query",
    [
        "Patient?_count=5",
        "Patient?_sort=-birthdate&_count=5",
        "Patient?gender=female&_count=5",
        "Patient?name=a&_count=5",
        "Patient?_summary=count",
        "Patient?_elements=name,gender&_count=3",
        "Observation?code=http://loinc.org|8302-2&_count=5",
        "Observation?date=ge2010-01-01&_sort=date&_count=5",
        "Observation?value-quantity=gt50&_count=5",
        "Condition?clinical-status=active&_count=5",
        "Encounter?date=ge2000&_count=5",
        "Organization?_count=5",
        "Practitioner?_count=5",
        "Immunization?_count=5",
        "MedicationRequest?status=active,stopped&_count=5",
        "DiagnosticReport?_count=5&_include=DiagnosticReport:result",
        "Claim?_count=3",
        "ExplanationOfBenefit?_count=3",
        "ImagingStudy?_count=3",
    ],
)
def test_searchset_variants_validate(loaded, query):
    resp = loaded.server.get(query)
    where = f"GET /fhir/{query}"
    assert resp.status_code == 200, f"{where}: {resp.status_code} {resp.text[:500]}"
    bundle = validate_r4(fhir_json(resp, where), "Bundle", where)
    assert bundle.type == "searchset"
    if "_summary=count" in query:
        assert bundle.total is not None and bundle.total >= len(loaded.fixtures.ids["Patient"])
        assert not bundle.entry
    else:
        assert bundle.entry, f"{where}: no entries"


def test_history_bundles(loaded):
    pid = loaded.fixtures.ids["Patient"][0]
    for path, min_entries in [
        (f"Patient/{pid}/_history", 1),
        ("Patient/_history?_count=10", 10),
        ("Observation/_history?_count=25", 25),
        ("_history?_count=50", 50),
    ]:
        where = f"GET /fhir/{path}"
        resp = loaded.server.get(path)
        assert resp.status_code == 200, f"{where}: {resp.status_code} {resp.text[:500]}"
        bundle = validate_r4(fhir_json(resp, where), "Bundle", where)
        assert bundle.type == "history"
        assert len(bundle.entry or []) >= min_entries, f"{where}: {len(bundle.entry or [])} entries"
        for e in bundle.entry:
            assert e.request is not None and e.response is not None


def _new_patient(family):
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Test"]}], "gender": "other"}


def test_transaction_response(server):
    patient_urn = f"urn:uuid:{uuid.uuid4()}"
    fixed_id = f"pytest-{uuid.uuid4().hex[:12]}"
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_urn,
                "resource": _new_patient("Transaction"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}], "text": "Body height"},
                    "subject": {"reference": patient_urn},
                    "valueQuantity": {
                        "value": 172.5,
                        "unit": "cm",
                        "system": "http://unitsofmeasure.org",
                        "code": "cm",
                    },
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "resource": {**_new_patient("Put"), "id": fixed_id},
                "request": {"method": "PUT", "url": f"Patient/{fixed_id}"},
            },
        ],
    }
    resp = server.post_json("", tx)
    where = "POST /fhir (transaction)"
    assert resp.status_code == 200, f"{where}: {resp.status_code} {resp.text[:1000]}"
    bundle = validate_r4(fhir_json(resp, where), "Bundle", where)
    assert bundle.type == "transaction-response"
    assert len(bundle.entry) == 3
    statuses = [e.response.status for e in bundle.entry]
    assert statuses[0].startswith("201") and statuses[1].startswith("201"), statuses
    assert statuses[2].split()[0] in ("200", "201"), statuses
    patient_loc = bundle.entry[0].response.location
    obs_loc = bundle.entry[1].response.location
    assert patient_loc and "/Patient/" in patient_loc, patient_loc
    patient_id = patient_loc.split("/Patient/", 1)[1].split("/")[0]
    obs_id = obs_loc.split("/Observation/", 1)[1].split("/")[0]
    obs = validate_r4(fhir_json(server.get(f"Observation/{obs_id}")), "Observation", f"Observation/{obs_id}")
    assert obs.subject.reference == f"Patient/{patient_id}"
    put = validate_r4(fhir_json(server.get(f"Patient/{fixed_id}")), "Patient", f"Patient/{fixed_id}")
    assert put.name[0].family == "Put"


def test_batch_response_with_failed_entry(server):
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": _new_patient("Batch"), "request": {"method": "POST", "url": "Patient"}},
            {
                # Observation.status and .code are required: this entry must fail alone.
                "resource": {"resourceType": "Observation"},
                "request": {"method": "POST", "url": "Observation"},
            },
            {"request": {"method": "GET", "url": "Patient/pytest-no-such-patient"}},
        ],
    }
    resp = server.post_json("", batch)
    where = "POST /fhir (batch)"
    assert resp.status_code == 200, f"{where}: {resp.status_code} {resp.text[:1000]}"
    bundle = validate_r4(fhir_json(resp, where), "Bundle", where)
    assert bundle.type == "batch-response"
    assert len(bundle.entry) == 3
    assert bundle.entry[0].response.status.startswith("201")
    for failed, code in [(bundle.entry[1], "400"), (bundle.entry[2], "404")]:
        assert failed.response.status.startswith(code), failed.response.status
        assert failed.response.outcome is not None, "failed batch entry has no outcome"
        assert failed.response.outcome.resource_type == "OperationOutcome"


def test_write_read_history_cycle(server):
    where = "POST /fhir/Patient"
    created = server.post_json("Patient", _new_patient("Cycle"), headers={"Prefer": "return=representation"})
    assert created.status_code == 201, f"{where}: {created.status_code} {created.text[:500]}"
    location = created.headers.get("Location", "")
    assert "/Patient/" in location, f"Location {location!r}"
    patient = validate_r4(fhir_json(created, where), "Patient", where)
    pid = patient.id
    assert patient.meta.versionId == "1"

    body = fhir_json(created)
    body["gender"] = "female"
    where = f"PUT /fhir/Patient/{pid}"
    updated = server.put_json(f"Patient/{pid}", body, headers={"If-Match": 'W/"1"'})
    assert updated.status_code == 200, f"{where}: {updated.status_code} {updated.text[:500]}"
    assert validate_r4(fhir_json(updated, where), "Patient", where).meta.versionId == "2"

    # A stale If-Match is a version conflict with an OperationOutcome.
    stale = server.put_json(f"Patient/{pid}", body, headers={"If-Match": 'W/"1"'})
    assert stale.status_code in (409, 412), f"stale If-Match: {stale.status_code}"
    validate_r4(fhir_json(stale), "OperationOutcome", f"{where} with a stale If-Match")

    v1 = server.get(f"Patient/{pid}/_history/1")
    assert v1.status_code == 200
    assert validate_r4(fhir_json(v1), "Patient", "vread v1").gender == "other"

    deleted = server.request("DELETE", f"Patient/{pid}")
    assert deleted.status_code in (200, 204), f"DELETE: {deleted.status_code} {deleted.text[:500]}"
    if deleted.content:
        validate_r4(fhir_json(deleted), "OperationOutcome", f"DELETE /fhir/Patient/{pid}")

    gone = server.get(f"Patient/{pid}")
    assert gone.status_code == 410, f"read after delete: {gone.status_code}"
    validate_r4(fhir_json(gone), "OperationOutcome", f"GET /fhir/Patient/{pid} after delete")

    where = f"GET /fhir/Patient/{pid}/_history"
    hist = server.get(f"Patient/{pid}/_history")
    assert hist.status_code == 200
    bundle = validate_r4(fhir_json(hist, where), "Bundle", where)
    assert bundle.type == "history"
    methods = [e.request.method for e in bundle.entry]
    assert sorted(methods) == ["DELETE", "POST", "PUT"], methods
    assert methods[0] == "DELETE", f"history is not newest first: {methods}"


def test_patient_everything(loaded):
    fixtures = loaded.fixtures
    pid = fixtures.ids["Patient"][0]
    from portico_support import patient_of

    expected = {("Patient", pid)} | {key for key, res in fixtures.resources.items() if patient_of(res) == pid}
    matches, includes, _ = search_all(loaded.server, f"Patient/{pid}/$everything?_count=100")
    got = {(e.resource.resource_type, e.resource.id) for e in matches + includes}
    missing = expected - got
    assert not missing, f"$everything misses {len(missing)} of {len(expected)}, e.g. {sorted(missing)[:3]}"


def test_prefer_return_variants(server):
    minimal = server.post_json("Patient", _new_patient("Minimal"), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201, minimal.text[:500]
    assert "/Patient/" in minimal.headers.get("Location", "")
    assert not minimal.content, f"return=minimal sent a body: {minimal.text[:200]}"
    where = "POST /fhir/Patient with Prefer: return=OperationOutcome"
    oo = server.post_json("Patient", _new_patient("Outcome"), headers={"Prefer": "return=OperationOutcome"})
    assert oo.status_code == 201, oo.text[:500]
    validate_r4(fhir_json(oo, where), "OperationOutcome", where)
