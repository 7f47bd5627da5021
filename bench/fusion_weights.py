"""How the fused score's weights were chosen: recall@1/@10 of the weighted mean of two cosines, lexical and dense.

For each catalog, every item's exact cosines to every other item under two retrievers of the shipped config
(examples/near_identical.yaml): the lexical retriever's TF-IDF (scikit-learn TfidfVectorizer, char_wb 2-4-grams,
sublinear tf, IDF fitted on the catalog: the same cosines as PSS's hashed TF-IDF) and the dense retriever's
compound embedding of the config's features (pss_ops.features.compound.compound_vectors). Candidates follow the
config's rule (a different seller; WDC gets one seller per offer, as in bench/retrieval.py) and exclude the
query. Each row ranks all candidates by  w * lexical + (1 - w) * dense  and scores candidate recall@1/@10 of
the true pairs (pss_ops.quality.evaluate.candidate_recall). w = 1 is exact TF-IDF, w = 0 the dense retriever.
Exhaustive, so it measures the fusion, not the search; the union of the retrievers' top 40 each, which the
pipeline fuses, holds the fused top 10 (bench/retrieval.py measures the pipeline itself).

    .venv/bin/python bench/fusion_weights.py --out bench/results/fusion_weights.txt
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.retrieval import prepare_wdc  # noqa: E402

WEIGHTS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def ranked_pairs(scores: np.ndarray, ids: np.ndarray, sellers: np.ndarray, k: int) -> pd.DataFrame:
    """Each item's top k of the items its rule allows (another seller, not itself), as ranked pairs."""
    allowed = sellers[:, None] != sellers[None, :]
    masked = np.where(allowed, scores, -np.inf)
    top = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    keep = np.isfinite(np.take_along_axis(masked, top, axis=1))
    queries = np.repeat(np.arange(len(ids)), k).reshape(len(ids), k)
    return pd.DataFrame(
        {
            "query_item_id": ids[queries[keep]],
            "candidate_item_id": ids[top[keep]],
            "rank": np.tile(np.arange(1, k + 1), (len(ids), 1))[keep],
        }
    )


def measure(catalog: str, truth: str, config_path: str, weights: tuple[float, ...]) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from pss_ops.catalog.validate import read_catalog, validate_catalog
    from pss_ops.config import load_config
    from pss_ops.features.compound import compound_vectors
    from pss_ops.quality.evaluate import candidate_recall, load_truth

    config = load_config(config_path)
    accepted = validate_catalog(read_catalog(catalog), config).accepted.reset_index(drop=True)
    ids, sellers = accepted["item_id"].to_numpy(), accepted["seller"].to_numpy()
    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit_transform(accepted["title"])
    lexical = (tfidf @ tfidf.T).toarray()
    vectors = compound_vectors(accepted, config)
    dense = vectors @ vectors.T
    true_pairs = load_truth(truth)
    rows = {}
    for w in weights:
        recall = candidate_recall(ranked_pairs(w * lexical + (1 - w) * dense, ids, sellers, 10), true_pairs, (1, 10))
        rows[f"{w:.1f}"] = {"recall@1": recall["recall@1"], "recall@10": recall["recall@10"]}
    return {"items": len(ids), "true_pairs": int(len(true_pairs)), "weights": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "near_identical.yaml"))
    parser.add_argument("--catalog", help="instead of the two datasets: one catalog in the contract (with --truth)")
    parser.add_argument("--truth")
    parser.add_argument("--out", help="also write the printed output here")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory() as work:
        if args.catalog:
            datasets = {"catalog": (args.catalog, args.truth)}
        else:
            wdc = prepare_wdc(str(ROOT / "data/wdc_computers/products.csv"), str(ROOT / "data/wdc_computers/pairs.csv"), Path(work))
            datasets = {
                "amazon_google": (str(ROOT / "data/amazon_google/catalog.csv"), str(ROOT / "data/amazon_google/matches.csv")),
                "wdc": (wdc["catalog"], wdc["truth"]),
            }
        results = {name: measure(catalog, truth, args.config, WEIGHTS) for name, (catalog, truth) in datasets.items()}
    lines = [f"Fused score w * lexical + (1 - w) * dense, exhaustive, config {Path(args.config).name}; started {started}"]
    for name, result in results.items():
        lines.append("")
        lines.append(f"{name}: {result['items']} items, {result['true_pairs']} true pairs")
        lines.append(f"{'w (lexical share)':<36}{'recall@1':>10}{'recall@10':>11}")
        for w, row in result["weights"].items():
            label = {"0.0": "0.0 (dense retriever alone)", "1.0": "1.0 (exact TF-IDF alone)"}.get(w, w)
            lines.append(f"{label:<36}{row['recall@1']:>10.4f}{row['recall@10']:>11.4f}")
    lines.append(json.dumps({"bench": "fusion_weights", "config": Path(args.config).name, "started": started, "datasets": results}))
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
