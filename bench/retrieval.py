"""Candidate recall of `pss run` against exact TF-IDF and exact MiniLM over titles, side by side in one run.

For each labelled catalog, these methods, each in its own process (peak RSS from wait4 is that method's):
  pipeline  `pss run --config CONFIG --catalog CATALOG --out TMP` exactly as a user runs it (fresh output
            directory, so a cold embedding cache), scored on its similar_items.parquet: the union of the
            config's retrievers, ranked by the fused score. Each retriever alone is scored from the same run's
            query outputs (the rows it found, ranked by its own cosine), so its time and RSS are the run's.
  dense_only  the same run with the config's dense retriever alone (retrievers: [dense])
  tfidf     exact top-k over titles by the cosine of scikit-learn TF-IDF (char_wb 2-4-grams, sublinear tf,
            IDF fitted on the catalog): sparse dot products of every title against all of them
  minilm    exact top-k over titles by the inner product of all-MiniLM-L6-v2 embeddings (encode_texts,
            batch 64, the pipeline's own encoder)
The baselines read the catalog through the pipeline's validation (validate_catalog: same accepted rows, same
NULLs), exclude the query itself, keep candidates to the query's category when the config's scope is
"category", and apply the config's post_filter rules with the service's own definition
(pss_ops.search.filters.row_filter), so every method lists the same kind of candidates.

Score: candidate recall@1/5/10 (pss_ops.quality.evaluate.candidate_recall, as `pss evaluate` reports it): the
share of true pairs (a, b), directed as the truth file lists them, with b among a's top k.
Seconds: wall time of the method's whole process, from start to its result file (interpreter start, imports,
reading the catalog, model load and all). The JSON line also holds each baseline's time after its imports.

Datasets:
  amazon_google  data/amazon_google/catalog.csv (sellers amazon / google), truth data/amazon_google/matches.csv
  wdc            data/wdc_computers/products.csv rewritten to the catalog contract in a temp dir (item_id <- id,
                 title, brand, description, price). Its `source` column is "wdc" for every offer and no shop
                 or host is kept, while the config's `different: [seller]` fails on a NULL or equal seller
                 (it would drop every candidate). Each offer is one shop's listing, so each gets its own
                 seller (seller <- id): the example config runs unchanged and its seller rule excludes only
                 the query itself. Truth: the 300 positive pairs of data/wdc_computers/pairs.csv (label 1),
                 the same pairs as matches.csv.
Prints a table per dataset, then one JSON line.

    .venv/bin/python bench/retrieval.py --datasets amazon_google,wdc --k 10 --out bench/results/retrieval.txt
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The parent imports the standard library only: a child's peak RSS starts from its parent's at fork/exec.
DATASETS = {
    "amazon_google": {"catalog": "data/amazon_google/catalog.csv", "truth": "data/amazon_google/matches.csv"},
    "wdc": {"products": "data/wdc_computers/products.csv", "pairs": "data/wdc_computers/pairs.csv"},
}
METHODS = {
    "pipeline": "pipeline (pss run, config as shipped)",
    "dense_only": "pipeline, dense retriever only",
    "tfidf": "exact TF-IDF char_wb 2-4 (titles)",
    "minilm": "exact MiniLM-L6 (titles)",
}
# Each retriever alone, read from the shipped config's run: the rows it found, ranked by its own cosine.
RETRIEVER_PREFIX = "pipeline:"
TEXT_MODEL = "all-MiniLM-L6-v2"
KS = (1, 5, 10)
QUERY_BATCH = 256


def recall_ks(k: int) -> tuple[int, ...]:
    """The recall@ cut-offs reported: 1, 5, 10 up to k, and k itself."""
    return tuple(sorted({x for x in KS if x <= k} | {k}))


# --- workers: one process each ------------------------------------------------------------------------


def prepare_wdc(products: str, pairs: str, out_dir: Path) -> dict[str, Any]:
    """WDC computers in the catalog contract (one seller per offer) and its positive pairs as the truth file."""
    import pandas as pd

    offers = pd.read_csv(products, dtype=str, keep_default_na=False)
    catalog = pd.DataFrame(
        {
            "item_id": offers["id"],
            "title": offers["title"],
            "brand": offers["brand"],
            "description": offers["description"],
            "price": offers["price"],
            "seller": offers["id"],  # no shop is kept: each offer is its own shop's listing
        }
    )
    labelled = pd.read_csv(pairs, dtype=str, keep_default_na=False)
    truth = labelled.loc[labelled["label"].str.strip() == "1", ["id_a", "id_b"]]
    catalog.to_csv(out_dir / "catalog.csv", index=False)
    truth.to_csv(out_dir / "truth.csv", index=False)
    return {"catalog": str(out_dir / "catalog.csv"), "truth": str(out_dir / "truth.csv")}


def filtered_top_k(score_rows: Any, accepted: Any, config: Any, k: int) -> Any:
    """Each row's exact top-k among the rows its post-filter and scope allow, itself excluded, as ranked pairs."""
    import numpy as np
    import pandas as pd

    from pss_ops.search.filters import attribute_rules, row_filter

    rules = config.post_filter
    listable = row_filter(rules, {a: accepted[a].tolist() for _, a, _ in attribute_rules(rules)})
    ids = accepted["item_id"].to_numpy()
    scope = accepted["category"].to_numpy() if config.scope == "category" else None
    everyone = np.arange(len(ids))
    queries, candidates, ranks = [], [], []
    for start in range(0, len(ids), QUERY_BATCH):
        rows = everyone[start : start + QUERY_BATCH]
        block = score_rows(rows)
        for row, scores in zip(rows, block):
            allowed = listable(row, everyone, scores) & (everyone != row)
            if scope is not None:
                allowed &= scope == scope[row]
            found = np.flatnonzero(allowed)
            if len(found) > k:
                found = found[np.argpartition(-scores[found], k - 1)[:k]]
            found = found[np.argsort(-scores[found], kind="stable")]
            queries.append(np.full(len(found), ids[row], dtype=object))
            candidates.append(ids[found])
            ranks.append(np.arange(1, len(found) + 1))
    return pd.DataFrame(
        {"query_item_id": np.concatenate(queries), "candidate_item_id": np.concatenate(candidates), "rank": np.concatenate(ranks)}
    )


