"""Storage URI layer: atomic local writes, streamed Parquet, and an s3:// round trip against moto."""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from pss_ops import storage

BUCKET = "pss-unit-test"


def table(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "item_id": [f"amazon:b{i:09d}" for i in range(start, start + n)],
            "score": pa.array([i / 7 for i in range(start, start + n)], pa.float32()),
        }
    )


def leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_write_bytes_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "dir" / "blob.bin"
    storage.write_bytes(str(target), b"\x00\x01payload")
    assert target.read_bytes() == b"\x00\x01payload"
    assert leftovers(target.parent, {"blob.bin"}) == []
    storage.write_bytes(str(target), b"second")
    assert storage.read_bytes(str(target)) == b"second"
    assert leftovers(target.parent, {"blob.bin"}) == []


def test_write_json_sorted_and_atomic(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    storage.write_json(str(target), {"b": 1, "a": [1, 2], "c": {"z": None}})
    assert storage.read_json(str(target)) == {"a": [1, 2], "b": 1, "c": {"z": None}}
    text = storage.read_text(str(target))
    assert text.index('"a"') < text.index('"b"') < text.index('"c"')
    assert text.endswith("\n")
    assert leftovers(tmp_path, {"summary.json"}) == []


def _failing_replace(*_: Any, **__: Any) -> None:
    raise OSError("disk full")


def test_write_bytes_failure_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "replace", _failing_replace)
    target = tmp_path / "blob.bin"
    with pytest.raises(OSError, match="disk full"):
        storage.write_bytes(str(target), b"data")
    assert not target.exists()
    assert leftovers(tmp_path, set()) == []


def test_write_json_failure_keeps_previous_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "manifest.json"
    storage.write_json(str(target), {"version": 1})
    monkeypatch.setattr(os, "replace", _failing_replace)
    with pytest.raises(OSError, match="disk full"):
        storage.write_json(str(target), {"version": 2})
    assert storage.read_json(str(target)) == {"version": 1}
    assert leftovers(tmp_path, {"manifest.json"}) == []


def test_write_bytes_failure_while_writing_keeps_previous_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "blob.bin"
    storage.write_bytes(str(target), b"old")

    def failing_fsync(_: int) -> None:
        raise OSError("io error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="io error"):
        storage.write_bytes(str(target), b"new content")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path, {"blob.bin"}) == []


def test_write_parquet_success_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "part-00000.parquet"
    storage.write_parquet(str(target), table(10))
    assert storage.read_parquet(str(target)).equals(table(10))
    assert storage.read_parquet(str(target), columns=["item_id"]).column_names == ["item_id"]
    assert leftovers(tmp_path, {"part-00000.parquet"}) == []


def test_write_parquet_failure_midway_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "part-00000.parquet"
    storage.write_parquet(str(target), table(5))
    real_write_table = pq.write_table

    def half_write(tbl: pa.Table, where: Any, **kwargs: Any) -> None:
        real_write_table(tbl.slice(0, 1), where, **kwargs)  # a partial file exists on disk...
        raise OSError("writer crashed")  # ...when the writer dies

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(OSError, match="writer crashed"):
        storage.write_parquet(str(target), table(50, start=100))
    assert storage.read_parquet(str(target)).equals(table(5))
    assert leftovers(tmp_path, {"part-00000.parquet"}) == []


def test_write_parquet_failure_on_replace_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "replace", _failing_replace)
    target = tmp_path / "new.parquet"
    with pytest.raises(OSError, match="disk full"):
        storage.write_parquet(str(target), table(3))
    assert not target.exists()
    assert leftovers(tmp_path, set()) == []


def test_write_parquet_batches_streams_tables_into_one_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "similar.parquet"
    schema = pa.schema([("item_id", pa.string()), ("score", pa.float32())])
    parts = [table(3), table(0, start=3), table(7, start=3), table(1, start=10)]
    # Columns out of order and score as float64 are selected and cast to the schema.
    parts[2] = pa.table({"score": parts[2]["score"].cast(pa.float64()), "item_id": parts[2]["item_id"]})
    rows = storage.write_parquet_batches(str(target), schema, iter(parts))
    assert rows == 11
    result = storage.read_parquet(str(target))
    assert result.schema == schema
    assert result.equals(table(11))
    assert storage.open_parquet(str(target)).metadata.num_row_groups >= 2
    assert leftovers(target.parent, {"similar.parquet"}) == []


def test_write_parquet_batches_failure_midway_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "similar.parquet"
    schema = pa.schema([("item_id", pa.string()), ("score", pa.float32())])

    def tables() -> Iterator[pa.Table]:
        yield table(4)
        raise RuntimeError("query step failed")

    with pytest.raises(RuntimeError, match="query step failed"):
        storage.write_parquet_batches(str(target), schema, tables())
    assert not target.exists()
    assert leftovers(tmp_path, set()) == []


