"""`pss train`: mine and clean pairs, train a SiameseNet, compare it with the compound on held-out pairs, register it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import faiss
import numpy as np
import pandas as pd

from pss_ops import storage
from pss_ops.catalog.validate import read_catalog, validate_catalog
from pss_ops.config import AppConfig
from pss_ops.features.compound import compound_vectors, input_columns
from pss_ops.learning import part_numbers
from pss_ops.learning.folds import split_by_query
from pss_ops.learning.mining import FeatureBlocks, clean_pairs, hard_negatives, random_negatives
from pss_ops.learning.pairs import NEGATIVE, PairSet, format_pair_source, read_pairs
from pss_ops.learning.registry import save_model
from pss_ops.learning.settings import DEFAULT_HOLDOUT_FRACTION, TrainingConfig
from pss_ops.learning.train import model_spec, train_siamese
from pss_ops.quality.metrics import recall_at_precision
from pss_ops.search.filters import RowFilter, attribute_rules, row_filter
from pss_ops.timing import timed

log = logging.getLogger(__name__)

RECALL_KS = (1, 5, 10)


def _known(pairs: PairSet, ids: set[str], source: str) -> PairSet:
    """Pairs whose two items are in the catalog; any other pair is an error, never silently dropped."""
    missing = [(a, b) for _, a, b, _ in pairs.rows() if a not in ids or b not in ids]
    if missing:
        raise ValueError(f"{len(missing)} pairs in {source} name items not in the accepted catalog, e.g. {missing[0]}")
    return pairs


def _candidate_recall(vectors: np.ndarray, row: dict[str, int], holdout: PairSet, listable: RowFilter) -> dict[str, float]:
    """Share of held-out positive pairs (a, b) with b among a's top-k by exact inner product, the service's post-filter applied."""
    positives = holdout.positives
    queries = sorted(set(positives.id_a.tolist()))
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    depth = min(len(row), 200)
    scores, found = index.search(vectors[[row[q] for q in queries]], depth)
    rank_of: dict[tuple[str, str], int] = {}
    ids = np.array(sorted(row, key=row.__getitem__), dtype=object)
    for q, hits, hit_scores in zip(queries, found, scores):
        others = (hits >= 0) & (hits != row[q])
        keep = hits[others][listable(row[q], hits[others], hit_scores[others])]
        for rank, hit in enumerate(keep[: max(RECALL_KS)], start=1):
            rank_of[(q, ids[hit])] = rank
    ranks = np.array([rank_of.get((a, b), 10**9) for a, b in zip(positives.id_a, positives.id_b)])
    return {f"recall@{k}": round(float(np.mean(ranks <= k)), 4) for k in RECALL_KS}


def same_input_negatives(compound: np.ndarray, row: dict[str, int], pairs: PairSet) -> np.ndarray:
    """Mask of the negative pairs whose two items have byte-identical compound vectors.

    Such a pair (on Amazon–Google, a duplicate listing with the same title that the labels missed) scores 1
    under every embedding of these features, so it caps the precision of all of them alike.
    """
    rows = np.ascontiguousarray(compound)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    a = np.fromiter((row[i] for i in pairs.id_a), dtype=np.int64, count=len(pairs))
    b = np.fromiter((row[i] for i in pairs.id_b), dtype=np.int64, count=len(pairs))
    return (pairs.label == NEGATIVE) & (keys[a] == keys[b])


def _verification(vectors: np.ndarray, row: dict[str, int], pairs: PairSet, same_input: np.ndarray) -> dict[str, float]:
    """Recall at precision over all the pairs, and again with the same-input negatives set aside ("separable")."""
    a = vectors[[row[i] for i in pairs.id_a]]
    b = vectors[[row[i] for i in pairs.id_b]]
    scores = np.sum(a * b, axis=1)
    every = recall_at_precision(scores, pairs.label)
    separable = recall_at_precision(scores[~same_input], pairs.label[~same_input])
    return {**{k: round(v, 4) for k, v in every.items()}, **{f"{k} separable": round(v, 4) for k, v in separable.items()}}


@dataclass(frozen=True)
class TrainingData:
    """A catalog's compound vectors, the cleaned training pairs and the untouched held-out pairs, per task.

    synthetic_ids / synthetic_compound are items made for training only (part-number negatives): they are never
    candidates or queries in the held-out evaluation.
    """

    ids: list[str]
    compound: np.ndarray
    listable: RowFilter
    train: dict[str, PairSet]
    holdout: dict[str, PairSet]
    cleaning: dict[str, Any]
    synthetic_ids: list[str] = field(default_factory=list)
    synthetic_compound: np.ndarray | None = None

    @property
    def row(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.ids)}

    def training_vectors(self) -> tuple[list[str], np.ndarray]:
        """The ids and compound vectors every training pair refers to: the catalog's, then the synthetic items'."""
        if self.synthetic_compound is None or not self.synthetic_ids:
            return self.ids, self.compound
        return self.ids + self.synthetic_ids, np.vstack([self.compound, self.synthetic_compound])


def prepare_training_data(
    config: AppConfig,
    *,
    catalog_uri: str,
    pair_sources: Sequence[tuple[str, str]],
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int = 0,
    hard_per_positive: int = 5,
    random_ratio: float = 5.0,
    positive_min: float = 0.6,
    negative_max: float = 0.8,
    part_number_negatives: int = 0,
) -> TrainingData:
    """Embed the catalog, split each task's pairs by query item, mine and clean training negatives (§3.1.3).

    With part_number_negatives > 0, every catalog item that has a part number also gets that many synthetic copies with
    one digit of it changed, as negatives of a "part_numbers" task (see with_part_number_negatives).
    """
    with timed("train: embed catalog"):
        catalog = validate_catalog(read_catalog(catalog_uri), config).accepted
        ids = catalog["item_id"].tolist()
        compound = compound_vectors(catalog, config)
    known = set(ids)
    # The service's post-filter over the catalog's rows: mined negatives and held-out recall follow its rules.
    listable = row_filter(config.post_filter, {a: catalog[a].tolist() for _, a, _ in attribute_rules(config.post_filter)})
    blocks = FeatureBlocks.from_compound(ids, compound, config)
    train: dict[str, PairSet] = {}
    holdout: dict[str, PairSet] = {}
    cleaning: dict[str, Any] = {}
    for uri, task in pair_sources:
        pairs = _known(read_pairs(uri, task), known, uri)
        train_pairs, held = split_by_query(pairs, holdout_fraction=holdout_fraction, seed=seed)
        train_pos = train_pairs.positives
        mined = train_pairs.concat(
            hard_negatives(train_pos, ids, compound, per_positive=hard_per_positive, listable=listable),
            random_negatives(train_pos, ids, ratio=random_ratio, seed=seed),
        )
        train[task], report = clean_pairs(mined, blocks, positive_min=positive_min, negative_max=negative_max)
        cleaning[task] = report.as_dict()
        # Held-out negatives are mined the same way but never cleaned: evaluation sees the hard cases.
        held_pos = held.positives
        holdout[task] = held.concat(
            hard_negatives(held_pos, ids, compound, per_positive=hard_per_positive, listable=listable),
            random_negatives(held_pos, ids, ratio=random_ratio, seed=seed + 1),
        )
    data = TrainingData(ids, compound, listable, train, holdout, cleaning)
    if part_number_negatives:
        data = with_part_number_negatives(data, catalog, config, per_item=part_number_negatives, seed=seed)
    return data


def with_part_number_negatives(data: TrainingData, catalog: pd.DataFrame, config: AppConfig, *, per_item: int, seed: int) -> TrainingData:
    """The training data plus a "part_numbers" task: per_item synthetic negatives for every catalog item with a part number.

    Every item, not only those of training pairs: the copies use no label, so an item of a held-out pair getting one
    tells the model nothing about that pair, and the whole catalog is what the model will embed. The extra embedding
    work is per_item copies of the items that have a part number, not of the whole catalog.
    """
    if part_numbers.TASK in data.train or part_numbers.TASK in data.holdout:
        raise ValueError(f"a pair source is named {part_numbers.TASK!r}, the task of the synthetic part-number negatives; rename it")
    copies, negatives = part_numbers.part_number_negatives(catalog, data.ids, input_columns(config), per_item=per_item, seed=seed)
    with timed("train: embed part-number negatives"):
        synthetic = compound_vectors(copies, config) if len(copies) else np.zeros((0, data.compound.shape[1]), np.float32)
    # Not cleaned: a copy differs from its item by one digit, so it is "very similar on every feature" by design.
    train = {**data.train, part_numbers.TASK: negatives}
    return replace(data, train=train, synthetic_ids=copies["item_id"].tolist(), synthetic_compound=synthetic)


def evaluate_holdout(vectors: np.ndarray, data: TrainingData) -> dict[str, dict[str, float]]:
    """Per task: candidate recall@k of the held-out positives and recall at precision over held-out pairs.

    Recall at precision is given twice: over every held-out pair, and ("R@P90 separable") without the negatives
    whose items have identical compound inputs, which no embedding of the features can score below a positive.
    """
    row = data.row
    report: dict[str, dict[str, float]] = {}
    for task, held in data.holdout.items():
        same_input = same_input_negatives(data.compound, row, held)
        report[task] = {
            **_candidate_recall(vectors, row, held, data.listable),
            **_verification(vectors, row, held, same_input),
            "positives": int(held.label.sum()),
            "negatives": int((held.label == 0).sum()),
            "same_input_negatives": int(same_input.sum()),
        }
    return report


def train_model(
    config: AppConfig,
    *,
    catalog_uri: str,
    pair_sources: Sequence[tuple[str, str]],
    registry_uri: str,
    training: TrainingConfig,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int | None = None,
    **mining: Any,
) -> dict[str, Any]:
    """Train on the config's compound embedding, evaluate against it on held-out queries, save; never promote.

    The held-out split, negative mining and training all use training.seed; a seed given here must equal it.
    """
    if config.embedding_model is not None:
        raise ValueError("train on a config without embedding_model: the model is trained on the compound embedding")
    if seed is not None and seed != training.seed:
        raise ValueError(f"seed {seed} differs from the training config's seed {training.seed}; a run has one seed")
    data = prepare_training_data(
        config,
        catalog_uri=catalog_uri,
        pair_sources=pair_sources,
        holdout_fraction=holdout_fraction,
        seed=training.seed,
        part_number_negatives=training.part_number_negatives,
        **mining,
    )
    ids, vectors = data.training_vectors()
    with timed("train: fit"):
        model, training_report = train_siamese(vectors, ids, data.train, training, feature_widths=[f.dim for f in config.features])
    model_id = save_model(model, model_spec(config, training, data.train), registry_uri)
    holdout = {
        "compound": evaluate_holdout(data.compound, data),
        "model": evaluate_holdout(model.embed(data.compound, device=training.device), data),
    }
    log.info("trained %s: held-out %s", model_id, holdout)
    return {
        "model_id": model_id,
        "registry_uri": registry_uri,
        "compound_model_id": config.compound_model_id,
        "catalog": catalog_uri,
        "pairs": [format_pair_source(uri, task) for uri, task in pair_sources],
        "holdout_fraction": holdout_fraction,
        "training": training_report.as_dict(),
        "training_config": training.model_dump(mode="json"),
        "cleaning": data.cleaning,
        "holdout": holdout,
        "promote_with": {"embedding_model": {"registry_uri": registry_uri, "model_id": model_id}},
    }


def write_report(report: dict[str, Any], uri: str) -> None:
    """The training report as JSON, atomically."""
    storage.write_json(uri, report)