def run_baseline(method: str, config_path: str, catalog: str, out: str, k: int) -> dict[str, Any]:
    """One exact baseline over the catalog's accepted titles; its ranked pairs go to out (Parquet)."""
    import numpy as np
    import pyarrow as pa

    from pss_ops import storage
    from pss_ops.catalog.validate import read_catalog, validate_catalog
    from pss_ops.config import load_config

    started = time.perf_counter()
    config = load_config(config_path)
    accepted = validate_catalog(read_catalog(catalog), config).accepted.reset_index(drop=True)
    titles = accepted["title"].tolist()
    # Each baseline imports only its own library, so neither's peak RSS carries the other's.
    if method == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        matrix = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit_transform(titles)
        vectorised = time.perf_counter()

        def score_rows(rows: np.ndarray) -> np.ndarray:
            return (matrix[rows] @ matrix.T).toarray()  # rows are L2-normalised: the cosine

    elif method == "minilm":
        from pss_ops.features.text.encode import encode_texts

        vectors = encode_texts(titles, model=TEXT_MODEL, batch_size=64)
        vectorised = time.perf_counter()

        def score_rows(rows: np.ndarray) -> np.ndarray:
            return vectors[rows] @ vectors.T  # unit rows: inner product = cosine

    else:
        raise ValueError(f"unknown baseline {method}")
    pairs = filtered_top_k(score_rows, accepted, config, k)
    storage.write_parquet(out, pa.Table.from_pandas(pairs, preserve_index=False))
    return {
        "items": len(accepted),
        "seconds_after_imports": round(time.perf_counter() - started, 3),
        "seconds_vectorise": round(vectorised - started, 3),
    }


