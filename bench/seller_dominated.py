"""`pss run` on a catalog where one seller holds ~90% of the items: query vs embed time, peak RSS, short of k.

Target: on a 24.6k-item catalog where one seller holds 90% of the items, the query step of
`pss run --config examples/near_identical.yaml` takes less than a quarter of the embed step's time in the same
run; peak RSS stays <= 1.5 GB (1536 MiB); 0 queries are short of k. Also reported: each retriever's recall@k
against exact brute force with the same rules (the run summary's sampled check), target >= 0.99.

THE CATALOG IS SYNTHETIC; ITS TITLES ARE REAL. Every title is, or is derived from, a real product title of
data/amazon_google/catalog.csv (4,589 listings) and data/wdc_computers/products.csv (1,263 offers), with that
listing's description, brand and price. There are only 5,454 distinct non-empty real titles among their 5,852
rows, so the rest of the catalog is deterministic variants of them (a seeded numpy RNG): drop one token, swap
two adjacent tokens, or append a plausible suffix ("black", "2-pack", "16gb", ...); an already used string is
redrawn (with more edits after repeated collisions), so no two rows share a title. Every size keeps the
full-size mix (5,454 real of 24,628, ~22%): a smaller --items samples that share of the real titles and makes
the rest variants of the sampled ones; a larger one uses all real titles. Sellers are assigned at random:
"big" for a --big-share of the rows, "small" for the rest; one category ("electronics") for all rows; item_id
"sd:000000".. in row order (rows shuffled). There is no truth file: these
variants are not labelled matches, so this catalog is for speed, memory and short-of-k only, never for
quality claims (the recall reported is the search's recall against exact search, not match quality).

Default size and shares are those of Walmart–Amazon (Magellan): 24,628 items, 22,074 "big" (Amazon) and
2,554 "small" (Walmart), so --big-share defaults to 22074/24628 ≈ 0.896; --big-share 0.9 gives 22,165 / 2,463.

Measured: `pss run --config CONFIG --catalog CATALOG --out TMP` as a child process (the `pss` console script
beside this interpreter), a fresh --out so the embedding cache is cold; its wall seconds and peak RSS from
os.wait4 (bench/retrieval.py's run_child). The catalog is built in its own process, so this parent stays on
the standard library and the child's peak RSS does not start from a parent holding pandas. From the run's
run_summary.json: step_seconds (task seconds from the step manifests; the verdict's ratio is query / embed
of these), wall_seconds per stage, counts, and the search block (recall_by_retriever, recall_at_k,
dense_queries_exact, dense_queries_fallback, queries_without_candidates). Prints a table and verdicts, then
one JSON line (with the 1-min load average before and after, and the start time).

    .venv/bin/python bench/seller_dominated.py --out bench/results/seller_dominated.txt
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

from bench.retrieval import pss_command, run_child  # noqa: E402  (standard library only at import)

SOURCES = {"amazon_google": "data/amazon_google/catalog.csv", "wdc": "data/wdc_computers/products.csv"}
COLUMNS = ["item_id", "title", "description", "brand", "price", "seller", "category"]
CATEGORY = "electronics"
ITEMS = 24_628  # Walmart–Amazon: 2,554 Walmart + 22,074 Amazon listings
BIG_SHARE = 22_074 / 24_628
# Appended by a variant: colours, pack sizes, capacities and listing words sellers add to a title.
SUFFIXES = (
    "black", "white", "silver", "blue", "red", "grey", "pink", "gold",
    "2-pack", "3-pack", "4-pack", "10-pack", "bulk", "oem", "retail box", "refurbished", "new", "bundle", "kit",
    "8gb", "16gb", "32gb", "64gb", "128gb", "256gb", "500gb", "1tb", "2tb", "4tb",
    "with case", "with cable", "us version", "international version",
)  # fmt: skip
MAX_ATTEMPTS = 60  # redraws of a variant whose string is already used; each few attempts apply one more edit
STEPS = ("plan", "embed", "plan_index", "build_index", "query", "post_filter", "publish", "report")  # pss run's order
TARGETS = {"query_over_embed": 0.25, "peak_rss_mib": 1536.0, "queries_short_of_k": 0, "recall": 0.99}


# --- the catalog (its own process) ---------------------------------------------------------------------


def real_rows() -> Any:
    """Both sources' listings in the catalog contract's text columns, one row per distinct non-empty title."""
    import pandas as pd

    frames = []
    for source, path in SOURCES.items():
        frame = pd.read_csv(ROOT / path, dtype=str, keep_default_na=False)
        frames.append(
            pd.DataFrame(
                {
                    "title": frame["title"].str.strip(),
                    "description": frame["description"],
                    "brand": frame["brand"],
                    "price": frame["price"],
                    "source": source,
                }
            )
        )
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows["title"] != ""]
    return rows.drop_duplicates("title").reset_index(drop=True)


def edit(tokens: list[str], rng: Any) -> list[str]:
    """One edit of a title's tokens: drop one, swap two adjacent ones, or append a suffix."""
    op = int(rng.integers(3)) if len(tokens) >= 2 else 2
    tokens = list(tokens)
    if op == 0:
        del tokens[int(rng.integers(len(tokens)))]
    elif op == 1:
        at = int(rng.integers(len(tokens) - 1))
        tokens[at], tokens[at + 1] = tokens[at + 1], tokens[at]
    else:
        tokens.append(str(SUFFIXES[int(rng.integers(len(SUFFIXES)))]))
    return tokens


