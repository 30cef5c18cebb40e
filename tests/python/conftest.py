"""Session fixtures: one Portico server per storage backend (SQLite file, throw-away
PostgreSQL database), loaded with ~10 Synthea R4 bundles through `portico import`.

Skip rules (mirroring the Rust harness):
  * no ../shared/fixtures/synthea-r4 -> data-dependent tests skip, unless
    PORTICO_REQUIRE_SHARED=1, which makes them fail;
  * PostgreSQL unreachable on 127.0.0.1:5432 -> the PostgreSQL variants skip, unless
    PORTICO_REQUIRE_POSTGRES=1, which makes them fail.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from portico_support import (
    PG_ADMIN_URL,
    SYNTHEA_DIR,
    Backend,
    PorticoServer,
    pg_create_database,
    pg_drop_database,
    portico_bin,
    required,
    run_import,
    select_fixtures,
)


@pytest.fixture(scope="session")
def fixture_set():
    """The selected Synthea bundles and what they contain, or None when the folder is absent."""
    if not SYNTHEA_DIR.is_dir():
        return None
    return select_fixtures()


def _missing_fixtures_reason() -> str:
    return f"Synthea R4 fixtures not found at {SYNTHEA_DIR} (the shared/ folder beside the checkout)"


@pytest.fixture(scope="session")
def binary() -> Path:
    path = portico_bin()
    if not path.is_file():
        pytest.fail(
            f"Portico binary not found at {path}: build it with `cargo build -p portico` "
            "or set PORTICO_BIN (scripts/test does both)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request, binary, fixture_set):
    kind = request.param
    log_dir = Path(tempfile.mkdtemp(prefix=f"portico-pytest-{kind}-"))
    pg_name = None
    if kind == "sqlite":
        database_url = str(log_dir / "portico.db")
    else:
        try:
            pg_name, database_url = pg_create_database()
        except Exception as e:  # noqa: BLE001 - any connection problem means "unreachable"
            shutil.rmtree(log_dir, ignore_errors=True)
            message = f"PostgreSQL not reachable at {PG_ADMIN_URL} ({type(e).__name__}: {e})"
            if required("PORTICO_REQUIRE_POSTGRES"):
                pytest.fail(f"{message}; PORTICO_REQUIRE_POSTGRES=1", pytrace=False)
            pytest.skip(f"{message}; set PORTICO_REQUIRE_POSTGRES=1 to make this a failure")
    server = PorticoServer(database_url, log_dir)
    try:
        if fixture_set is not None:
            run_import(database_url, fixture_set.files, log_dir)
            missing = None
        else:
            missing = _missing_fixtures_reason()
        server.start()
        yield Backend(kind, server, fixture_set, missing)
    finally:
        server.stop()
        if pg_name is not None:
            pg_drop_database(pg_name)
        shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture()
def server(backend) -> PorticoServer:
    """A running server (tests that do not need the fixture data)."""
    return backend.server


@pytest.fixture()
def loaded(backend) -> Backend:
    """A running server with the Synthea bundles imported."""
    if backend.fixtures is None:
        if required("PORTICO_REQUIRE_SHARED"):
            pytest.fail(f"{backend.fixtures_missing_reason}; PORTICO_REQUIRE_SHARED=1", pytrace=False)
        pytest.skip(f"{backend.fixtures_missing_reason}; set PORTICO_REQUIRE_SHARED=1 to make this a failure")
    return backend
