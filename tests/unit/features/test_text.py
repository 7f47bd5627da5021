"""The text-embedding path: same vectors as plain sentence-transformers encode, input order kept, threads honoured."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pss_ops.features.text import encode as text
from pss_ops.features.text import onnx as text_onnx
from pss_ops.features.text.encode import default_threads, encode_texts, length_sorted_batches
from pss_ops.features.text.model import load_text_model
from tests.conftest import DATA

MODEL = "all-MiniLM-L6-v2"
pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def titles() -> list[str]:
    """300 real titles of mixed lengths, plus the edge cases a catalog holds: an empty title, padding spaces, a long one."""
    catalog = pd.read_csv(DATA / "catalog.csv", dtype=str, keep_default_na=False)
    picked = catalog["title"].sample(300, random_state=7).tolist()
    return [*picked, "", "  spaced  out title  ", " ".join(picked[:40])]


@pytest.fixture(scope="module")
def reference(titles: list[str]) -> np.ndarray:
    """What plain sentence-transformers encode makes of the titles."""
    return load_text_model(MODEL).encode(titles, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_same_vectors_as_plain_encode(runtime: str, titles: list[str], reference: np.ndarray) -> None:
    vectors = encode_texts(titles, model=MODEL, batch_size=16, runtime=runtime, threads=1)
    assert vectors.shape == reference.shape == (len(titles), 384)
    assert vectors.dtype == np.float32
    assert row_cosines(vectors, reference).min() > 0.9999
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_order_restored_whatever_the_batching(titles: list[str]) -> None:
    vectors = encode_texts(titles, model=MODEL, batch_size=7, runtime="onnx", threads=1)
    reordered = list(reversed(titles))
    again = encode_texts(reordered, model=MODEL, batch_size=64, runtime="onnx", threads=1)
    assert row_cosines(vectors, again[::-1]).min() > 0.9999
    # Each row is its own text's vector, not its neighbour's: a text alone gives the same row.
    for i in (0, 150, len(titles) - 1):
        alone = encode_texts([titles[i]], model=MODEL, batch_size=64, runtime="onnx", threads=1)
        assert row_cosines(alone, vectors[i : i + 1])[0] > 0.9999


def test_batches_sorted_by_length_and_padded_to_their_own_longest() -> None:
    token_ids = [[1] * n for n in (3, 9, 1, 5, 9, 2)]
    batches = list(length_sorted_batches(token_ids, batch_size=2))
    assert [rows.tolist() for rows, _, _ in batches] == [[1, 4], [3, 0], [5, 2]]
    assert [ids.shape for _, ids, _ in batches] == [(2, 9), (2, 5), (2, 2)]
    for rows, ids, mask in batches:
        assert mask.sum(axis=1).tolist() == [len(token_ids[r]) for r in rows]
        assert (ids[mask == 0] == 0).all()


def test_empty_input() -> None:
    for runtime in ("onnx", "torch"):
        vectors = encode_texts([], model=MODEL, batch_size=64, runtime=runtime)
        assert vectors.shape == (0, 384) and vectors.dtype == np.float32


def test_unknown_model_and_runtime_refused() -> None:
    with pytest.raises(ValueError, match="unknown text model"):
        encode_texts(["x"], model="bert-huge", batch_size=8)
    with pytest.raises(ValueError, match="unknown text runtime"):
        encode_texts(["x"], model=MODEL, batch_size=8, runtime="tensorrt")


def test_threads_option(monkeypatch: pytest.MonkeyPatch, titles: list[str]) -> None:
    import torch

    monkeypatch.setenv(text.THREADS_ENV, "3")
    assert default_threads() == 3
    monkeypatch.delenv(text.THREADS_ENV)
    assert 1 <= default_threads() <= len(os.sched_getaffinity(0))

    previous = torch.get_num_threads()
    try:
        encode_texts(titles[:5], model=MODEL, batch_size=8, runtime="torch", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
    session = text_onnx.onnx_session(MODEL, 2)
    assert session.get_session_options().intra_op_num_threads == 2


def test_runtime_setting_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(text.RUNTIME_ENV, "torch")
    assert text.default_runtime("cpu") == "torch"
    monkeypatch.setenv(text.RUNTIME_ENV, "onnx")
    assert text.default_runtime("cpu") == "onnx"
    assert text.default_runtime("cuda") == "torch"  # ONNX Runtime here is CPU only
    monkeypatch.setenv(text.RUNTIME_ENV, "tvm")
    with pytest.raises(ValueError, match="PSS_TEXT_RUNTIME"):
        text.default_runtime("cpu")


def test_onnx_export_cached_and_keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second process finds the exported graph by its key instead of exporting again."""
    monkeypatch.setenv(text_onnx.CACHE_ENV, str(tmp_path))
    exports: list[str] = []
    monkeypatch.setattr(text_onnx, "export_onnx", lambda model: exports.append(model) or b"graph")
    first = text_onnx.cached_onnx(MODEL)
    second = text_onnx.cached_onnx(MODEL)
    assert first == second and first.parent == tmp_path
    assert first.name == f"{MODEL}-{text_onnx.export_key(MODEL)}.onnx" and first.read_bytes() == b"graph"
    assert exports == [MODEL]
    assert not list(tmp_path.glob("*.tmp"))