def retriever_lists(run_dir: str, k: int) -> dict[str, Any]:
    """Each retriever's own top-k from a pipeline run's query outputs: the rows it found, ranked by its cosine."""
    import pandas as pd

    from pss_ops.search.candidates import found_column, score_column
    from pss_ops.storage import read_parquet

    frames = [read_parquet(str(path)).to_pandas() for path in sorted(Path(run_dir).glob("runs/*/query/*.parquet"))]
    candidates = pd.concat(frames, ignore_index=True)
    names = [c.removeprefix("found_") for c in candidates.columns if c.startswith("found_")]
    out = {}
    for name in names:
        found = candidates[candidates[found_column(name)]].sort_values(["query_item_id", score_column(name)], ascending=[True, False])
        found = found.assign(rank=found.groupby("query_item_id").cumcount() + 1)
        out[name] = found.loc[found["rank"] <= k, ["query_item_id", "candidate_item_id", "rank"]]
    return out


def score(pairs: dict[str, str], truth: str, k: int) -> dict[str, Any]:
    """candidate_recall of each method's ranked pairs (only ranks <= k), and of each retriever of the pipeline's run."""
    from pss_ops.quality.evaluate import candidate_recall, load_truth
    from pss_ops.storage import read_parquet

    ks = recall_ks(k)
    true_pairs = load_truth(truth)
    out = {}
    for method, uri in pairs.items():
        frame = read_parquet(uri, columns=["query_item_id", "candidate_item_id", "rank"]).to_pandas()
        out[method] = candidate_recall(frame[frame["rank"] <= k], true_pairs, ks)
        if method == "pipeline":
            for name, ranked in retriever_lists(str(Path(uri).parent), k).items():
                out[f"{RETRIEVER_PREFIX}{name}"] = candidate_recall(ranked, true_pairs, ks)
    return out


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    if args.worker == "prepare_wdc":
        spec = DATASETS["wdc"]
        return prepare_wdc(str(ROOT / spec["products"]), str(ROOT / spec["pairs"]), Path(args.workdir))
    if args.worker == "score":
        return score(json.loads(args.pairs), args.truth, args.k)
    return run_baseline(args.worker, args.config, args.catalog, args.pairs, args.k)


# --- the parent: runs the children, prints the tables -------------------------------------------------


