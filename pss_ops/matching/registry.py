"""Matchers in the model registry: <registry>/<matcher id>/trees.txt (LightGBM text) + matcher.json, local or s3://.

The id is a content hash, matcher- and 16 hex digits of sha256 over the canonical matcher.json (without its
created_at) and the trees' bytes, so a file changed after registration is refused. The trees load only from
LightGBM's text format: a pickle, or anything else, is refused before any parser sees it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from functools import lru_cache
from typing import Any

import lightgbm as lgb
from pydantic import BaseModel, ConfigDict, ValidationError

from pss_ops import storage
from pss_ops.matching.model import Calibration, Matcher

TREES_FILE = "trees.txt"
SPEC_FILE = "matcher.json"
FORMAT = "pss-matcher/v1"
MATCHER_ID = re.compile(r"^matcher-[0-9a-f]{16}$")
# LightGBM's text model starts with its header line "tree"; nothing else is accepted as trees.
_TREES_HEADER = b"tree\n"


class MatcherRegistryError(ValueError):
    """A matcher is missing, malformed, in an unsafe format, or does not match its content id."""


class MatcherSpec(BaseModel):
    """What a stored matcher is: its inputs, calibration, how it was trained and how it did on held-out pairs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = FORMAT
    application: str
    # Pair-feature columns in the trees' order, and the retrievers and compound embedding they were computed from.
    features: tuple[str, ...]
    retrievers: tuple[str, ...]
    compound_model_id: str
    # Probability = sigmoid(calibration_slope * margin + calibration_intercept).
    calibration_slope: float
    calibration_intercept: float
    training: dict[str, Any]
    holdout: dict[str, Any]
    created_at: str | None = None

    def content_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude={"created_at"}), sort_keys=True, separators=(",", ":"))


def matcher_id_for(spec: MatcherSpec, trees: bytes) -> str:
    digest = hashlib.sha256(spec.content_json().encode("utf-8"))
    digest.update(b"\0")  # never in the JSON (control characters are escaped), so the split is unambiguous
    digest.update(trees)
    return f"matcher-{digest.hexdigest()[:16]}"


def save_matcher(matcher: Matcher, spec: MatcherSpec, registry_uri: str) -> str:
    """Store the matcher under its content id and return the id; the trees first, matcher.json last (it marks completion)."""
    if tuple(spec.features) != matcher.features:
        raise ValueError(f"the spec lists features {spec.features}, the trees were trained on {matcher.features}")
    trees = matcher.trees.model_to_string().encode("utf-8")
    matcher_id = matcher_id_for(spec, trees)
    base = storage.join(registry_uri, matcher_id)
    if storage.exists(storage.join(base, SPEC_FILE)):
        try:
            _read_verified(registry_uri, matcher_id)
            return matcher_id  # already stored; keep its original created_at
        except MatcherRegistryError:
            pass  # a damaged copy: rewrite it
    if spec.created_at is None:
        spec = spec.model_copy(update={"created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    storage.write_bytes(storage.join(base, TREES_FILE), trees)
    storage.write_json(storage.join(base, SPEC_FILE), spec.model_dump(mode="json"))
    return matcher_id


def load_matcher(registry_uri: str, matcher_id: str) -> tuple[Matcher, MatcherSpec]:
    """The stored matcher, after checking its trees are LightGBM text and its files hash to its id."""
    spec, trees = _read_verified(registry_uri, matcher_id)
    try:
        booster = lgb.Booster(model_str=trees.decode("utf-8"))
    except (lgb.basic.LightGBMError, UnicodeDecodeError) as err:
        raise MatcherRegistryError(f"matcher {matcher_id}: {TREES_FILE} is not a valid LightGBM model: {err}") from None
    if booster.num_feature() != len(spec.features):
        raise MatcherRegistryError(
            f"matcher {matcher_id}: the trees read {booster.num_feature()} features, {SPEC_FILE} lists {len(spec.features)}"
        )
    calibration = Calibration(spec.calibration_slope, spec.calibration_intercept)
    return Matcher(booster, calibration, tuple(spec.features)), spec


@lru_cache(maxsize=2)
def load_matcher_cached(registry_uri: str, matcher_id: str) -> tuple[Matcher, MatcherSpec]:
    """load_matcher once per process: a post-filter worker applies one matcher to every partition it handles."""
    return load_matcher(registry_uri, matcher_id)


def _read_verified(registry_uri: str, matcher_id: str) -> tuple[MatcherSpec, bytes]:
    if not MATCHER_ID.match(matcher_id):
        raise MatcherRegistryError(f"{matcher_id!r} is not a matcher id (expected matcher- and 16 hex digits)")
    base = storage.join(registry_uri, matcher_id)
    spec_uri, trees_uri = storage.join(base, SPEC_FILE), storage.join(base, TREES_FILE)
    if not storage.exists(spec_uri) or not storage.exists(trees_uri):
        raise MatcherRegistryError(f"matcher {matcher_id} is not in the registry {registry_uri} (or is incomplete)")
    trees = storage.read_bytes(trees_uri)
    if not trees.startswith(_TREES_HEADER):
        kind = "a pickle" if trees[:1] == b"\x80" else "a zip archive" if trees[:4] == b"PK\x03\x04" else "not LightGBM text"
        raise MatcherRegistryError(f"matcher {matcher_id}: {TREES_FILE} is {kind}; only LightGBM's text format is loaded, refusing it")
    try:
        spec = MatcherSpec.model_validate(json.loads(storage.read_bytes(spec_uri)))
    except (ValueError, ValidationError) as err:
        raise MatcherRegistryError(f"matcher {matcher_id}: {SPEC_FILE} is corrupt: {err}") from None
    if spec.format != FORMAT:
        raise MatcherRegistryError(f"matcher {matcher_id}: {SPEC_FILE} has format {spec.format!r}; this version reads {FORMAT!r}")
    actual = matcher_id_for(spec, trees)
    if actual != matcher_id:
        raise MatcherRegistryError(
            f"matcher {matcher_id}: content hash mismatch (the files hash to {actual}); {SPEC_FILE} or {TREES_FILE} was modified"
        )
    return spec, trees
