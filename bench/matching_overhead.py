"""What a matcher adds to a run: its seconds beside the search (query) step's, measured side by side.

Target (issue 13): on the demo (Amazon–Google, examples/near_identical.yaml), matching adds at most 25% to the
search step's time.

Steps, each `pss` command a child process as a user runs it:
1. `pss run` without a matcher (fills the embedding cache; not timed);
2. labels for half of the products from the known matches (examples/labels_from_truth.py), `pss train-matcher`;
3. --repeats rounds, each one `pss run` without and one with the matcher, into the same --out (warm cache), so
   both see the same machine load. From each run's run_summary.json: the query step's seconds, the
   post-filter's, the publish's (duplicate groups are formed there), and the matcher's own seconds
   (`matching.seconds`: features, trees and ranking inside the post-filter).

Reported per round and as medians: matching / query (the target's ratio), the post-filter's and the publish's
extra seconds with the matcher over the query's, and the load average before and after.

    .venv/bin/python bench/matching_overhead.py --out bench/results/matching_overhead.txt
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.retrieval import pss_command, run_child  # noqa: E402  (standard library only at import)

TARGET = 0.25


def _summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "run_summary.json").read_text(encoding="utf-8"))


def _run(config: Path, catalog: str, out: Path, log: Path) -> dict[str, Any]:
    run_child([*pss_command(), "run", "--config", str(config), "--catalog", catalog, "--out", str(out)], log)
    return _summary(out)


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out = work / "out"
    plain = Path(args.config).resolve()
    _run(plain, args.catalog, out, work / "first.log")
    labels = work / "labels"
    label = [sys.executable, str(ROOT / "examples" / "labels_from_truth.py"), "--pairs", str(out / "similar_items.parquet")]
    run_child([*label, "--truth", args.truth, "--out-dir", str(labels)], work / "labels.log")
    train = [*pss_command(), "train-matcher", "--config", str(plain), "--catalog", args.catalog]
    train += ["--pairs", str(labels / "train_pairs.csv"), "--registry", str(work / "matchers"), "--out", str(out)]
    matcher_id = run_child(train, work / "train.log")["last_line"].strip()
    matched = work / "matched.yaml"
    matched.write_text(
        plain.read_text(encoding="utf-8") + f"\nmatcher:\n  registry_uri: {work / 'matchers'}\n  model_id: {matcher_id}\n", encoding="utf-8"
    )
    rounds = []
    for number in range(args.repeats):
        load_before = os.getloadavg()[0]
        without = _run(plain, args.catalog, out, work / "without.log")
        with_matcher = _run(matched, args.catalog, out, work / "with.log")
        steps_without, steps_with = without["step_seconds"], with_matcher["step_seconds"]
        query = steps_with["query"]
        rounds.append(
            {
                "round": number + 1,
                "query_seconds": query,
                "query_seconds_without_matcher": steps_without["query"],
                "matching_seconds": with_matcher["matching"]["seconds"],
                "matching_over_query": round(with_matcher["matching"]["seconds"] / query, 4),
                "post_filter_extra_over_query": round((steps_with["post_filter"] - steps_without["post_filter"]) / query, 4),
                "publish_extra_over_query": round((steps_with["publish"] - steps_without["publish"]) / query, 4),
                "duplicate_groups": with_matcher["matching"]["duplicate_groups"],
                "load_before": round(load_before, 2),
                "load_after": round(os.getloadavg()[0], 2),
            }
        )
        print(f"[round {number + 1}] {rounds[-1]}", file=sys.stderr, flush=True)
    median = {
        key: round(statistics.median(r[key] for r in rounds), 4)
        for key in ("query_seconds", "matching_seconds", "matching_over_query", "post_filter_extra_over_query", "publish_extra_over_query")
    }
    return {"matcher_id": matcher_id, "rounds": rounds, "median": median, "target": TARGET, "met": median["matching_over_query"] <= TARGET}


def report(result: dict[str, Any]) -> None:
    print("round  query s  matching s  matching/query  post_filter extra/query  publish extra/query  load")
    for r in result["rounds"]:
        print(
            f"{r['round']:>5}  {r['query_seconds']:>7.2f}  {r['matching_seconds']:>10.2f}  {r['matching_over_query']:>14.3f}"
            f"  {r['post_filter_extra_over_query']:>23.3f}  {r['publish_extra_over_query']:>19.3f}  {r['load_before']}->{r['load_after']}"
        )
    m = result["median"]
    verdict = "met" if result["met"] else "NOT met"
    print(f"median matching/query {m['matching_over_query']:.3f} (target <= {TARGET}: {verdict}); matcher {result['matcher_id']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "near_identical.yaml"))
    parser.add_argument("--catalog", default=str(ROOT / "data" / "amazon_google" / "catalog.csv"))
    parser.add_argument("--truth", default=str(ROOT / "data" / "amazon_google" / "matches.csv"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the table and JSON line here")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="pss-matching-overhead-") as work:
        result = measure(args, Path(work))
    result.update({"started": started, "catalog": args.catalog, "config": args.config})
    text = io.StringIO()
    with redirect_stdout(text):
        report(result)
        print(json.dumps(result))
    print(text.getvalue(), end="")
    if args.out:
        Path(args.out).write_text(text.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    main()
