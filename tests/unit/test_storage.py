"""Storage URI layer: atomic local writes, streamed Parquet, and an s3:// round trip against moto."""

from __future__ import annotations

import datetime as dt
import errno
import gzip
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import numpy as np
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


@pytest.fixture(autouse=True)
def _unswept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's folders are new to the sweep, as they would be to a new process."""
    monkeypatch.setattr(storage, "_swept", set())


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


def test_s3_temporary_objects_past_the_age_bound_are_removed(s3_bucket: str, s3_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # S3 dates objects to the second; two seconds stand in for the day, so the test takes three.
    monkeypatch.setattr(storage, "S3_TEMP_MAX_AGE_SECONDS", 2)
    stale = [f"runs/r/.similar_items.parquet.{'a' * 32}.tmp", f"runs/r/embed/.part-00000.parquet.{'b' * 32}.tmp"]
    kept = ["runs/r/.notes.tmp", f"runs/.x.json.{'c' * 32}.tmp.bak"]  # not pss's temporaries
    for key in stale + kept:
        s3_client.put_object(Bucket=BUCKET, Key=key, Body=b"half")
    time.sleep(3)
    live = f"runs/r/.run_summary.json.{'d' * 32}.tmp"  # a writer between upload and move
    s3_client.put_object(Bucket=BUCKET, Key=live, Body=b"whole")
    storage.write_json(storage.join(s3_bucket, "runs", "r", "run_summary.json"), {"ok": True})
    assert s3_objects(s3_client) == sorted([stale[1], *kept, live, "runs/r/run_summary.json"])
    assert storage.remove_stale_temps(storage.join(s3_bucket, "runs")) == 1
    assert s3_objects(s3_client) == sorted([*kept, live, "runs/r/run_summary.json"])


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


# --- what writers killed outright leave behind ---------------------------------------------------------------------

# A writer in another process: it stages `target`, writes part of it, then waits for a line on stdin (or is killed).
WRITER = """
import sys
from pss_ops import storage
with storage._writing(sys.argv[1]) as out:
    out.write(b"partial")
    out.flush()
    print("writing", flush=True)
    sys.stdin.readline()
    out.write(b" and the rest")
"""

# A process holding a scratch folder, with a file in it, beside a path until it is killed.
SCRATCH_HOLDER = """
import pathlib, sys, time
from pss_ops import storage
with storage.scratch_dir(sys.argv[1]) as scratch:
    pathlib.Path(scratch, "rows.arrow").write_bytes(b"rows")
    print(scratch, flush=True)
    time.sleep(600)
"""


class Child:
    """A Python process running code, started once it has printed its first line (its temporary then exists)."""

    def __init__(self, code: str, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.said = self.process.stdout.readline().strip()
        self.pid = self.process.pid

    def kill(self) -> int:
        """SIGKILL, as the OOM killer or a preempted host does: no cleanup runs.  Returns the dead PID."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return self.pid

    def finish(self) -> int:
        """Let it go on past its first line; returns its exit status."""
        self.process.communicate("go\n", timeout=120)
        return self.process.returncode


def test_temporary_is_named_after_target_writer_and_pid(tmp_path: Path) -> None:
    with storage.writing_file(str(tmp_path / "similar_items.parquet")) as tmp:
        name = Path(tmp).name
    assert name.startswith(".similar_items.parquet.") and name.endswith(".tmp")
    match = storage._LOCAL_TEMP.fullmatch(name)
    assert match is not None and match["target"] == "similar_items.parquet"
    assert (match["writer"], int(match["pid"])) == (storage._writer(), os.getpid())
    assert "." not in storage._writer()


def test_killed_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path: Path) -> None:
    target = tmp_path / "run_summary.json"
    pid = Child(WRITER, str(target)).kill()
    left = leftovers(tmp_path, set())
    assert len(left) == 1 and f".{pid}." in left[0]
    storage.write_json(str(target), {"ok": True})
    assert leftovers(tmp_path, {"run_summary.json"}) == []


def test_live_writers_temporary_is_kept_and_completes(tmp_path: Path) -> None:
    target = tmp_path / "blob.bin"
    writer = Child(WRITER, str(target))
    try:
        storage.write_bytes(str(target), b"mine")
        (live,) = leftovers(tmp_path, {"blob.bin"})
        assert f".{writer.pid}." in live
        assert storage.remove_stale_temps(str(tmp_path)) == 0
        assert leftovers(tmp_path, {"blob.bin"}) == [live]
    finally:
        assert writer.finish() == 0
    assert target.read_bytes() == b"partial and the rest"
    assert leftovers(tmp_path, {"blob.bin"}) == []


def test_temporaries_of_other_hosts_and_unknown_names_are_kept(tmp_path: Path) -> None:
    gone = Child(WRITER, str(tmp_path / "a.json")).kill()
    kept = [
        f".a.json.another-host-4026531836.{gone}.0123abcd.tmp",  # its PIDs are not ours to judge
        ".a.json.Xy12_ab.tmp",  # tempfile's names before writers were named: nobody can say whose
        f".scratch-another-host-4026531836.{gone}.0123abcd",
        "a.json.tmp",
    ]
    for name in kept:
        (tmp_path / name).mkdir() if name.startswith(".scratch") else (tmp_path / name).write_bytes(b"x")
    storage.write_json(str(tmp_path / "a.json"), [1])
    assert leftovers(tmp_path, {"a.json"}) == sorted(kept)


def test_killed_scratch_holder_leaves_a_folder_that_the_next_scratch_dir_removes(tmp_path: Path) -> None:
    holder = Child(SCRATCH_HOLDER, str(tmp_path))
    holder.kill()
    stale = Path(holder.said)
    assert (stale / "rows.arrow").exists() and storage._SCRATCH.fullmatch(stale.name)
    live = Child(SCRATCH_HOLDER, str(tmp_path))
    try:
        with storage.scratch_dir(str(tmp_path)) as mine:
            assert leftovers(tmp_path, set()) == sorted([Path(live.said).name, Path(mine).name])
        assert leftovers(tmp_path, set()) == [Path(live.said).name]
    finally:
        live.kill()


def test_remove_stale_temps_sweeps_a_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for folder in ("embed", "query", "index"):
        Child(WRITER, str(run / folder / "part-00000.parquet")).kill()
    Child(SCRATCH_HOLDER, str(run / "plan" / "partitions")).kill()
    storage.write_bytes(str(run / "embed" / "part-00000.parquet"), b"done")  # this write swept embed/ already
    assert storage.remove_stale_temps(str(run)) == 3
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == [
        "embed",
        "embed/part-00000.parquet",
        "index",
        "plan",
        "plan/partitions",
        "query",
    ]
    assert storage.remove_stale_temps(str(run)) == 0
    assert storage.remove_stale_temps(str(tmp_path / "missing")) == 0


def test_a_folder_is_swept_once_per_process(tmp_path: Path) -> None:
    storage.write_bytes(str(tmp_path / "a.bin"), b"1")
    pid = Child(WRITER, str(tmp_path / "b.bin")).kill()
    storage.write_bytes(str(tmp_path / "b.bin"), b"2")
    (left,) = leftovers(tmp_path, {"a.bin", "b.bin"})  # it died after this process swept the folder
    assert f".{pid}." in left
    assert storage.remove_stale_temps(str(tmp_path)) == 1
    assert leftovers(tmp_path, {"a.bin", "b.bin"}) == []


# --- file modes ----------------------------------------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_get_the_mode_open_gives_under_the_umask(tmp_path: Path, umask: int) -> None:
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    expected = 0o666 & ~umask
    assert mode(tmp_path / "plain.txt") == expected
    storage.write_bytes(str(tmp_path / "a.bin"), b"x")
    storage.write_json(str(tmp_path / "run_summary.json"), {"a": 1})
    storage.write_parquet(str(tmp_path / "similar_items.parquet"), table(3))
    storage.write_parquet_batches(str(tmp_path / "batches.parquet"), table(1).schema, [table(2)])
    storage.copy(str(tmp_path / "a.bin"), str(tmp_path / "copy.bin"))
    with storage.writing_file(str(tmp_path / "rejects.csv")) as path:
        Path(path).write_text("row\n")
    for name in ("a.bin", "run_summary.json", "similar_items.parquet", "batches.parquet", "copy.bin", "rejects.csv"):
        assert mode(tmp_path / name) == expected, name
    # Rewriting a file gives it the mode a new one gets, whatever it had.
    (tmp_path / "a.bin").chmod(0o600)
    storage.write_bytes(str(tmp_path / "a.bin"), b"y")
    assert mode(tmp_path / "a.bin") == expected


def test_scratch_dir_stays_private(tmp_path: Path, umask: int) -> None:
    with storage.scratch_dir(str(tmp_path)) as scratch:
        assert mode(Path(scratch)) == 0o700


# --- strict JSON ---------------------------------------------------------------------------------------------------


def strict_loads(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_write_json_writes_undefined_figures_as_null(tmp_path: Path) -> None:
    nan, inf = float("nan"), float("inf")
    payload = {
        "recall": nan,
        "search": {"recall_by_retriever": {"dense": np.float32("nan"), "lexical": np.float64(0.5)}, "bounds": (inf, -inf, 1.5)},
        "per_query": [nan, 1.0, np.float64(-np.inf), {"k": np.int64(10), "ok": np.bool_(True)}],
        "vector": np.array([1.0, np.nan], dtype=np.float32),
        "count": np.int32(3),
    }
    uri = str(tmp_path / "run_summary.json")
    storage.write_json(uri, payload)
    text = storage.read_text(uri)
    assert "NaN" not in text and "Infinity" not in text
    assert strict_loads(text) == {
        "recall": None,
        "search": {"recall_by_retriever": {"dense": None, "lexical": 0.5}, "bounds": [None, None, 1.5]},
        "per_query": [None, 1.0, None, {"k": 10, "ok": True}],
        "vector": [1.0, None],
        "count": 3,
    }


def test_json_text_refuses_what_it_cannot_make_standard() -> None:
    # A float key becomes a string by float's repr, past _standard; allow_nan=False stops a "NaN" key.
    with pytest.raises(ValueError, match="not JSON compliant"):
        storage.json_text({float("nan"): 1})
    assert storage.json_text({"when": dt.date(2024, 5, 1)}) == '{\n  "when": "2024-05-01"\n}\n'


# --- the real error, and the name a user knows ---------------------------------------------------------------------


def test_disk_errors_name_the_target_not_the_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "out" / "similar_items.parquet"
    with pytest.raises(OSError) as raised:
        storage.write_parquet(str(target), table(3))
    assert (raised.value.errno, raised.value.strerror, raised.value.filename) == (errno.ENOSPC, "No space left on device", str(target))
    assert leftovers(target.parent, set()) == []


def test_an_error_about_another_file_keeps_its_name(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        storage.copy(str(tmp_path / "missing.parquet"), str(tmp_path / "copy.parquet"))
    assert raised.value.filename == str(tmp_path / "missing.parquet")
    assert leftovers(tmp_path, set()) == []