def test_local_join_exists_absolute(tmp_path: Path) -> None:
    uri = storage.join(str(tmp_path), "run", "a.json")
    assert uri == str(tmp_path / "run" / "a.json")
    assert not storage.exists(uri)
    storage.write_json(uri, [1])
    assert storage.exists(uri)
    assert storage.absolute(uri) == uri


def test_list_dir_local(tmp_path: Path) -> None:
    assert storage.list_dir(str(tmp_path / "missing")) == []
    storage.write_bytes(str(tmp_path / "b" / "x.bin"), b"1")
    storage.write_bytes(str(tmp_path / "a.json"), b"2")
    assert storage.list_dir(str(tmp_path)) == ["a.json", "b"]
    assert storage.list_dir(str(tmp_path / "a.json")) == []


def test_s3_join() -> None:
    assert storage.join("s3://bucket/runs/", "app", "/2024-05-01/", "summary.json") == "s3://bucket/runs/app/2024-05-01/summary.json"
    assert storage.join("s3://bucket", "x.parquet") == "s3://bucket/x.parquet"
    assert storage.absolute("s3://bucket/a/b") == "s3://bucket/a/b"
    assert storage.is_s3("s3://bucket/a") and not storage.is_s3("runs/s3/a")


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_client(moto_endpoint: str) -> Any:
    """A boto3 client on moto, to set up and inspect the bucket independently of pss_ops.storage."""
    return boto3.client(
        "s3", endpoint_url=moto_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )


@pytest.fixture
def s3_bucket(moto_endpoint: str, s3_client: Any) -> Iterator[str]:
    s3_client.create_bucket(Bucket=BUCKET)
    storage.set_s3_filesystem(
        storage.s3_filesystem(endpoint_url=moto_endpoint, region="us-east-1", access_key="testing", secret_key="testing")
    )
    try:
        yield f"s3://{BUCKET}"
    finally:
        storage.set_s3_filesystem(None)
        for obj in s3_client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
            s3_client.delete_object(Bucket=BUCKET, Key=obj["Key"])
        s3_client.delete_bucket(Bucket=BUCKET)


def s3_objects(client: Any) -> list[str]:
    """Keys of the objects in the bucket, without the empty "dir/" markers pyarrow puts after a delete or move."""
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", []) if not o["Key"].endswith("/"))


def test_s3_bytes_round_trip_and_exists(s3_bucket: str) -> None:
    uri = storage.join(s3_bucket, "runs", "app", "blob.bin")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"\x00\xffbytes")
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b"\x00\xffbytes"
    storage.write_text(uri, "überschrieben")
    assert storage.read_text(uri) == "überschrieben"
    assert not storage.exists(storage.join(s3_bucket, "runs", "app", "other.bin"))


def test_s3_list_dir(s3_bucket: str) -> None:
    assert storage.list_dir(storage.join(s3_bucket, "registry")) == []
    for key in ("registry/m1/spec.json", "registry/m1/model.safetensors", "registry/m2/spec.json", "registry/notes.txt", "registry2/x"):
        storage.write_bytes(storage.join(s3_bucket, key), b"x")
    assert storage.list_dir(storage.join(s3_bucket, "registry")) == ["m1", "m2", "notes.txt"]
    assert storage.list_dir(storage.join(s3_bucket, "registry/")) == ["m1", "m2", "notes.txt"]
    assert storage.list_dir(s3_bucket) == ["registry", "registry2"]


def test_s3_json_round_trip(s3_bucket: str) -> None:
    uri = storage.join(s3_bucket, "manifests", "plan.json")
    payload = {"rows": 4589, "partitions": ["p0", "p1"], "nested": {"ok": True}}
    storage.write_json(uri, payload)
    assert storage.read_json(uri) == payload


def test_s3_parquet_round_trip(s3_bucket: str, tmp_path: Path) -> None:
    uri = storage.join(s3_bucket, "parts", "part-00001.parquet")
    storage.write_parquet(uri, table(20))
    assert storage.exists(uri)
    assert storage.read_parquet(uri).equals(table(20))
    assert storage.read_parquet(uri, columns=["score"]).column_names == ["score"]
    assert storage.open_parquet(uri).metadata.num_rows == 20


def test_s3_parquet_batches(s3_bucket: str) -> None:
    uri = storage.join(s3_bucket, "similar.parquet")
    schema = pa.schema([("item_id", pa.string()), ("score", pa.float32())])
    assert storage.write_parquet_batches(uri, schema, [table(2), table(3, start=2)]) == 5
    assert storage.read_parquet(uri).equals(table(5))


