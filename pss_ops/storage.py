"""One URI layer for local paths and s3:// objects (through pyarrow.fs); every write is atomic.

pyarrow is imported only by the Parquet functions and for s3:// URIs, so DAG parsing can use the rest cheaply.

A write goes to a hidden temporary beside its target and is moved onto it.  A writer killed outright (kill -9, OOM)
leaves its temporary behind, so temporaries and scratch folders are named after their writer, and the first write
into a folder by each process removes those of writers that are gone (remove_stale_temps does a whole run folder).

This module is longer than 400 lines because it is the only way PSS touches files: every read, every atomic write
and the temporaries those writes leave, local and on S3, so no step can write around its guarantees.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

log = logging.getLogger(__name__)

# Bytes per read when an object is copied or streamed: one ranged GET each on S3, so not too small.
CHUNK_BYTES = 8 * 1024 * 1024

# Age after which a temporary object on S3 is a dead writer's.  S3 has no writer to ask, so age is the test.  A
# temporary is listed only once its upload completes, and is moved onto its target straight after; but an object
# uploaded in parts can be dated from the upload's start, so its age may include the whole streamed write (a
# similar_items.parquet fed by a long publish).  A day is far above any one write of a step and still clears the
# litter daily; an hour would risk a live writer's object on a large run.
S3_TEMP_MAX_AGE_SECONDS = 24 * 3600

# Names of what dead writers can leave: a local temporary `.<target>.<writer>.<pid>.<token>.tmp`, a scratch
# folder `.scratch-<writer>.<pid>.<token>`, and a temporary object `.<target>.<uuid hex>.tmp` on S3.
_LOCAL_TEMP = re.compile(r"\.(?P<target>.+)\.(?P<writer>[A-Za-z0-9_-]+)\.(?P<pid>[0-9]+)\.[0-9a-f]{8}\.tmp")
_SCRATCH = re.compile(r"\.scratch-(?P<writer>[A-Za-z0-9_-]+)\.(?P<pid>[0-9]+)\.[0-9a-f]{8}")
_S3_TEMP = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{32}\.tmp")

# Folders this process has swept already: once per folder per process keeps a write O(1) in a folder of
# thousands of partitions (a dead writer's litter is swept by the next process to write there).
_swept: set[str] = set()

_s3_fs: pafs.FileSystem | None = None


def s3_filesystem(
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
) -> pafs.S3FileSystem:
    """An S3 filesystem for s3:// URIs; what is None is left to the AWS SDK (environment, profile, instance role)."""
    from pyarrow import fs

    options: dict[str, Any] = {
        "region": region,
        "access_key": access_key,
        "secret_key": secret_key,
        "session_token": session_token,
        # An object under one part (10 MiB) is sent as a single PUT on close, not a three-request multipart upload.
        "allow_delayed_open": True,
        # Upload each part before accepting more data: background writes queue parts without limit when the
        # network is slower than the writer, and memory must stay bounded by a part and a row group.
        "background_writes": False,
    }
    if endpoint_url:
        # pyarrow wants the scheme apart from host:port; with an endpoint it addresses buckets path-style.
        parsed = urlparse(endpoint_url)
        options.update(endpoint_override=parsed.netloc or endpoint_url, scheme=parsed.scheme or "https")
    return fs.S3FileSystem(**{name: value for name, value in options.items() if value is not None})


def set_s3_filesystem(filesystem: pafs.FileSystem | None) -> None:
    """Inject the filesystem (endpoint, credentials) used for s3:// URIs; None goes back to the environment's."""
    global _s3_fs
    _s3_fs = filesystem


def _s3() -> pafs.FileSystem:
    global _s3_fs
    if _s3_fs is None:
        # Unlike boto3, pyarrow reads neither AWS_ENDPOINT_URL nor the region from the environment; workers
        # (`pss step`, Batch jobs) are configured by it.  Read on first use, never at import time.
        env = os.environ
        _s3_fs = s3_filesystem(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        )
    return _s3_fs


def is_s3(uri: str) -> bool:
    """True for s3:// URIs."""
    return uri.startswith("s3://")


def _s3_path(uri: str) -> str:
    """The pyarrow path of an s3:// URI: bucket/key."""
    return uri[len("s3://") :].rstrip("/")


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
    """True when an object (or a prefix holding objects) or a file or directory exists at the URI."""
    if is_s3(uri):
        from pyarrow import fs

        # A missing key is NotFound; any other error (403, network) propagates.
        return bool(_s3().get_file_info(_s3_path(uri)).type != fs.FileType.NotFound)
    return Path(uri).exists()


