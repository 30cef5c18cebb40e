"""Helpers shared by the Portico end-to-end tests: paths, skip rules, the fixture
selection, a running `portico serve` process, and FHIR R4 validation."""

from __future__ import annotations

import collections
import gzip
import json
import os
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = Path(os.environ.get("PORTICO_SHARED_DIR", REPO_ROOT.parent / "shared"))
SYNTHEA_DIR = SHARED_DIR / "fixtures" / "synthea-r4"
PG_ADMIN_URL = os.environ.get("PORTICO_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")

# Every resource type in the Synthea R4 set; the selection below covers all of them.
EXPECTED_TYPES = (
    "Patient",
    "Observation",
    "Encounter",
    "Condition",
    "Claim",
    "ExplanationOfBenefit",
    "Procedure",
    "Immunization",
    "MedicationRequest",
    "DiagnosticReport",
    "CarePlan",
    "Goal",
    "Organization",
    "Practitioner",
    "AllergyIntolerance",
    "ImagingStudy",
)
FIXTURE_FILE_COUNT = 10


def required(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes")


def portico_bin() -> Path:
    env = os.environ.get("PORTICO_BIN")
    path = Path(env) if env else REPO_ROOT / "target" / "debug" / "portico"
    if not path.is_absolute():
        path = (REPO_ROOT / path) if not path.exists() else path.resolve()
    return path


# ---------------------------------------------------------------------------------------------
# Fixture data


@dataclass
class FixtureSet:
    files: list[Path]
    ids: dict[str, list[str]]  # resource type -> ids, in file order
    by_patient: dict[str, collections.Counter]  # patient id -> resource type -> count
    resources: dict[tuple[str, str], dict] = field(repr=False)  # (type, id) -> original

    @property
    def total(self) -> int:
        return len(self.resources)


def _bundle_resources(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        bundle = json.load(fh)
    return [e["resource"] for e in bundle.get("entry", []) if "resource" in e]


def patient_of(resource: dict) -> str | None:
    """The id of the Patient a fixture resource belongs to (its `subject` or `patient`)."""
    for element in ("subject", "patient"):
        ref = resource.get(element)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            # Fixture references are `urn:uuid:<id>`; import keeps ids.
            return ref["reference"].rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    return None


def select_fixtures() -> FixtureSet:
    """The first FIXTURE_FILE_COUNT bundles in name order, plus (if needed) the next bundles
    that add a resource type still missing, so every type in EXPECTED_TYPES is loaded."""
    files = sorted(SYNTHEA_DIR.glob("*.json.gz"))
    if not files:
        raise RuntimeError(f"no *.json.gz bundles in {SYNTHEA_DIR}")
    chosen: list[Path] = []
    seen: set[str] = set()
    contents: dict[Path, list[dict]] = {}
    for i, path in enumerate(files):
        resources = _bundle_resources(path)
        types = {r["resourceType"] for r in resources}
        if i < FIXTURE_FILE_COUNT or (types - seen) & set(EXPECTED_TYPES):
            chosen.append(path)
            contents[path] = resources
            seen |= types
        if i >= FIXTURE_FILE_COUNT - 1 and set(EXPECTED_TYPES) <= seen:
            break
    ids: dict[str, list[str]] = collections.defaultdict(list)
    by_patient: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    originals: dict[tuple[str, str], dict] = {}
    for path in chosen:
        for r in contents[path]:
            key = (r["resourceType"], r["id"])
            if key not in originals:
                ids[r["resourceType"]].append(r["id"])
            originals[key] = r
            patient = patient_of(r)
            if patient is not None:
                by_patient[patient][r["resourceType"]] += 1
    return FixtureSet(chosen, dict(ids), dict(by_patient), originals)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def pg_admin_connect():
    import psycopg

    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)


def pg_create_database() -> tuple[str, str]:
    name = f"portico_pytest_{uuid.uuid4().hex[:16]}"
    with pg_admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def pg_drop_database(name: str) -> None:
    with pg_admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------------------------------
# The server process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_import(database_url: str, paths: list[Path], log_dir: Path) -> str:
    cmd = [str(portico_bin()), "import", "--quiet", "--database-url", database_url, *map(str, paths)]
    env = dict(os.environ, PORTICO_LOG=os.environ.get("PORTICO_LOG", "warn"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
    (log_dir / "import.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(
            f"portico import failed with exit code {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


class PorticoServer:
    """`portico serve` on a free loopback port."""

    def __init__(
        self,
        database_url: str,
        log_dir: Path,
        extra_args: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ):
        # The FHIR-core suites read without tokens, so their servers run in the development
        # open mode; the SMART and enforcement suites pass their own arguments.
        self.extra_args = ["--dev-open-access"] if extra_args is None else extra_args
        self.extra_env = extra_env or {}
        self.database_url = database_url
        self.log_path = log_dir / "serve.log"
        self.proc: subprocess.Popen | None = None
        self.origin = ""
        self.base = ""
        self.http = requests.Session()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def start(self) -> "PorticoServer":
        last_error = ""
        for _attempt in range(3):
            port = free_port()
            self.origin = f"http://127.0.0.1:{port}"
            self.base = f"{self.origin}/fhir"
            log = open(self.log_path, "ab")
            env = dict(os.environ, PORTICO_LOG=os.environ.get("PORTICO_LOG", "warn"), **self.extra_env)
            self.proc = subprocess.Popen(
                [str(portico_bin()), "serve", "--database-url", self.database_url, "--listen", f"127.0.0.1:{port}", *self.extra_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                # Relative defaults (bulk export files: portico-data/bulk beside a PostgreSQL
                # server) land in the test's own folder, never in the checkout.
                cwd=str(self.log_path.parent),
            )
            log.close()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last_error = f"portico serve exited with code {self.proc.returncode}"
                    break
                try:
                    if self.http.get(f"{self.origin}/readyz", timeout=2).status_code == 200:
                        return self
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            else:
                last_error = "portico serve was not ready within 60 s"
                self.stop()
        raise RuntimeError(f"{last_error}\n--- server log ---\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None
        self.http.close()

    # HTTP helpers -----------------------------------------------------------------------------

    def url(self, path: str) -> str:
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return f"{self.base}/{path.lstrip('/')}"

    def request(self, method: str, path: str, **kw) -> requests.Response:
        headers = {"Accept": "application/fhir+json", **kw.pop("headers", {})}
        return self.http.request(method, self.url(path), headers=headers, timeout=60, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post_json(self, path: str, body: dict, **kw) -> requests.Response:
        headers = {"Content-Type": "application/fhir+json", **kw.pop("headers", {})}
        return self.request("POST", path, data=json.dumps(body), headers=headers, **kw)

    def put_json(self, path: str, body: dict, **kw) -> requests.Response:
        headers = {"Content-Type": "application/fhir+json", **kw.pop("headers", {})}
        return self.request("PUT", path, data=json.dumps(body), headers=headers, **kw)


@dataclass
class Backend:
    name: str
    server: PorticoServer
    fixtures: FixtureSet | None
    fixtures_missing_reason: str | None


# ---------------------------------------------------------------------------------------------
# FHIR R4 validation with fhir.resources (R4 4.0.1 models)


def r4_model(resource_type: str):
    import fhir.resources

    assert fhir.resources.__fhir_version__ == "4.0.1", fhir.resources.__fhir_version__
    return fhir.resources.get_fhir_model_class(resource_type)


def validate_r4(doc: dict, expected_type: str | None = None, where: str = ""):
    """Parse `doc` with the fhir.resources R4 model for its resourceType; fail the test with the
    validator's message (and where the document came from) if it does not validate."""
    import pytest
    from pydantic import ValidationError

    rtype = doc.get("resourceType") if isinstance(doc, dict) else None
    if expected_type is not None and rtype != expected_type:
        pytest.fail(f"{where}: expected resourceType {expected_type}, got {rtype!r}: {str(doc)[:500]}")
    if not rtype:
        pytest.fail(f"{where}: no resourceType in {str(doc)[:500]}")
    try:
        model = r4_model(rtype)
    except KeyError:
        pytest.fail(f"{where}: '{rtype}' is not an R4 resource type")
    try:
        return model.parse_obj(doc)
    except ValidationError as e:
        pytest.fail(f"{where}: {rtype} does not validate as FHIR R4 (fhir.resources):\n{e}", pytrace=False)


def fhir_json(resp: requests.Response, where: str = "") -> dict:
    import pytest

    ctype = resp.headers.get("Content-Type", "")
    if not ctype.startswith("application/fhir+json"):
        pytest.fail(f"{where}: Content-Type is {ctype!r}, not application/fhir+json (status {resp.status_code})")
    try:
        return resp.json()
    except ValueError:
        pytest.fail(f"{where}: body is not JSON: {resp.text[:500]}")


# ---------------------------------------------------------------------------------------------
# Bulk Data client


def run_export(server, path: str, timeout_s: float = 120.0) -> dict:
    http = requests.Session()
    kick = http.get(
        server.url(path),
        headers={"Accept": "application/fhir+json", "Prefer": "respond-async"},
        timeout=30,
    )
    assert kick.status_code == 202, kick.text[:500]
    status_url = kick.headers["Content-Location"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        poll = http.get(status_url, timeout=30)
        if poll.status_code == 200:
            assert poll.headers["Content-Type"].startswith("application/json")
            return poll.json()
        assert poll.status_code in (202, 429), f"{poll.status_code}: {poll.text[:500]}"
        # A well-behaved client waits as long as the server asks.
        time.sleep(min(float(poll.headers.get("Retry-After", "1")), 2.0))
    raise AssertionError(f"the export at {status_url} did not finish within {timeout_s} s")