def test_s3_write_failure_midway_keeps_previous_and_leaves_nothing(s3_bucket: str, s3_client: Any) -> None:
    uri = storage.join(s3_bucket, "parts", "similar.parquet")
    schema = pa.schema([("item_id", pa.string()), ("score", pa.float32())])
    storage.write_parquet(uri, table(5))

    def tables() -> Iterator[pa.Table]:
        yield table(4)
        raise RuntimeError("query step failed")

    # pyarrow's S3 stream completes its upload when closed on an error: the target must still not see it.
    with pytest.raises(RuntimeError, match="query step failed"):
        storage.write_parquet_batches(uri, schema, tables())
    assert storage.read_parquet(uri).equals(table(5))
    with pytest.raises(RuntimeError, match="query step failed"):
        storage.write_parquet_batches(storage.join(s3_bucket, "parts", "new.parquet"), schema, tables())
    assert s3_objects(s3_client) == ["parts/similar.parquet"]
    assert s3_client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_s3_writing_file_and_copy(s3_bucket: str, s3_client: Any, tmp_path: Path) -> None:
    uri = storage.join(s3_bucket, "report", "rejects.csv")
    with storage.writing_file(uri) as path:
        Path(path).write_text("row,item_id\n1,a\n")
        assert not storage.exists(uri)
    assert storage.read_text(uri) == "row,item_id\n1,a\n"
    with pytest.raises(OSError, match="crashed"), storage.writing_file(uri) as path:
        Path(path).write_text("partial")
        raise OSError("crashed")
    assert storage.read_text(uri) == "row,item_id\n1,a\n"
    storage.copy(uri, str(tmp_path / "out" / "rejects.csv"))
    storage.copy(str(tmp_path / "out" / "rejects.csv"), storage.join(s3_bucket, "copy", "rejects.csv"))
    assert storage.read_text(storage.join(s3_bucket, "copy", "rejects.csv")) == "row,item_id\n1,a\n"
    assert s3_objects(s3_client) == ["copy/rejects.csv", "report/rejects.csv"]


def test_s3_open_input_stream_decompresses_gz(s3_bucket: str) -> None:
    uri = storage.join(s3_bucket, "catalogs", "items.csv.gz")
    storage.write_bytes(uri, gzip.compress(b"item_id,title\na,one\n"))
    with storage.open_input_stream(uri) as stream:
        assert stream.read() == b"item_id,title\na,one\n"


class _Forbidden(BaseHTTPRequestHandler):
    """An S3 endpoint that refuses everything, as S3 answers 403 to a role without s3:GetObject."""

    def do_HEAD(self) -> None:
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *_: Any) -> None:
        pass


def test_s3_exists_propagates_errors_other_than_not_found() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    storage.set_s3_filesystem(storage.s3_filesystem(endpoint_url=endpoint, region="us-east-1", access_key="k", secret_key="s"))
    try:
        with pytest.raises(OSError, match="ACCESS_DENIED during HeadObject"):
            storage.exists("s3://bucket/key")
    finally:
        storage.set_s3_filesystem(None)
        server.shutdown()
        server.server_close()


def test_default_s3_filesystem_comes_from_the_environment_on_first_use(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # pss step workers and Batch jobs are configured by AWS_ENDPOINT_URL, which pyarrow itself does not read.
    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    storage.set_s3_filesystem(None)
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket="pss-unit-env")
    try:
        storage.write_json("s3://pss-unit-env/a.json", {"ok": True})
        assert storage.read_json("s3://pss-unit-env/a.json") == {"ok": True}
    finally:
        storage.set_s3_filesystem(None)
        client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
        for obj in client.list_objects_v2(Bucket="pss-unit-env").get("Contents", []):
            client.delete_object(Bucket="pss-unit-env", Key=obj["Key"])
        client.delete_bucket(Bucket="pss-unit-env")


def test_s3_parquet_catalog_streams_by_row_group(s3_bucket: str) -> None:
    # The plan step reads an s3:// Parquet catalog through the URI layer, row group by row group, with no local copy.
    from pss_ops.catalog.source import open_catalog

    uri = storage.join(s3_bucket, "catalogs", "catalog.parquet")
    rows = pa.table({"item_id": [f"i{n}" for n in range(300)], "title": [f"title {n}" for n in range(300)]})
    with storage.writing_file(uri) as path:
        pq.write_table(rows, path, row_group_size=100)
    source = open_catalog(uri)
    assert source.columns == ("item_id", "title")
    batches = list(source.batches(batch_rows=100))
    assert [b.num_rows for b in batches] == [100, 100, 100]
    assert pa.Table.from_batches(batches).equals(rows)