def list_dir(uri: str) -> list[str]:
    """Sorted names directly under a local directory or s3:// prefix; empty when there is none."""
    if is_s3(uri):
        from pyarrow import fs

        return sorted(info.base_name for info in _s3().get_file_info(fs.FileSelector(_s3_path(uri), allow_not_found=True)))
    path = Path(uri)
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def _open_read(uri: str) -> Any:
    """A raw binary reader: a random-access S3 file (a read is one ranged GET) or a local file."""
    # Random access, not open_input_stream: read() of an unseekable stream goes 256 KiB, i.e. one GET, at a time.
    return _s3().open_input_file(_s3_path(uri)) if is_s3(uri) else open(uri, "rb")  # noqa: SIM115 - callers close it


@functools.cache
def _writer() -> str:
    """Where this process's PID means something: the host, and the PID namespace (a container has its own)."""
    host = re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname())  # no dots: the name must split back unambiguously
    # A container on the host network has the host's name but its own PIDs; the namespace's inode tells them apart.
    try:
        return f"{host}-{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:  # no /proc (macOS): the host alone
        return host


def _alive(pid: int) -> bool:
    """Whether a process of this PID runs here; an unusable PID counts as alive, so nothing of it is removed."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or no PID at all
        return True
    return True


def left_by_dead_writer(name: str) -> bool:
    """True for the name of a local temporary (or scratch folder) whose writer ran on this host and is gone."""
    return _left_by_dead_writer(name)


def _left_by_dead_writer(name: str) -> bool:
    """True for a local temporary or scratch folder whose writer ran here and is gone."""
    match = _LOCAL_TEMP.fullmatch(name) or _SCRATCH.fullmatch(name)
    return match is not None and match["writer"] == _writer() and not _alive(int(match["pid"]))


def _sweep_local(folder: Path) -> int:
    """Remove dead writers' temporaries and scratch folders directly in folder; returns how many."""
    removed = 0
    with suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as entries:
        for entry in entries:
            if not _left_by_dead_writer(entry.name):
                continue
            # Another process may sweep the same litter, and a read-only disk refuses: neither stops a write.
            with suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed += 1
                log.info("removed %s, left by a writer that is gone", entry.path)
    return removed


def _sweep_s3(path: str, *, recursive: bool) -> int:
    """Remove temporary objects older than S3_TEMP_MAX_AGE_SECONDS under a bucket/prefix path; returns how many."""
    from pyarrow import fs

    oldest_live_ns = time.time_ns() - S3_TEMP_MAX_AGE_SECONDS * 1_000_000_000
    removed = 0
    for info in _s3().get_file_info(fs.FileSelector(path, allow_not_found=True, recursive=recursive)):
        if info.type == fs.FileType.File and _S3_TEMP.fullmatch(info.base_name) and (info.mtime_ns or 0) < oldest_live_ns:
            with suppress(OSError):  # another writer's sweep got there first
                _s3().delete_file(info.path)
                removed += 1
                log.info("removed s3://%s, a temporary object over %d s old", info.path, S3_TEMP_MAX_AGE_SECONDS)
    return removed


def _sweep_once(folder: str) -> None:
    """Sweep a local folder or s3 bucket/prefix path the first time this process writes into it."""
    if folder in _swept:
        return
    _swept.add(folder)
    try:
        if folder.startswith("s3://"):
            _sweep_s3(_s3_path(folder), recursive=False)
        else:
            _sweep_local(Path(folder))
    except OSError as err:  # a role that may write but not list, say: the write itself decides
        log.warning("could not look for stale temporaries in %s: %s", folder, err)


def remove_stale_temps(folder: str) -> int:
    """Remove what writers that are gone left under folder and its subfolders (temporaries, scratch folders).

    Locally a writer is gone when its PID no longer runs on this host; on S3 when its temporary object is older than
    S3_TEMP_MAX_AGE_SECONDS.  Files of live writers, and of writers on other hosts, are kept.  Returns how many went.
    """
    if is_s3(folder):
        return _sweep_s3(_s3_path(folder), recursive=True)
    removed = 0
    for parent, folders, _ in os.walk(folder):
        removed += _sweep_local(Path(parent))
        folders[:] = [name for name in folders if Path(parent, name).is_dir()]  # what the sweep removed is not walked
    return removed


def _create_named(folder: Path, prefix: str, suffix: str, create: Callable[[str], None], *, about: str) -> str:
    """Create a new file or folder `<prefix><writer>.<pid>.<token><suffix>` in folder; returns its path.

    An error names `about` (the target, or the folder), not the random name nobody knows.
    """
    for _ in range(100):
        path = str(folder / f"{prefix}{_writer()}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
        try:
            create(path)
        except FileExistsError:
            continue
        except OSError as err:
            raise OSError(err.errno, err.strerror, about) from err
        return path
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(folder))


