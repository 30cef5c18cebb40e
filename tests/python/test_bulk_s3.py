"""Bulk export into S3-compatible object storage: `portico serve` with `[bulk] storage =
"s3://bucket/prefix"` and the usual `AWS_*` variables, against moto's S3 server (a real HTTP
S3 implementation, run in this process). The export must land in the bucket under the prefix,
be downloadable through Portico with the same bytes, use several files when a type is larger
than `resources_per_file` and multipart uploads for files over the 10 MiB upload buffer, and
disappear from the bucket when the client deletes the job."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from portico_support import SYNTHEA_DIR, PorticoServer, required, run_export, run_import, validate_r4

BUCKET = "portico-exports"
PREFIX = "bulk/test"


@pytest.fixture(scope="module")
def s3():
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="portico-test",
        aws_secret_access_key="portico-test-secret",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    try:
        yield endpoint, client
    finally:
        moto.stop()


@pytest.fixture(scope="module")
def s3_server(s3, binary, fixture_set):
    endpoint, _client = s3
    if fixture_set is None:
        message = f"Synthea R4 fixtures not found at {SYNTHEA_DIR}"
        if required("PORTICO_REQUIRE_SHARED"):
            pytest.fail(f"{message}; PORTICO_REQUIRE_SHARED=1", pytrace=False)
        pytest.skip(f"{message}; set PORTICO_REQUIRE_SHARED=1 to make this a failure")
    log_dir = Path(tempfile.mkdtemp(prefix="portico-pytest-s3-"))
    database_url = str(log_dir / "portico.db")
    # The 40 largest bundles (~30k resources): ExplanationOfBenefit at 2,500 per file makes a first
    # file of ~13 MB (a multipart upload) and Observation several files.
    largest = sorted(SYNTHEA_DIR.glob("*.json.gz"), key=lambda p: (-p.stat().st_size, p.name))[:40]
    run_import(database_url, largest, log_dir)
    config = log_dir / "portico.toml"
    config.write_text(
        "[bulk]\n"
        f'storage = "s3://{BUCKET}/{PREFIX}"\n'
        "resources_per_file = 2500\n"
        "min_poll_interval_ms = 200\n"
    )
    server = PorticoServer(
        database_url,
        log_dir,
        ["--dev-open-access", "--config", str(config)],
        extra_env={
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "portico-test",
            "AWS_SECRET_ACCESS_KEY": "portico-test-secret",
            "AWS_REGION": "us-east-1",
        },
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(log_dir, ignore_errors=True)


def bucket_keys(client, prefix: str) -> dict[str, int]:
    keys: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            keys[item["Key"]] = item["Size"]
    return keys


def test_export_lands_in_the_bucket_and_downloads_through_portico(s3, s3_server):
    _endpoint, client = s3
    manifest = run_export(s3_server, "$export")
    job = manifest["output"][0]["url"].split("/bulk/files/")[1].split("/")[0]
    stored = bucket_keys(client, f"{PREFIX}/{job}/")
    assert stored, f"nothing under s3://{BUCKET}/{PREFIX}/{job}/"
    observation_files = [o for o in manifest["output"] if o["type"] == "Observation"]
    assert len(observation_files) > 1, "a type larger than resources_per_file is split into files"
    etags = {key: client.head_object(Bucket=BUCKET, Key=key)["ETag"] for key in stored}
    multipart = [key for key, etag in etags.items() if "-" in etag]
    assert multipart, f"no file went up as a multipart upload: {max(stored.values())} bytes at most"
    total = 0
    for item in manifest["output"]:
        name = item["url"].rsplit("/", 1)[1]
        key = f"{PREFIX}/{job}/{name}"
        assert key in stored, f"{key} is not in the bucket: {sorted(stored)[:5]}"
        resp = requests.get(item["url"], timeout=60)
        assert resp.status_code == 200, resp.text[:300]
        # Portico streams the object as stored.
        direct = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert resp.content == direct
        assert int(resp.headers["Content-Length"]) == stored[key]
        lines = [line for line in resp.text.split("\n") if line]
        assert len(lines) == item["count"]
        total += len(lines)
        for n, line in enumerate(lines[:50]):
            validate_r4(json.loads(line), item["type"], f"{name} line {n + 1}")
    counted = 0
    for t in {o["type"] for o in manifest["output"]}:
        resp = s3_server.get(t, params={"_summary": "count"})
        assert resp.status_code == 200, resp.text[:300]
        counted += resp.json()["total"]
    assert total == counted


def test_deleting_the_job_removes_its_objects(s3, s3_server):
    _endpoint, client = s3
    manifest = run_export(s3_server, "Patient/$export?_type=Patient,Condition")
    first = manifest["output"][0]["url"]
    job = first.split("/bulk/files/")[1].split("/")[0]
    assert bucket_keys(client, f"{PREFIX}/{job}/")
    status_url = f"{s3_server.origin}/bulk/jobs/{job}"
    assert requests.delete(status_url, timeout=30).status_code == 202
    assert bucket_keys(client, f"{PREFIX}/{job}/") == {}
    assert requests.get(first, timeout=30).status_code == 404
    assert requests.get(status_url, timeout=30).status_code == 404