def variant(title: str, used: set[str], rng: Any) -> str:
    """A string not yet used, made from a real title by one edit (more after repeated collisions)."""
    for attempt in range(MAX_ATTEMPTS):
        tokens = title.split()
        for _ in range(1 + attempt // 4):
            tokens = edit(tokens, rng)
        made = " ".join(tokens)
        if made and made not in used:
            return made
    raise RuntimeError(f"no unused variant of {title!r} after {MAX_ATTEMPTS} attempts")


def build_catalog(items: int, big_share: float, seed: int, out: Path) -> dict[str, Any]:
    """The synthetic catalog at out (CSV in the catalog contract), and what it holds."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    real = real_rows()
    available = len(real)
    # The full-size mix of real titles and variants at every size: a smaller catalog samples its real titles.
    n_real = max(1, min(len(real), round(items * len(real) / ITEMS)))
    if n_real < len(real):
        real = real.iloc[np.sort(rng.choice(len(real), size=n_real, replace=False))].reset_index(drop=True)
    used = set(real["title"])
    bases = rng.integers(len(real), size=items - n_real)
    titles = []
    for base in bases:
        titles.append(variant(real["title"].iat[base], used, rng))
        used.add(titles[-1])
    made = real.iloc[bases].assign(title=titles, variant=True)
    rows = pd.concat([real.assign(variant=False), made], ignore_index=True)
    rows = rows.iloc[rng.permutation(len(rows))].reset_index(drop=True)
    big = int(round(items * big_share))
    seller = np.full(items, "small", dtype=object)
    seller[rng.permutation(items)[:big]] = "big"
    rows = rows.assign(item_id=[f"sd:{i:06d}" for i in range(items)], seller=seller, category=CATEGORY)
    if rows["title"].duplicated().any() or rows["item_id"].duplicated().any():
        raise RuntimeError("duplicate title or item_id in the built catalog")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows[COLUMNS].to_csv(out, index=False)
    sources = rows.groupby("source")["variant"].agg(real=lambda v: int((~v).sum()), variants=lambda v: int(v.sum()))
    return {
        "path": str(out),
        "items": len(rows),
        "sellers": {name: int((rows["seller"] == name).sum()) for name in ("big", "small")},
        "big_share": round(float((rows["seller"] == "big").mean()), 4),
        "real_titles": int((~rows["variant"]).sum()),
        "variant_titles": int(rows["variant"].sum()),
        "real_titles_available": available,
        "by_source": {source: {k: int(v) for k, v in counts.items()} for source, counts in sources.iterrows()},
        "distinct_titles": int(rows["title"].nunique()),
        "categories": sorted(rows["category"].unique().tolist()),
        "seed": seed,
    }


# --- the parent: builds, runs, reports ------------------------------------------------------------------


def code_version() -> dict[str, Any]:
    """The commit measured and the uncommitted changes to the pipeline's code and configs (None outside a git checkout)."""

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    changed = git("status", "--porcelain", "--", "pss_ops", "examples")
    return {"commit": git("rev-parse", "--short=12", "HEAD"), "uncommitted": None if changed is None else changed.splitlines()}


def verdict(value: float | None, target: float, better: str) -> dict[str, Any]:
    """Met or not against the target; margin = how far inside (positive) or outside (negative) it, and relative."""
    if value is None or value != value:  # missing or NaN
        return {"value": value, "target": f"{better} {target}", "met": False, "margin": None, "margin_relative": None}
    margin = {"<": target - value, "<=": target - value, ">=": value - target, "==": -abs(value - target)}[better]
    met = {"<": value < target, "<=": value <= target, ">=": value >= target, "==": value == target}[better]
    return {
        "value": value,
        "target": f"{better} {target}",
        "met": bool(met),
        "margin": round(margin, 4),
        "margin_relative": round(margin / target, 4) if target else None,
    }


def summarise(summary: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """The figures this bench reports from one run's summary and its process; missing keys come back as None."""
    steps = summary.get("step_seconds", {})
    counts = summary.get("counts", {})
    search = summary.get("search", {})
    embed, query = steps.get("embed"), steps.get("query")
    ratio = round(query / embed, 4) if embed and query is not None else None
    wall = summary.get("wall_seconds", {})
    wall_ratio = round(wall["query"] / wall["embed"], 4) if wall.get("embed") and "query" in wall else None
    recalls = search.get("recall_by_retriever") or {}
    return {
        "seconds": child["seconds"],
        "peak_rss_mib": child["peak_rss_mib"],
        "step_seconds": steps,
        "wall_seconds": wall,
        "query_over_embed": ratio,
        "query_over_embed_wall": wall_ratio,
        "rest_seconds": round(sum(v for k, v in steps.items() if k not in ("embed", "query")), 3),
        "counts": {
            key: counts.get(key)
            for key in ("rows_read", "rows_accepted", "rows_rejected", "queries", "rows_published", "queries_short_of_k")
        },
        "cache": summary.get("cache"),
        "search": {
            key: search.get(key)
            for key in (
                "recall_at_k",
                "recall_by_retriever",
                "sample_queries",
                "dense_queries_exact",
                "dense_queries_fallback",
                "queries_without_candidates",
                "candidates_per_query",
                "index_used",
            )
        },
        "candidates_removed": summary.get("post_filter", {}).get("candidates_removed"),
        "verdicts": {
            "query_over_embed": verdict(ratio, TARGETS["query_over_embed"], "<"),
            "peak_rss_mib": verdict(child["peak_rss_mib"], TARGETS["peak_rss_mib"], "<="),
            "queries_short_of_k": verdict(counts.get("queries_short_of_k"), TARGETS["queries_short_of_k"], "=="),
            **{f"recall_{name}": verdict(value, TARGETS["recall"], ">=") for name, value in recalls.items()},
        },
    }


def report_text(catalog: dict[str, Any], result: dict[str, Any], config: str) -> list[str]:
    """The table of step seconds and the verdict lines."""
    steps, wall = result["step_seconds"], result["wall_seconds"]
    lines = [
        f"catalog: {catalog['items']} items, sellers big {catalog['sellers']['big']} / small {catalog['sellers']['small']} "
        f"(big share {catalog['big_share']}), {catalog['real_titles']} real titles + {catalog['variant_titles']} variants "
        f"(of {catalog['real_titles_available']} distinct real titles), one category; seed {catalog['seed']}",
        f"run: {config}, whole process {result['seconds']:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB, "
        f"cache hits {(result['cache'] or {}).get('hits')} / misses {(result['cache'] or {}).get('misses')}",
        "",
        f"{'step':<14}{'task s':>10}{'stage wall s':>14}",
    ]
    for step in dict.fromkeys([*STEPS, *steps, *wall]):
        if step not in steps and step not in wall:
            continue
        task = steps.get(step)
        lines.append(f"{step:<14}{'' if task is None else f'{task:.2f}':>10}{'' if step not in wall else f'{wall[step]:.2f}':>14}")
    rest = {k: v for k, v in steps.items() if k not in ("embed", "query")}
    lines.append(f"{'not embed/query':<14}{sum(rest.values()):>10.2f}   ({', '.join(rest)}; report has no task seconds)")
    counts, search = result["counts"], result["search"]
    lines += [
        "",
        f"counts: {', '.join(f'{k} {v}' for k, v in counts.items())}",
        f"search: recall_at_k {search['recall_at_k']} on {search['sample_queries']} sampled queries, by retriever "
        f"{search['recall_by_retriever']}; dense queries exact {search['dense_queries_exact']}, fallback "
        f"{search['dense_queries_fallback']}; queries without candidates {search['queries_without_candidates']}",
        f"query / embed: {result['query_over_embed']} by task seconds, {result['query_over_embed_wall']} by stage wall seconds",
        "",
        "verdicts:",
    ]
    for name, v in result["verdicts"].items():
        state = "met" if v["met"] else "NOT MET"
        margin = (
            ""
            if v["margin"] is None
            else f", margin {v['margin']:+g}" + ("" if v["margin_relative"] is None else f" ({v['margin_relative']:+.1%} of target)")
        )
        lines.append(f"  {name:<24} {v['value']!s:>10}  target {v['target']:<9} {state}{margin}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=ITEMS)
    parser.add_argument("--big-share", type=float, default=BIG_SHARE, help="share of rows with seller 'big' (default 22074/24628)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="examples/near_identical.yaml")
    parser.add_argument("--out", help="also write the printed output to this file")
    parser.add_argument("--work-dir", help="keep the catalog and the run here (default: a temp dir, removed)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--catalog-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "build":
        print(json.dumps(build_catalog(args.items, args.big_share, args.seed, Path(args.catalog_out))))
        return 0
    if args.items < 2 or not 0 < args.big_share < 1:
        parser.error("--items must be >= 2 and --big-share in (0, 1)")

    args.config = str(Path(args.config).resolve())
    config = os.path.relpath(args.config, ROOT)
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="pss-bench-seller-dominated-"))
    root.mkdir(parents=True, exist_ok=True)
    code = code_version()
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        build = [sys.executable, str(Path(__file__).resolve()), "--worker", "build", "--items", str(args.items)]
        build += ["--big-share", repr(args.big_share), "--seed", str(args.seed), "--catalog-out", str(root / "catalog.csv")]
        print(f"building the catalog ({args.items} items)", file=sys.stderr, flush=True)
        built = run_child(build, root / "build.log")
        catalog = {**json.loads(built["last_line"]), "build_seconds": built["seconds"]}
        out = root / "run"
        shutil.rmtree(out, ignore_errors=True)  # fresh --out: a cold embedding cache
        print(f"pss run --config {config} --catalog {catalog['path']} --out {out}", file=sys.stderr, flush=True)
        child = run_child(
            [*pss_command(), "run", "--config", args.config, "--catalog", catalog["path"], "--out", str(out)], root / "run.log"
        )
        summary = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
    finally:
        if not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()
    missing = [key for key in ("step_seconds", "counts", "search") if key not in summary]
    result = summarise(summary, child)

    text = io.StringIO()
    with redirect_stdout(text):
        print(
            f"Seller-dominated catalog (real titles, synthetic catalog: speed / memory / short-of-k only); started {started}, "
            f"1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
        )
        dirty = f", uncommitted changes {code['uncommitted']}" if code["uncommitted"] else ""
        print(f"code: commit {code['commit']}{dirty}")
        if missing:
            print(f"run_summary.json lacks {missing}; its keys: {sorted(summary)}")
        print("\n".join(report_text(catalog, result, config)))
        catalog_shown = {**catalog, "path": catalog["path"] if args.work_dir else "(temp dir, removed)"}
        print(
            json.dumps(
                {
                    "bench": "seller_dominated",
                    "config": config,
                    "started": started,
                    "code": code,
                    "load_average": {"before": load_before[0], "after": load_after[0]},
                    "catalog": catalog_shown,
                    "targets": TARGETS,
                    **result,
                    "summary_keys": sorted(summary),
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
