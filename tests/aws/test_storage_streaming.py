"""Parquet on S3 streams: writing and reading a file many row groups long holds about a row group, not the file.

Each measurement runs in a fresh process (its memory peaks are its own) against the session's moto server, and
counts all three places the bytes could be: Arrow's memory pool (S3 part buffers, column chunks, batches),
Python's allocator (tracemalloc: a whole object read into `bytes`, a BytesIO) and the process's peak RSS
(everything else: the AWS SDK's buffers, numpy).
A control run reads the same file the old way, as one whole object, and must break the bound.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pss_ops import storage
from tests.aws.conftest import CREDENTIALS, REGION, S3Bucket

ROWS_PER_GROUP = 32_768
ROW_GROUPS = 64
MIB = 1024 * 1024
# pyarrow's S3 output stream buffers one 10 MiB part before it uploads it.
S3_PART_BYTES = 10 * MIB
# RSS also holds thread pools and the AWS SDK's and the allocator's own buffers: measured 37-55 MB here for
# files of 21 to 172 MB, i.e. a constant, while a whole-object read grows RSS by more than the file.
RSS_ALLOWANCE = 64 * MIB

CHILD = r"""
import json, sys, tracemalloc

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pss_ops import storage

endpoint, region, key, secret, uri, mode = sys.argv[1:7]
rows, groups = int(sys.argv[7]), int(sys.argv[8])
storage.set_s3_filesystem(storage.s3_filesystem(endpoint_url=endpoint, region=region, access_key=key, secret_key=secret))
schema = pa.schema([("item_id", pa.string())] + [(f"f{i}", pa.float64()) for i in range(6)])


def row_group(number, size=rows):
    # Built in Arrow's pool, one row group at a time; random floats so the file is as large as the data.
    ids = pc.cast(pc.add(pa.array(range(size), pa.int64()), number * size), pa.string())
    return pa.table([ids] + [pc.random(size, initializer=number * 10 + i) for i in range(6)], schema=schema)


def whole_object_read(target):
    # The old S3 read: the object as one bytes, then Parquet over a buffer.
    return pq.ParquetFile(pa.BufferReader(storage.read_bytes(target))).iter_batches(batch_size=rows)


def kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) * 1024


# Warm up on a small file: the lazy imports (pyarrow pulls in pandas), the S3 client and the allocator's first
# arenas are not what is measured.
warm = uri + ".warm-up"
storage.write_parquet_batches(warm, schema, [row_group(0, 1000)])
for batches in (storage.open_parquet(warm).iter_batches(batch_size=rows), whole_object_read(warm)):
    sum(batch.num_rows for batch in batches)
# Peak RSS from here: ru_maxrss would carry the parent's peak across exec; VmHWM is this process's, reset to now.
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")
rss_before = kib("VmRSS")
pool = pa.default_memory_pool()
arrow_before = pool.bytes_allocated()
tracemalloc.start()
if mode == "write":
    done = storage.write_parquet_batches(uri, schema, (row_group(n) for n in range(groups)))
else:
    done = sum(b.num_rows for b in (storage.open_parquet(uri).iter_batches(batch_size=rows) if mode == "read" else whole_object_read(uri)))
print(json.dumps({
    "rows": done,
    "arrow_peak": pool.max_memory() - arrow_before,
    "python_peak": tracemalloc.get_traced_memory()[1],
    "rss_growth": kib("VmHWM") - rss_before,
}))
"""


def measure(moto_server: str, uri: str, mode: str) -> dict[str, int]:
    """Run one read or write of uri in a fresh process; its row count and memory peaks in bytes."""
    args = [moto_server, REGION, CREDENTIALS["aws_access_key_id"], CREDENTIALS["aws_secret_access_key"], uri, mode]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args, str(ROWS_PER_GROUP), str(ROW_GROUPS)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def held(peaks: dict[str, int]) -> int:
    """Bytes the operation held at its peak: Arrow's pool plus Python's heap."""
    return peaks["arrow_peak"] + peaks["python_peak"]


@pytest.fixture
def figures() -> Iterator[dict[str, Any]]:
    """The measured figures, printed at the end (pytest -s) for the record."""
    measured: dict[str, Any] = {}
    yield measured
    print("\nS3 Parquet streaming:", json.dumps(measured, indent=2))


def test_parquet_on_s3_streams_by_row_group(moto_server: str, s3_bucket: S3Bucket, figures: dict[str, Any]) -> None:
    uri = f"{s3_bucket.uri}/run/similar_items.parquet"

    written = measure(moto_server, uri, "write")
    assert written["rows"] == ROWS_PER_GROUP * ROW_GROUPS
    file_bytes = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key="run/similar_items.parquet")["ContentLength"]
    row_group_bytes = file_bytes // ROW_GROUPS
    # Streaming holds a few row groups (an input table, its encoded column chunks, a decoded batch) and the S3
    # part being uploaded; a row group here is about as large in memory as encoded.
    bound = 8 * row_group_bytes + S3_PART_BYTES
    figures.update(file_bytes=file_bytes, row_group_bytes=row_group_bytes, bound=bound, write=written)
    # The bounds mean something only if holding the file would break them, the precise one several times over.
    assert file_bytes > 4 * bound
    assert file_bytes > bound + RSS_ALLOWANCE

    read = measure(moto_server, uri, "read")
    whole = measure(moto_server, uri, "whole")
    figures.update(read=read, whole_object_read=whole)
    assert read["rows"] == whole["rows"] == ROWS_PER_GROUP * ROW_GROUPS

    for peaks in (written, read):
        assert held(peaks) < bound, figures
        assert peaks["rss_growth"] < bound + RSS_ALLOWANCE, figures
    # The control: the same file read as one object breaks both, so the measures do see a whole-file buffer.
    assert held(whole) > file_bytes, figures
    assert whole["rss_growth"] > file_bytes, figures


def test_failed_multipart_write_leaves_the_previous_object_and_nothing_else(s3_bucket: S3Bucket) -> None:
    uri = f"{s3_bucket.uri}/run/similar_items.parquet"
    schema = pa.schema([("item_id", pa.string()), ("score", pa.float64())])
    storage.write_parquet(uri, pa.table({"item_id": ["a"], "score": [1.0]}, schema=schema))

    def tables() -> Iterator[pa.Table]:
        for number in range(4):  # 4 x 8 MB of random floats: parts of the upload are already sent when it fails
            yield pa.table({"item_id": pc.cast(pa.array(range(500_000)), pa.string()), "score": pc.random(500_000, initializer=number)})
        raise RuntimeError("query step failed")

    # pyarrow's S3 stream completes its upload even when closed on an error: the temporary object takes it.
    with pytest.raises(RuntimeError, match="query step failed"):
        storage.write_parquet_batches(uri, schema, tables())
    assert storage.read_parquet(uri).to_pylist() == [{"item_id": "a", "score": 1.0}]
    keys = [o["Key"] for o in s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]]
    assert [k for k in keys if not k.endswith("/")] == ["run/similar_items.parquet"]  # "run/" is pyarrow's directory marker
    assert s3_bucket.client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", []) == []
