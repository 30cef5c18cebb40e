"""The SMART on FHIR Python client (`fhirclient`, R4 models) works against Portico:
capability statement, reads, searches with paging, and writes."""

from __future__ import annotations

import warnings

import pytest
from fhirclient import client as fhir_client
from fhirclient.models.bundle import Bundle
from fhirclient.models.condition import Condition
from fhirclient.models.encounter import Encounter
from fhirclient.models.immunization import Immunization
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient


@pytest.fixture()
def smart(server):
    client = fhir_client.FHIRClient(settings={"app_id": "portico-tests", "api_base": server.base})
    return client


def _busiest(fixtures, rtype):
    return max(fixtures.by_patient, key=lambda p: (fixtures.by_patient[p][rtype], p))


def test_fhirclient_capability_statement(smart):
    smart.server.get_capability()
    cs = smart.server.capabilityStatement
    assert cs is not None
    assert cs.fhirVersion == "4.0.1"
    assert any(r.mode == "server" for r in cs.rest)


def test_fhirclient_read_patient(loaded, smart):
    pid = loaded.fixtures.ids["Patient"][0]
    original = loaded.fixtures.resources[("Patient", pid)]
    patient = Patient.read(pid, smart.server)
    assert patient.id == pid
    assert patient.name[0].family == original["name"][0]["family"]
    assert patient.birthDate.isostring == original["birthDate"]
    assert patient.gender == original["gender"]
    # Round trip through the client's model keeps every element of the original.
    as_json = patient.as_json()
    missing = set(original) - set(as_json)
    assert not missing, f"elements lost: {missing}"


def test_fhirclient_read_each_type(loaded, smart):
    import importlib

    for rtype, ids in sorted(loaded.fixtures.ids.items()):
        module = importlib.import_module(f"fhirclient.models.{rtype.lower()}")
        model = getattr(module, rtype)
        resource = model.read(ids[0], smart.server)
        assert resource.id == ids[0]
        assert resource.resource_type == rtype


def test_fhirclient_search_follows_paging(loaded, smart):
    pid = _busiest(loaded.fixtures, "Observation")
    expected = loaded.fixtures.by_patient[pid]["Observation"]
    search = Observation.where(struct={"patient": pid, "_count": "10"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # perform_resources is deprecated in 4.x
        resources = search.perform_resources(smart.server)
    assert expected > 10, "need more than one page"
    assert len(resources) == expected
    assert len({r.id for r in resources}) == expected
    assert all(isinstance(r, Observation) for r in resources)
    assert all(r.subject.reference == f"Patient/{pid}" for r in resources)

    bundles = list(Observation.where(struct={"patient": pid, "_count": "10"}).perform_iter(smart.server))
    assert len(bundles) == -(-expected // 10)
    assert all(isinstance(b, Bundle) and b.type == "searchset" for b in bundles)


@pytest.mark.parametrize("model", [Condition, Encounter, Immunization])
def test_fhirclient_search_by_patient(loaded, smart, model):
    rtype = model.resource_type
    pid = _busiest(loaded.fixtures, rtype)
    expected = loaded.fixtures.by_patient[pid][rtype]
    found = list(model.where(struct={"patient": pid, "_count": "7"}).perform_resources_iter(smart.server))
    assert len(found) == expected, f"{rtype}?patient={pid}: {len(found)} of {expected}"


def test_fhirclient_search_by_code(loaded, smart):
    fixtures = loaded.fixtures
    pid = _busiest(fixtures, "Observation")
    counts: dict[tuple[str, str], int] = {}
    for (rtype, _rid), res in fixtures.resources.items():
        if rtype != "Observation" or not res.get("subject", {}).get("reference", "").endswith(pid):
            continue
        for coding in res.get("code", {}).get("coding", []):
            key = (coding["system"], coding["code"])
            counts[key] = counts.get(key, 0) + 1
    (system, code), expected = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    found = list(
        Observation.where(struct={"patient": pid, "code": f"{system}|{code}", "_count": "5"}).perform_resources_iter(
            smart.server
        )
    )
    assert len(found) == expected, f"Observation?patient={pid}&code={system}|{code}"
    assert all(any(c.code == code for c in r.code.coding) for r in found)


def test_fhirclient_search_with_modifiers(loaded, smart):
    pid = loaded.fixtures.ids["Patient"][0]
    family = loaded.fixtures.resources[("Patient", pid)]["name"][0]["family"]
    found = list(Patient.where(struct={"family": family, "_count": "50"}).perform_resources_iter(smart.server))
    assert pid in {p.id for p in found}
    exact = list(Patient.where(struct={"family:exact": family}).perform_resources_iter(smart.server))
    assert pid in {p.id for p in exact}


def test_fhirclient_create_update_delete(server, smart):
    patient = Patient({"name": [{"family": "FhirClient", "given": ["Smart"]}], "gender": "unknown"})
    created = patient.create(smart.server)
    assert created is not None and created.get("id"), f"create returned {created!r}"
    pid = created["id"]
    fetched = Patient.read(pid, smart.server)
    assert fetched.name[0].family == "FhirClient"
    fetched.gender = "female"
    fetched.update(smart.server)
    assert Patient.read(pid, smart.server).gender == "female"
    fetched.delete(smart.server)
    gone = server.get(f"Patient/{pid}")
    assert gone.status_code == 410