def _create_file(path: str) -> None:
    # Mode 0666 less the umask, as open(path, "w") gives: the moved file is the output (mkstemp's 0600 would
    # lock every other user and service out of a run).
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _temp_beside(target: Path, about: str) -> str:
    """A new empty hidden temporary in target's folder, named after target and this writer."""
    return _create_named(target.parent, f".{target.name}.", ".tmp", _create_file, about=about)


def _about_target(err: BaseException, tmp: str, uri: str) -> BaseException:
    """An OSError about the temporary, or naming no file, made about uri: the name a user knows."""
    if not isinstance(err, OSError) or err.errno is None or err.filename not in (None, tmp):
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), uri)


@contextmanager
def _staged(uri: str) -> Iterator[str]:
    """The one atomic-write mechanism: yield a hidden sibling of uri to write; a clean exit moves it onto uri, an error deletes it.

    Locally the move is os.replace.  On S3 the sibling is a temporary object and the move a server-side copy, so the
    object at uri appears whole or not at all: pyarrow's output stream completes its upload even when closed on an
    error (its Abort is not exposed in Python, apache/arrow#40502), so writing to uri directly could publish a part.
    """
    if is_s3(uri):
        filesystem, path = _s3(), _s3_path(uri)
        parent, _, name = path.rpartition("/")
        _sweep_once(f"s3://{parent}")
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            yield tmp
            filesystem.move(tmp, path)  # CopyObject (atomic, up to 5 GB) then DeleteObject of the temporary
        except BaseException:
            with suppress(OSError):  # never written, or already gone; the original error matters
                filesystem.delete_file(tmp)
            raise
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(str(target.parent))
    tmp = _temp_beside(target, uri)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as err:
        with suppress(OSError):  # a read-only disk refuses this too; the original error matters
            Path(tmp).unlink(missing_ok=True)
        named = _about_target(err, tmp, uri)
        if named is err:
            raise
        raise named from err


@contextmanager
def staged_symlink(path: str, target: str) -> Iterator[None]:
    """A local symlink at path to target, made beside it and renamed onto it on a clean exit: one atomic switch.

    Whatever was at path (an older link, a file) is replaced in one rename; an error leaves it as it was.
    """
    with _staged(path) as tmp:
        os.unlink(tmp)  # the staged name, reserved by _staged, now becomes the link
        os.symlink(target, tmp)
        yield


@contextmanager
def _writing(uri: str) -> Iterator[Any]:
    """A binary writer whose bytes become the object at uri on a clean exit (see _staged); streamed on S3."""
    with _staged(uri) as tmp:
        if is_s3(uri):
            with _s3().open_output_stream(tmp) as out:
                yield out
        else:
            with open(tmp, "wb") as handle:
                yield handle


def read_bytes(uri: str) -> bytes:
    """Read a whole object or file."""
    with _open_read(uri) as handle:
        data: bytes = handle.read()
    return data


def write_bytes(uri: str, data: bytes | memoryview) -> None:
    """Write atomically."""
    with _writing(uri) as out:
        out.write(data)


def write_npy(uri: str, array: np.ndarray) -> None:
    """One numpy array as a .npy file, atomically, streamed from the array (a safe format: no pickle)."""
    import numpy as np

    with _writing(uri) as out:
        np.lib.format.write_array(out, array, allow_pickle=False)


def read_npy(uri: str) -> np.ndarray:
    """An array written by write_npy; a local file is memory-mapped read-only (pages are read as rows are touched)."""
    import numpy as np

    if is_s3(uri):
        return np.load(io.BytesIO(read_bytes(uri)), allow_pickle=False)
    return np.load(uri, mmap_mode="r", allow_pickle=False)


def write_arrays(uri: str, **arrays: np.ndarray) -> None:
    """Named numpy arrays as one .npz file, atomically (a safe format: read back without pickle)."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    write_bytes(uri, buffer.getvalue())


def read_arrays(uri: str) -> dict[str, np.ndarray]:
    """The arrays of a file written by write_arrays; object arrays (pickles) are refused."""
    import numpy as np

    with np.load(io.BytesIO(read_bytes(uri)), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def read_text(uri: str) -> str:
    """Read a UTF-8 text object."""
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    """Write a UTF-8 text object atomically."""
    write_bytes(uri, text.encode("utf-8"))


def read_json(uri: str) -> Any:
    """Read a JSON document."""
    return json.loads(read_bytes(uri))


def _standard(value: Any) -> Any:
    """value with NaN and infinities as None, through dicts, lists, tuples and numpy values."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _standard(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_standard(item) for item in value]
    numpy = sys.modules.get("numpy")  # not imported: then no value is a numpy one
    if numpy is not None and isinstance(value, numpy.generic | numpy.ndarray):
        return _standard(value.tolist())
    return value