def run_child(command: list[str], log: Path) -> dict[str, Any]:
    """Run one process to the end: its wall seconds, peak RSS (MiB, its own and its children's) and last stdout line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # Files, not pipes: a child that logs more than a pipe holds would block before wait4 returns.
    with open(log, "w+", encoding="utf-8") as err, tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=ROOT, env=env)
        # wait4: this child's own rusage, not the maximum over every child so far (RUSAGE_CHILDREN).
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
        err.seek(0)
        stderr = err.read()
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({code}):\n{stderr[-4000:]}")
    lines = stdout.strip().splitlines()
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "last_line": lines[-1] if lines else ""}


def pss_command() -> list[str]:
    """The `pss` console script beside this interpreter (as a user runs it), else the same CLI as a module."""
    script = Path(sys.executable).parent / "pss"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pss_ops.cli"]


def worker_command(args: argparse.Namespace, worker: str, **options: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, "--k", str(args.k)]
    for key, value in options.items():
        command += [f"--{key}", value]
    return command


def measure(args: argparse.Namespace, name: str, catalog: str, truth: str, work: Path) -> dict[str, Any]:
    """Every method on one catalog, then every method's recall from one scoring process."""
    results: dict[str, Any] = {}
    pairs: dict[str, str] = {}
    for method in args.methods:
        print(f"[{name}] {method}", file=sys.stderr, flush=True)
        if method in ("pipeline", "dense_only"):
            out = work / method
            config = args.config if method == "pipeline" else dense_only_config(args.config, work)
            command = [*pss_command(), "run", "--config", config, "--catalog", catalog, "--out", str(out)]
            child = run_child(command, work / "pipeline.log")
            summary = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
            results[method] = {
                "seconds": child["seconds"],
                "peak_rss_mib": child["peak_rss_mib"],
                "items": summary["counts"]["rows_accepted"],
                "counts": summary["counts"],
                "step_seconds": summary["step_seconds"],
                "search_recall_by_retriever": summary["search"].get("recall_by_retriever"),
            }
            pairs[method] = str(out / "similar_items.parquet")
        else:
            pairs[method] = str(work / f"{method}.parquet")
            options = {"config": args.config, "catalog": catalog, "pairs": pairs[method]}
            child = run_child(worker_command(args, method, **options), work / f"{method}.log")
            results[method] = {"seconds": child["seconds"], "peak_rss_mib": child["peak_rss_mib"], **json.loads(child["last_line"])}
    scored = json.loads(run_child(worker_command(args, "score", pairs=json.dumps(pairs), truth=truth), work / "score.log")["last_line"])
    for method, recall in scored.items():
        # A retriever's own list comes from the pipeline's run: its time and memory are that run's.
        timing = results["pipeline"] if method.startswith(RETRIEVER_PREFIX) else results[method]
        results[method] = {**recall, **{key: timing[key] for key in ("seconds", "peak_rss_mib", "items")}, **results.get(method, {})}
    # The shipped config's union first, then each of its retrievers alone, then the other methods.
    order = ["pipeline", *(m for m in results if m.startswith(RETRIEVER_PREFIX)), *(m for m in results if m in METHODS and m != "pipeline")]
    return {m: results[m] for m in order if m in results}


def dense_only_config(config: str, work: Path) -> str:
    """The config with its dense retriever alone (the compound embedding, searched with HNSW)."""
    import yaml

    data = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    data["retrievers"] = [r for r in data.get("retrievers", [{"type": "dense"}]) if r["type"] == "dense"]
    if data.get("catalog_uri"):
        data["catalog_uri"] = str((Path(config).parent / data["catalog_uri"]).resolve())
    path = work / "dense_only.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


def ratios(results: dict[str, Any], k: int) -> dict[str, float | None]:
    """The pipeline's recall and seconds over exact TF-IDF's, measured in the same run."""
    if "pipeline" not in results or "tfidf" not in results:
        return {}
    pipe, tfidf = results["pipeline"], results["tfidf"]

    def over(a: float, b: float) -> float | None:
        return round(a / b, 3) if b else None

    keys = [f"recall@{x}" for x in recall_ks(k)]
    return {
        **{f"pipeline_over_tfidf_{key}": over(pipe[key], tfidf[key]) for key in keys},
        "pipeline_over_tfidf_seconds": over(pipe["seconds"], tfidf["seconds"]),
    }


