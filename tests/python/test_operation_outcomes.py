"""Error responses are FHIR R4 OperationOutcomes with the right HTTP status."""

from __future__ import annotations

import pytest

from portico_support import fhir_json, validate_r4

JSON = {"Content-Type": "application/fhir+json"}

CASES = [
    # (id, method, path, request headers, body, expected status)
    ("read-unknown-id", "GET", "Patient/pytest-does-not-exist", None, None, 404),
    ("unknown-type-search", "GET", "NotAResourceType", None, None, 404),
    ("unknown-type-read", "GET", "NotAResourceType/123", None, None, 404),
    ("unknown-endpoint", "GET", "Patient/x/y/z/w", None, None, 404),
    ("unknown-operation", "GET", "Patient/x/$no-such-operation", None, None, 404),
    ("vread-bad-version", "GET", "Patient/x/_history/abc", None, None, 404),
    ("everything-unknown-patient", "GET", "Patient/pytest-does-not-exist/$everything", None, None, 404),
    ("bad-date-param", "GET", "Patient?birthdate=not-a-date", None, None, 400),
    ("unknown-search-param", "GET", "Patient?no-such-parameter=1", None, None, 400),
    ("negative-count", "GET", "Observation?_count=-1", None, None, 400),
    ("bad-include", "GET", "Observation?_include=Patient:organization", None, None, 400),
    ("bad-summary", "GET", "Patient?_summary=nonsense", None, None, 400),
    ("xml-format", "GET", "Patient?_format=xml", None, None, 400),
    ("history-bad-param", "GET", "_history?no-such-parameter=1", None, None, 400),
    ("history-bad-since", "GET", "Patient/_history?_since=yesterday", None, None, 400),
    ("create-malformed-json", "POST", "Patient", JSON, "{not json", 400),
    ("create-wrong-type", "POST", "Patient", JSON, '{"resourceType":"Observation","status":"final","code":{"text":"x"}}', 400),
    ("create-unknown-element", "POST", "Patient", JSON, '{"resourceType":"Patient","notAnElement":1}', 400),
    ("create-bad-date", "POST", "Patient", JSON, '{"resourceType":"Patient","birthDate":"1990-13-45"}', 400),
    ("create-missing-required", "POST", "Observation", JSON, '{"resourceType":"Observation"}', 400),
    ("update-id-mismatch", "PUT", "Patient/pytest-a", JSON, '{"resourceType":"Patient","id":"pytest-b"}', 400),
    ("update-without-id", "PUT", "Patient/pytest-a", JSON, '{"resourceType":"Patient"}', 400),
    ("base-post-not-bundle", "POST", "", JSON, '{"resourceType":"Patient"}', 400),
    ("base-post-collection", "POST", "", JSON, '{"resourceType":"Bundle","type":"collection"}', 400),
    ("search-post-wrong-media-type", "POST", "Patient/_search", {"Content-Type": "text/plain"}, "name=x", 415),
    ("create-wrong-media-type", "POST", "Patient", {"Content-Type": "text/plain"}, '{"resourceType":"Patient"}', 415),
    ("create-empty-body", "POST", "Patient", JSON, "", 400),
    ("create-json-array", "POST", "Patient", JSON, "[1]", 400),
    ("create-bad-if-none-exist", "POST", "Patient", {**JSON, "If-None-Exist": "no-such-parameter=1"}, '{"resourceType":"Patient"}', 400),
    # Methods a route does not take: still an OperationOutcome, not an empty 405.
    ("patch-not-allowed", "PATCH", "Patient/pytest-a", {"Content-Type": "application/json-patch+json"}, "[]", 405),
    ("delete-metadata-not-allowed", "DELETE", "metadata", None, None, 405),
]


@pytest.mark.parametrize(
    "method,path,headers,body,status", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_error_is_operation_outcome(server, method, path, headers, body, status):
    headers = dict(headers or {})
    where = f"{method} /fhir/{path}"
    resp = server.request(method, path, data=body.encode() if body is not None else None, headers=headers)
    assert resp.status_code == status, f"{where}: expected {status}, got {resp.status_code}: {resp.text[:500]}"
    outcome = validate_r4(fhir_json(resp, where), "OperationOutcome", where)
    assert outcome.issue, f"{where}: OperationOutcome without issues"
    assert any(i.severity in ("error", "fatal") for i in outcome.issue), f"{where}: no error issue"
    assert all(i.code for i in outcome.issue)


def test_transaction_failure_is_operation_outcome(server):
    """A transaction with one bad entry is rolled back as a whole and answered with an
    OperationOutcome (not a transaction-response)."""
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0a4c3d4e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
                "resource": {"resourceType": "Patient", "name": [{"family": "RolledBack"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": {"resourceType": "Observation"}, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    where = "POST /fhir (transaction with an invalid entry)"
    resp = server.post_json("", tx)
    assert 400 <= resp.status_code < 500, f"{where}: {resp.status_code} {resp.text[:500]}"
    validate_r4(fhir_json(resp, where), "OperationOutcome", where)
    found = server.get("Patient?family=RolledBack")
    assert found.status_code == 200
    assert not found.json().get("entry"), "the failed transaction's Patient was stored"


def test_body_too_large_is_operation_outcome(server):
    """The default limit is 16 MiB (--max-body-bytes); a larger body gets a 413 OperationOutcome."""
    body = b'{"resourceType":"Patient"}' + b" " * (16 * 1024 * 1024 + 1)
    where = "POST /fhir/Patient with a 16 MiB + 27 B body"
    resp = server.request("POST", "Patient", data=body, headers={"Content-Type": "application/fhir+json"})
    assert resp.status_code == 413, f"{where}: {resp.status_code} {resp.text[:300]}"
    validate_r4(fhir_json(resp, where), "OperationOutcome", where)