def json_text(payload: Any, *, indent: int | None = 2) -> str:
    """Standard JSON text (an undefined figure, NaN or infinite, is null), keys sorted so reruns are byte-identical.

    indent=None gives one line, for a command's output that scripts read line by line.
    """
    # allow_nan=False: should anything non-finite get past _standard, the write fails instead of emitting NaN.
    return json.dumps(_standard(payload), indent=indent, sort_keys=True, default=str, allow_nan=False) + "\n"


def write_json(uri: str, payload: Any) -> None:
    """Write a JSON document atomically, as json_text."""
    write_text(uri, json_text(payload))


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

    with _writing(uri) as out:
        pq.write_table(table, out, use_dictionary=dictionary_columns(table.schema))


def _parquet_file(uri: str, pre_buffer: bool) -> pq.ParquetFile:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = _s3().open_input_file(_s3_path(uri)) if is_s3(uri) else uri  # on S3, ranged reads of one object
    try:
        return pq.ParquetFile(source, pre_buffer=pre_buffer)
    except pa.ArrowInvalid as err:
        # "Parquet magic bytes not found in footer" alone doesn't say which file; same type, so handlers still match.
        raise pa.ArrowInvalid(f"{uri}: {err}") from None


def open_parquet(uri: str) -> pq.ParquetFile:
    """Open a Parquet file for streaming by row group (on S3: ranged reads, never the whole object)."""
    # pyarrow pre-buffers by default, and iter_batches then fetches and holds every row group at once.
    return _parquet_file(uri, pre_buffer=False)


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read a whole Parquet file (one partition; never a whole catalog)."""
    # All of it is wanted, so pre-buffering only merges reads (fewer GETs on S3).
    return _parquet_file(uri, pre_buffer=True).read(columns=columns)


def open_input_stream(uri: str) -> pa.NativeFile:
    """A sequential reader over an object or file, decompressed when the name ends in .gz (S3 is streamed)."""
    import pyarrow as pa

    compression = "gzip" if uri.lower().endswith(".gz") else None
    if is_s3(uri):
        # Buffered, or the decompressor's 64 KiB reads would each be a GET.
        return _s3().open_input_stream(_s3_path(uri), compression=compression, buffer_size=CHUNK_BYTES)
    return pa.input_stream(uri, compression=compression)


@contextmanager
def writing_file(uri: str) -> Iterator[str]:
    """A local path to write; on a clean exit it becomes the object at uri at once, on an error it is removed."""
    if not is_s3(uri):
        with _staged(uri) as tmp:
            yield tmp
        return
    local = Path(tempfile.gettempdir())
    _sweep_once(str(local))
    tmp = _temp_beside(local / uri.rsplit("/", 1)[-1], str(local))
    try:
        yield tmp
        copy(tmp, uri)
    finally:
        Path(tmp).unlink(missing_ok=True)


def copy(source: str, target: str) -> None:
    """Copy one object or file to another URI without holding it in memory; the target appears atomically."""
    with _open_read(source) as reader, _writing(target) as out:
        shutil.copyfileobj(reader, out, CHUNK_BYTES)


@contextmanager
def scratch_dir(near: str) -> Iterator[str]:
    """A private local directory removed on exit: a hidden one beside a local uri (same disk), else in the temp dir."""
    parent = Path(tempfile.gettempdir()) if is_s3(near) else Path(near)
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(str(parent))
    # 0700: scratch holds rows on their way to an output, nobody else's business.
    path = _create_named(parent, ".scratch-", "", functools.partial(os.mkdir, mode=0o700), about=str(parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_parquet_batches(uri: str, schema: pa.Schema, tables: Iterable[pa.Table]) -> int:
    """Stream tables into one Parquet file, made visible atomically at the end; returns rows."""
    import pyarrow.parquet as pq

    rows = 0
    with _writing(uri) as out, pq.ParquetWriter(out, schema, use_dictionary=dictionary_columns(schema)) as writer:
        for table in tables:
            writer.write_table(table.select(schema.names).cast(schema))
            rows += table.num_rows
    return rows


def delete(uri: str) -> None:
    """Delete one object or file; a missing one is not an error."""
    if is_s3(uri):
        from pyarrow import fs

        filesystem, path = _s3(), _s3_path(uri)
        if filesystem.get_file_info(path).type != fs.FileType.NotFound:
            filesystem.delete_file(path)
        return
    Path(uri).unlink(missing_ok=True)
