"""Content-addressed model registry: <registry>/<model_id>/model.safetensors + spec.json, local or s3://."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from functools import lru_cache

import safetensors.torch
from pydantic import ValidationError
from safetensors import SafetensorError

from pss_ops import storage
from pss_ops.learning.model import ModelSpec, SiameseNet

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "spec.json"
_MODEL_ID = re.compile(r"^siamese-[0-9a-f]{16}$")


class ModelRegistryError(ValueError):
    """A model is missing, malformed, not safetensors, or does not match its content id."""


def weights_bytes(model: SiameseNet) -> bytes:
    """The model's state dict as safetensors bytes: CPU, contiguous tensors, no pickle."""
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    return safetensors.torch.save(tensors, metadata={"format": "pt"})


def model_id_for(spec: ModelSpec, weights: bytes) -> str:
    """siamese- + sha256(canonical spec JSON without created_at, a NUL separator, the safetensors bytes)[:16]."""
    digest = hashlib.sha256()
    digest.update(spec.content_json().encode("utf-8"))
    digest.update(b"\0")  # never in the JSON (control characters are escaped), so the split is unambiguous
    digest.update(weights)
    return f"siamese-{digest.hexdigest()[:16]}"


def save_model(model: SiameseNet, spec: ModelSpec, registry_uri: str) -> str:
    """Store the model under its content id and return the id; saving an existing model again changes nothing.

    The weights are written first and spec.json last, each atomically, so a model whose spec.json exists is complete.
    """
    if not spec.describes(model):
        raise ValueError(
            f"the spec describes input_dim={spec.input_dim} {spec.architecture()!r} feature_widths={spec.feature_widths}, "
            f"the model has input_dim={model.input_dim} {model.architecture!r} feature_widths={model.feature_widths}"
        )
    weights = weights_bytes(model)
    model_id = model_id_for(spec, weights)
    base = storage.join(registry_uri, model_id)
    if storage.exists(storage.join(base, SPEC_FILE)):
        try:
            _read_verified(registry_uri, model_id)
            return model_id  # already stored; keep its original created_at
        except ModelRegistryError:
            pass  # a damaged copy: rewrite it
    if spec.created_at is None:
        spec = spec.model_copy(update={"created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    storage.write_bytes(storage.join(base, WEIGHTS_FILE), weights)
    storage.write_json(storage.join(base, SPEC_FILE), spec.model_dump(mode="json"))
    return model_id


def load_model(registry_uri: str, model_id: str, device: str = "cpu") -> tuple[SiameseNet, ModelSpec]:
    """Rebuild a stored model in eval mode after checking its weights are safetensors and match the id."""
    spec, weights = _read_verified(registry_uri, model_id)
    try:
        tensors = safetensors.torch.load(weights)
    except SafetensorError as err:
        raise ModelRegistryError(f"model {model_id}: {WEIGHTS_FILE} is not a valid safetensors file: {err}") from None
    model = spec.build()
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ModelRegistryError(f"model {model_id}: weights do not fit the architecture in {SPEC_FILE}: {err}") from None
    return model.to(device).eval(), spec


def list_models(registry_uri: str) -> list[str]:
    """Ids of the complete models (spec.json present) in the registry, sorted."""
    return [
        name
        for name in storage.list_dir(registry_uri)
        if _MODEL_ID.match(name) and storage.exists(storage.join(registry_uri, name, SPEC_FILE))
    ]


def _read_verified(registry_uri: str, model_id: str) -> tuple[ModelSpec, bytes]:
    if not _MODEL_ID.match(model_id):
        raise ModelRegistryError(f"{model_id!r} is not a model id (expected siamese- and 16 hex digits)")
    base = storage.join(registry_uri, model_id)
    spec_uri, weights_uri = storage.join(base, SPEC_FILE), storage.join(base, WEIGHTS_FILE)
    if not storage.exists(spec_uri) or not storage.exists(weights_uri):
        raise ModelRegistryError(f"model {model_id} is not in the registry {registry_uri} (or is incomplete)")
    try:
        spec = ModelSpec.model_validate(json.loads(storage.read_bytes(spec_uri)))
    except (ValueError, ValidationError) as err:
        raise ModelRegistryError(f"model {model_id}: {SPEC_FILE} is corrupt: {err}") from None
    weights = storage.read_bytes(weights_uri)
    _require_safetensors(model_id, weights)
    actual = model_id_for(spec, weights)
    if actual != model_id:
        raise ModelRegistryError(
            f"model {model_id}: content hash mismatch (the artifact hashes to {actual}); "
            "spec.json or model.safetensors was modified or corrupted"
        )
    return spec, weights


def _require_safetensors(model_id: str, data: bytes) -> None:
    """Refuse anything but safetensors framing (8-byte little-endian header size, then a JSON header); never unpickle."""
    header_size = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if header_size < 2 or header_size > len(data) - 8 or data[8:9] != b"{":
        kind = "a zip (torch.save) checkpoint" if data[:4] == b"PK\x03\x04" else "a pickle" if data[:1] == b"\x80" else "unknown bytes"
        raise ModelRegistryError(f"model {model_id}: {WEIGHTS_FILE} is not a safetensors file (looks like {kind}); refusing to load it")


@lru_cache(maxsize=4)
def load_model_cached(registry_uri: str, model_id: str, device: str = "cpu") -> tuple[SiameseNet, ModelSpec]:
    """load_model once per process: an embed worker applies the same model to every partition it handles."""
    return load_model(registry_uri, model_id, device)
