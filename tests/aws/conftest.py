"""AWS fixtures on one in-process moto server: endpoint, environment, clients, a cache table and an S3 bucket."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import boto3
import pytest
from moto.server import ThreadedMotoServer

from pss_ops import storage
from pss_ops.features.cache.dynamodb import create_table

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def unique_name(prefix: str) -> str:
    """A lowercase name no other test of the session uses (valid for S3 buckets and DynamoDB tables)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _configure(endpoint: str, config: dict[str, Any]) -> dict[str, Any]:
    """POST a moto config document to the server's control API; returns the config now in force."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/config",
        data=json.dumps(config).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Endpoint URL (http://127.0.0.1:PORT) of a moto server shared by the whole session.

    Port 0 lets the OS choose a free port (no race with other processes); the bound port is read back.
    Batch runs in moto's simple mode (jobs succeed without Docker).  Moto keeps its state in-process
    for the whole session, so tests must use unique resource names (see `unique_name`) and clean up.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        applied = _configure(endpoint, {"batch": {"use_docker": False}})
        assert applied["batch"]["use_docker"] is False, applied
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point plain `boto3.client(...)` (and code under test that builds its own clients) at moto; returns the endpoint."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def aws_client(moto_server: str) -> Callable[[str], Any]:
    """Factory: `aws_client("batch")` is a boto3 client on the moto endpoint, independent of the environment."""

    def make(service: str) -> Any:
        return boto3.client(service, endpoint_url=moto_server, region_name=REGION, **CREDENTIALS)

    return make


@pytest.fixture
def dynamodb(aws_client: Callable[[str], Any]) -> Any:
    """A boto3 DynamoDB client on the moto endpoint."""
    return aws_client("dynamodb")


@pytest.fixture
def cache_table(dynamodb: Any) -> Iterator[str]:
    """Name of a fresh embedding-cache table (pss_ops.features.cache.dynamodb.create_table: pk + TTL), deleted afterwards."""
    name = unique_name("pss-cache")
    create_table(dynamodb, name)
    try:
        yield name
    finally:
        dynamodb.delete_table(TableName=name)


class S3Bucket(NamedTuple):
    """A test bucket: its name, its s3:// URI (for storage.join) and a boto3 client to inspect it with."""

    name: str
    uri: str
    client: Any


@pytest.fixture
def s3_bucket(moto_server: str, aws_client: Callable[[str], Any]) -> Iterator[S3Bucket]:
    """A fresh bucket, with pss_ops.storage's S3 filesystem pointed at moto for the test; emptied and deleted after."""
    client = aws_client("s3")
    name = unique_name("pss-test")
    client.create_bucket(Bucket=name)
    storage.set_s3_filesystem(
        storage.s3_filesystem(
            endpoint_url=moto_server,
            region=REGION,
            access_key=CREDENTIALS["aws_access_key_id"],
            secret_key=CREDENTIALS["aws_secret_access_key"],
        )
    )
    try:
        yield S3Bucket(name, f"s3://{name}", client)
    finally:
        storage.set_s3_filesystem(None)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=obj["Key"])
        client.delete_bucket(Bucket=name)
