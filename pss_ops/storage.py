"""One URI layer for local paths and s3:// objects; every write is atomic.

pyarrow is imported only by the Parquet functions, so DAG parsing can use the rest cheaply.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

_s3_client: Any = None


def set_s3_client(client: Any) -> None:
    """Inject the boto3 S3 client (endpoint, credentials) used for s3:// URIs."""
    global _s3_client
    _s3_client = client


def _s3() -> Any:
    global _s3_client
    if _s3_client is None:
        import boto3

        # AWS_ENDPOINT_URL is honoured by boto3 itself; nothing is read at import time.
        _s3_client = boto3.client("s3")
    return _s3_client


def is_s3(uri: str) -> bool:
    """True for s3:// URIs."""
    return uri.startswith("s3://")


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def join(base: str, *parts: str) -> str:
    """Join URI parts with '/' for s3 and the OS separator for local paths."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(base, *parts))


def resolve(uri: str, base: str | Path) -> str:
    """A local path relative to base made absolute; s3:// URIs and absolute paths unchanged."""
    if is_s3(uri):
        return uri
    return str((Path(base) / Path(uri).expanduser()).resolve())


def absolute(uri: str) -> str:
    """Make a local path absolute; s3 URIs are returned unchanged."""
    return uri if is_s3(uri) else str(Path(uri).expanduser().resolve())


def exists(uri: str) -> bool:
    """True when an object or file exists at the URI."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        try:
            _s3().head_object(Bucket=bucket, Key=key)
            return True
        except Exception as err:  # botocore ClientError 404, kept generic so boto3 stays optional
            if getattr(err, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
    return Path(uri).exists()


def list_dir(uri: str) -> list[str]:
    """Sorted names directly under a local directory or s3:// prefix; empty when there is none."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""
        names: set[str] = set()
        for page in _s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            names.update(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
            names.update(o["Key"][len(prefix) :] for o in page.get("Contents", []))
        return sorted(n for n in names if n)
    path = Path(uri)
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def read_bytes(uri: str) -> bytes:
    """Read a whole object or file."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        return _s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(uri).read_bytes()


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically: a single PUT on S3, a temp file then os.replace locally."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        _s3().put_object(Bucket=bucket, Key=key, Body=data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_text(uri: str) -> str:
    """Read a UTF-8 text object."""
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    """Write a UTF-8 text object atomically."""
    write_bytes(uri, text.encode("utf-8"))


def read_json(uri: str) -> Any:
    """Read a JSON document."""
    return json.loads(read_bytes(uri))


def write_json(uri: str, payload: Any) -> None:
    """Write a JSON document atomically, keys sorted so reruns are byte-identical."""
    write_text(uri, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary-encoding: not floats or float vectors (which rarely repeat and read 3x slower so)."""
    import pyarrow as pa

    def floats(kind: pa.DataType) -> bool:
        if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            return floats(kind.value_type)
        return pa.types.is_floating(kind)

    return [field.name for field in schema if not floats(field.type)]


def write_parquet(uri: str, table: pa.Table) -> None:
    """Write a Parquet file atomically."""
    import pyarrow.parquet as pq

    options = {"use_dictionary": dictionary_columns(table.schema)}
    if is_s3(uri):
        sink = io.BytesIO()
        pq.write_table(table, sink, **options)
        write_bytes(uri, sink.getvalue())
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, **options)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def open_parquet(uri: str) -> pq.ParquetFile:
    """Open a Parquet file for streaming by row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if is_s3(uri):
        return pq.ParquetFile(pa.BufferReader(read_bytes(uri)))
    return pq.ParquetFile(uri)


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read a whole Parquet file (one partition; never a whole catalog)."""
    return open_parquet(uri).read(columns=columns)


def local_copy(uri: str, directory: str) -> str:
    """Return a local path for the URI, downloading s3 objects into directory."""
    if not is_s3(uri):
        return uri
    _, key = _split_s3(uri)
    target = Path(directory, Path(key).name)
    target.write_bytes(read_bytes(uri))
    return str(target)


def open_input_stream(uri: str) -> pa.NativeFile:
    """A sequential reader over an object or file, decompressed when the name ends in .gz (S3 is streamed)."""
    import pyarrow as pa

    if is_s3(uri):
        bucket, key = _split_s3(uri)
        stream: pa.NativeFile = pa.PythonFile(_s3().get_object(Bucket=bucket, Key=key)["Body"], mode="r")
        return pa.CompressedInputStream(stream, "gzip") if uri.lower().endswith(".gz") else stream
    return pa.input_stream(uri, compression="gzip" if uri.lower().endswith(".gz") else None)


@contextmanager
def writing_file(uri: str) -> Iterator[str]:
    """A local path to write; on a clean exit it becomes the object at uri at once, on an error it is removed."""
    target = None if is_s3(uri) else Path(uri)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{Path(uri).name}.", suffix=".tmp", dir=target.parent if target is not None else None)
    os.close(fd)
    try:
        yield tmp
        if target is not None:
            os.replace(tmp, target)
        else:
            bucket, key = _split_s3(uri)
            _s3().upload_file(tmp, bucket, key)  # one object appears when the (multipart) upload completes
    finally:
        Path(tmp).unlink(missing_ok=True)


def copy(source: str, target: str) -> None:
    """Copy one object or file to another URI without holding it in memory; the target appears atomically."""
    with writing_file(target) as path:
        if is_s3(source):
            bucket, key = _split_s3(source)
            _s3().download_file(bucket, key, path)
        else:
            shutil.copyfile(source, path)


@contextmanager
def scratch_dir(near: str) -> Iterator[str]:
    """A private local directory removed on exit: a hidden one beside a local uri (same disk), else in the temp dir."""
    parent = None if is_s3(near) else Path(near)
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    path = tempfile.mkdtemp(prefix=".scratch-", dir=parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_parquet_batches(uri: str, schema: pa.Schema, tables: Iterable[pa.Table]) -> int:
    """Stream tables into one Parquet file, made visible atomically at the end; returns rows."""
    import pyarrow.parquet as pq

    rows = 0
    target = Path(uri) if not is_s3(uri) else None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = target.parent if target is not None else None
    fd, tmp = tempfile.mkstemp(prefix=".parts.", suffix=".parquet.tmp", dir=tmp_dir)
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, schema, use_dictionary=dictionary_columns(schema)) as writer:
            for table in tables:
                writer.write_table(table.select(schema.names).cast(schema))
                rows += table.num_rows
        if target is not None:
            os.replace(tmp, target)
        else:
            write_bytes(uri, Path(tmp).read_bytes())
    finally:
        Path(tmp).unlink(missing_ok=True)
    return rows