def table(name: str, catalog: str, results: dict[str, Any], k: int) -> str:
    """One dataset's rows: method, recall@ks, seconds, peak RSS."""
    keys = [f"recall@{x}" for x in recall_ks(k)]
    first = next(iter(results.values()))
    lines = [
        f"{name}: {catalog}, {first.get('items')} items, {first['true_pairs']} true pairs (directed, as the truth file lists them)",
        f"{'method':<40}" + "".join(f"{key:>11}" for key in keys) + f"{'seconds':>10}{'peak RSS MiB':>14}",
    ]
    for method, row in results.items():
        label = (
            f"  {method.removeprefix(RETRIEVER_PREFIX)} alone (its own list in that run)"
            if method.startswith(RETRIEVER_PREFIX)
            else METHODS[method]
        )
        lines.append(
            f"{label:<40}" + "".join(f"{row[key]:>11.4f}" for key in keys) + f"{row['seconds']:>10.1f}{row['peak_rss_mib']:>14.0f}"
        )
    missed = {m: r["pairs_whose_query_has_no_results"] for m, r in results.items() if r["pairs_whose_query_has_no_results"]}
    if missed:
        lines.append(f"true pairs whose query has no results: {missed}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="amazon_google,wdc", help=f"comma-separated, of {', '.join(DATASETS)}")
    parser.add_argument("--catalog", help="instead of --datasets: one catalog in the contract (with --truth)")
    parser.add_argument("--truth", help="true pairs (id_a,id_b) for --catalog")
    parser.add_argument("--config", default="examples/near_identical.yaml")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--k", type=int, default=10, help="at most the config's k (the pipeline publishes that many)")
    parser.add_argument("--out", help="also write the printed output to this file")
    parser.add_argument("--work-dir", help="keep the runs here (default: a temp dir, removed)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = _worker(args)
        print(json.dumps(result))
        return 0

    args.config = str(Path(args.config).resolve())
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        parser.error(f"--methods: unknown {unknown}; use {', '.join(METHODS)}")
    if bool(args.catalog) != bool(args.truth):
        parser.error("--catalog and --truth go together")
    names = ["catalog"] if args.catalog else [d for d in args.datasets.split(",") if d]
    if any(d not in DATASETS for d in names if d != "catalog"):
        parser.error(f"--datasets: use {', '.join(DATASETS)}")

    root = Path(args.work_dir or tempfile.mkdtemp(prefix="pss-bench-retrieval-"))
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report: dict[str, Any] = {}
    try:
        for name in names:
            work = root / name
            work.mkdir(parents=True, exist_ok=True)
            if name == "catalog":
                catalog, truth = str(Path(args.catalog).resolve()), str(Path(args.truth).resolve())
            elif name == "wdc":
                made = json.loads(run_child(worker_command(args, "prepare_wdc", workdir=str(work)), work / "prepare.log")["last_line"])
                catalog, truth = made["catalog"], made["truth"]
            else:
                catalog, truth = str(ROOT / DATASETS[name]["catalog"]), str(ROOT / DATASETS[name]["truth"])
            results = measure(args, name, catalog, truth, work)
            report[name] = {"catalog": catalog, "truth": truth, "methods": results, "ratios": ratios(results, args.k)}
    finally:
        if not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()

    text = io.StringIO()
    with redirect_stdout(text):
        print(
            f"Candidate recall@k, k {args.k}, config {os.path.relpath(args.config, ROOT)}; started {started}, "
            f"1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
        )
        for name, entry in report.items():
            if name == "wdc":
                shown = f"{DATASETS['wdc']['products']} in the catalog contract, truth the positives of {DATASETS['wdc']['pairs']}"
            else:
                shown = os.path.relpath(entry["catalog"], ROOT) if entry["catalog"].startswith(str(ROOT)) else entry["catalog"]
            print()
            print(table(name, shown, entry["methods"], args.k))
            if entry["ratios"]:
                print(
                    "pipeline / exact TF-IDF: "
                    + ", ".join(f"{key.removeprefix('pipeline_over_tfidf_')} {v}" for key, v in entry["ratios"].items())
                )
        if "wdc" in report:
            print()
            print(
                "wdc: each offer is its own seller (seller <- id): the config's different-seller rule then excludes only the query itself."
            )
        print(
            json.dumps(
                {
                    "bench": "retrieval",
                    "k": args.k,
                    "config": os.path.relpath(args.config, ROOT),
                    "started": started,
                    "load_average": {"before": load_before[0], "after": load_after[0]},
                    "wdc_seller": "distinct per offer (seller <- id)" if "wdc" in report else None,
                    "datasets": report,
                }
            )
        )
    print(text.getvalue(), end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text.getvalue(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
