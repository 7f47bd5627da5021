"""Filter-aware exact lexical top-k: PSS's masked scipy product against sparse_dot_topn, side by side in one run.

The question (the issue): should the lexical retriever's exact top-`fetch` search, with the attribute rules
applied during the search, use sparse_dot_topn (sp_matmul_topn, a maintained top-n sparse product, 1.x) rather
than its own chunked scipy product? Every method runs on the same TF-IDF matrix, each query against every
row of the catalog (one query partition x one index partition), under the rule `different: [seller]`:

  scipy_masked    PSS's masked search as the issue describes it (pss_ops/search/lexical.py::lexical_search at
                  6bd0d97, pss_ops/search/exact.py::exact_search as committed in 314ab4b), copied here as
                  masked_search so that refactors of pss_ops do not change what this row measures: a chunk of
                  queries times rows.T (scipy), densified to (chunk, rows), masked by
                  pss_ops.search.eligibility.Eligibility(PostFilterConfig(different=("seller",)), items, items),
                  argpartition. Every query against every row.
  sdt_postfilter  search then filter, deepen: sp_matmul_topn(Q, C.T, top_n=fetch+extra, threshold=0, sort=True,
                  n_threads=--threads), drop the rows the rule excludes (Eligibility.mask over the returned rows),
                  and search again, top_n x4 each round (up to all rows), for every query left with fewer than
                  `fetch` eligible rows whose search was not exhausted (it returned top_n rows, so more rows with
                  a cosine > 0 may exist): exactly the queries short of min(fetch, eligible rows with cosine > 0).
                  Reported: rounds, and the queries searched again (query-searches after round 1, and distinct).
                  Each call holds at most --sdt-block (2M) result entries (queries x top_n): queries are chunked.
  sdt_per_group   per query group of Eligibility.groups() (the queries sharing a seller), sp_matmul_topn against
                  only that group's eligible rows, C[eligible] (row slicing, then transposed), top_n=fetch; no
                  post-filter. A catalog where every offer is its own shop has one group per query. A group of
                  fewer than 64 queries is searched with n_threads=None (sequential): starting threads costs more.
  scipy_per_group not asked for by the issue, measured to tell the library from the algorithm: the same groups
                  and C[eligible] slices as sdt_per_group, each searched by masked_search (no rules left).
  pss_exact_search  whatever pss_ops.search.exact.exact_search(..., positive_only=True) is in the tree when the
                  bench runs (the header gives the commit and whether that file differs from it).

TF-IDF: the lexical retriever's own weights (pss_ops.features.lexical: term_frequencies of the titles with
LexicalRetriever's defaults, char_wb 2-4-grams, sublinear tf; sum_document_frequencies, ScopeVocabulary.fitted,
tfidf_rows: L2-normalised rows over the catalog's buckets), built once per catalog and shared by all methods.
fetch = k x candidate_multiplier + 1 (the query itself, which the seller rule excludes anyway): 10 x 4 + 1 = 41.

Catalogs (titles real):
  amazon_google  data/amazon_google/catalog.csv, sellers amazon / google as given
  wdc            data/wdc_computers/products.csv, seller <- id (each offer its own shop: the rule excludes only
                 the query itself)
  dominated      --items (default 24,628) items, seller "big" for --big-share (0.9) of them at random, "small"
                 for the rest. Titles: the distinct real titles of both files above (5,454), and as many seeded
                 variants of them as needed (drop a token, swap two adjacent tokens, or append a colour /
                 pack / capacity suffix; no two rows share a title). A smaller --items samples the real titles
                 in the full-size share. Synthetic: for speed, memory and exactness only, never for quality.
                 (bench/seller_dominated.py's recipe, built here: its generator was not committed yet.)

Measured, each method in its own child process (os.wait4, as bench/retrieval.py's run_child):
  seconds       wall time (time.perf_counter) of the search itself in that child: from the loaded TF-IDF matrix
                and item table to every query's (scores, rows), including the Eligibility and any transposes.
                The child's whole wall time (interpreter, imports, load) is in the JSON as child_seconds.
  peak RSS      the child's ru_maxrss. A "load only" child (same imports and load, no search) is the floor.
  exact         the share of queries whose returned score list (best first, `fetch` slots, missing = none)
                equals the exact masked top-`fetch` within 1e-5. The exact answer: a brute-force dense masked
                product (each query against every row, seller compared as strings, full sort) for catalogs of
                at most --brute-force-max items; for a larger one, scipy_masked's lists once a brute-force
                sample of --sample queries has checked it (the sample figures are reported too).
  invalid       returned rows that the rule excludes, or whose returned score is not the pair's cosine
                (recomputed from the TF-IDF rows) within 1e-5.
sparse_dot_topn is not a PSS dependency: it is imported only by its methods' children. If it is missing, its
methods are skipped and the table says so:

    .venv/bin/pip install sparse_dot_topn==1.2.0
    .venv/bin/python bench/lexical_topk.py --out bench/results/lexical_topk.txt
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.retrieval import run_child  # noqa: E402  (standard library only at import)

# The parent imports the standard library only: a child's peak RSS starts from its parent's at fork/exec.
CATALOGS = {
    "amazon_google": "data/amazon_google/catalog.csv",
    "wdc": "data/wdc_computers/products.csv",
    "dominated": "synthetic from the real titles of both files above",
}
METHODS = {
    "scipy_masked": "PSS masked search (scipy, masked)",
    "sdt_postfilter": "sparse_dot_topn, filter after, deepen",
    "sdt_per_group": "sparse_dot_topn per group, C[eligible]",
    "scipy_per_group": "masked_search per group, C[eligible]",
    "pss_exact_search": "pss_ops.search.exact.exact_search",
}
SDT_METHODS = ("sdt_postfilter", "sdt_per_group")
SDT_PIP = ".venv/bin/pip install sparse_dot_topn==1.2.0"
ITEMS = 24_628
BIG_SHARE = 0.9
TOLERANCE = 1e-5
DEEPEN = 4
# sparse_dot_topn result entries per call. An entry is a float32 score and an int32 row from the library, and int64
# row / query temporaries for the filter: 2M entries is about the memory of masked_search's 8M-score dense block
# (SCORE_BLOCK, 32 MB). At 8M entries per call sdt_postfilter took as long and peaked ~2x higher.
SDT_BLOCK = 2 << 20
SCORE_BLOCK = 8 << 20  # masked_search's scores densified at once: queries x rows of float32, 32 MB (as in PSS)
SMALL_GROUP = 64  # sdt_per_group searches a group of fewer queries sequentially (n_threads=None)
# Appended by a dominated-catalog variant: colours, pack sizes and capacities sellers add to a title.
SUFFIXES = (
    "black", "white", "silver", "blue", "red", "grey", "pink", "gold",
    "2-pack", "3-pack", "4-pack", "10-pack", "bulk", "oem", "retail box", "refurbished", "new", "bundle", "kit",
    "8gb", "16gb", "32gb", "64gb", "128gb", "256gb", "500gb", "1tb", "2tb", "4tb",
)  # fmt: skip


# --- the catalogs and their TF-IDF (one child per catalog) ---------------------------------------------


def real_titles() -> Any:
    """The distinct non-empty titles of both real catalogs, in file order."""
    import pandas as pd

    titles = [
        pd.read_csv(ROOT / CATALOGS[name], dtype=str, keep_default_na=False)["title"].str.strip() for name in ("amazon_google", "wdc")
    ]
    both = pd.concat(titles, ignore_index=True)
    return both[both != ""].drop_duplicates().reset_index(drop=True)


def variant(title: str, used: set[str], rng: Any) -> str:
    """An unused string made from a real title: drop a token, swap two adjacent ones, or append a suffix (more edits on collisions)."""
    for attempt in range(60):
        tokens = title.split()
        for _ in range(1 + attempt // 4):
            op = int(rng.integers(3)) if len(tokens) >= 2 else 2
            if op == 0:
                del tokens[int(rng.integers(len(tokens)))]
            elif op == 1:
                at = int(rng.integers(len(tokens) - 1))
                tokens[at], tokens[at + 1] = tokens[at + 1], tokens[at]
            else:
                tokens.append(SUFFIXES[int(rng.integers(len(SUFFIXES)))])
        made = " ".join(tokens)
        if made and made not in used:
            return made
    raise RuntimeError(f"no unused variant of {title!r}")


def dominated_catalog(items: int, big_share: float, seed: int) -> Any:
    """item_id, title, seller: real titles plus seeded variants, `big_share` of the rows seller "big", the rest "small"."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    real = real_titles()
    n_real = max(1, min(len(real), round(items * len(real) / ITEMS)))
    if n_real < len(real):
        real = real.iloc[np.sort(rng.choice(len(real), size=n_real, replace=False))].reset_index(drop=True)
    used = set(real)
    titles = list(real)
    for base in rng.integers(len(real), size=items - len(titles)):
        titles.append(variant(real.iat[base], used, rng))
        used.add(titles[-1])
    titles = [titles[i] for i in rng.permutation(len(titles))]
    seller = np.full(items, "small", dtype=object)
    seller[rng.permutation(items)[: int(round(items * big_share))]] = "big"
    return pd.DataFrame({"item_id": [f"sd:{i:06d}" for i in range(items)], "title": titles, "seller": seller})


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """The catalog's items (item_id, seller) and TF-IDF rows to --workdir; what they hold."""
    import numpy as np
    import pandas as pd

    from pss_ops.config import LexicalRetriever
    from pss_ops.features.lexical import ScopeVocabulary, document_frequencies, sum_document_frequencies, term_frequencies, tfidf_rows

    if args.catalog == "amazon_google":
        items = pd.read_csv(ROOT / CATALOGS["amazon_google"], dtype=str, keep_default_na=False)[["item_id", "title", "seller"]]
    elif args.catalog == "wdc":
        offers = pd.read_csv(ROOT / CATALOGS["wdc"], dtype=str, keep_default_na=False)
        items = pd.DataFrame({"item_id": offers["id"], "title": offers["title"], "seller": offers["id"]})
    else:
        items = dominated_catalog(args.items, args.big_share, args.seed)
    tf = term_frequencies(items["title"].tolist(), LexicalRetriever(type="lexical"))
    buckets, counts = sum_document_frequencies([document_frequencies(tf)])
    matrix = tfidf_rows(tf, ScopeVocabulary.fitted(tf.shape[0], buckets, counts))
    out = Path(args.workdir)
    np.savez(
        out / "tfidf.npz",
        data=matrix.data,
        indices=matrix.indices,
        indptr=matrix.indptr,
        shape=np.asarray(matrix.shape, np.int64),
        item_id=items["item_id"].to_numpy(str),
        seller=items["seller"].to_numpy(str),
    )
    sellers = items["seller"].value_counts()
    return {
        "items": len(items),
        "distinct_sellers": len(sellers),
        "largest_seller_share": round(float(sellers.iloc[0] / len(items)), 4),
        "sellers": {str(k): int(v) for k, v in sellers.iloc[:3].items()},
        "terms": int(matrix.shape[1]),
        "nnz": int(matrix.nnz),
        "empty_rows": int((np.diff(matrix.indptr) == 0).sum()),
    }


def load(workdir: str) -> tuple[Any, Any, Any]:
    """The TF-IDF rows (CSR float32), and the items as a pyarrow table (item_id, seller), and the sellers."""
    import numpy as np
    import pyarrow as pa
    from scipy import sparse

    arrays = np.load(Path(workdir) / "tfidf.npz")
    shape = tuple(int(x) for x in arrays["shape"])
    matrix = sparse.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
    sellers = arrays["seller"]
    return matrix, pa.table({"item_id": arrays["item_id"], "seller": sellers}), sellers


# --- the methods (one child each) ----------------------------------------------------------------------


def masked_search(queries: Any, rows: Any, fetch: int, eligibility: Any) -> tuple[Any, Any]:
    """PSS's masked search (lexical_search, 6bd0d97): each query's best `fetch` eligible rows by cosine > 0, best first."""
    import numpy as np

    n = rows.shape[0]
    scores = np.full((queries.shape[0], fetch), -np.inf, dtype=np.float32)
    found = np.full((queries.shape[0], fetch), -1, dtype=np.int64)
    take = min(fetch, n)
    if take == 0:
        return scores, found
    transposed = rows.T.tocsr()
    chunk = max(1, SCORE_BLOCK // n)
    for start in range(0, queries.shape[0], chunk):
        stop = min(start + chunk, queries.shape[0])
        block = np.minimum((queries[start:stop] @ transposed).toarray(), 1.0)
        block[block <= 0] = -np.inf
        if eligibility is not None and eligibility.has_rules:
            block[~eligibility.mask(np.arange(start, stop))] = -np.inf
        top = np.argpartition(-block, take - 1, axis=1)[:, :take] if take < n else np.tile(np.arange(n), (stop - start, 1))
        top_scores = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top_scores = np.take_along_axis(top_scores, order, axis=1)
        top = np.take_along_axis(top, order, axis=1)
        scores[start:stop, :take] = top_scores
        found[start:stop, :take] = np.where(np.isfinite(top_scores), top, -1)
    return scores, found


def scatter(scores: Any, found: Any, owners: Any, rows: Any, values: Any, fetch: int) -> None:
    """Each owner's entries, best first, into its first `fetch` slots of (scores, found)."""
    import numpy as np

    order = np.lexsort((-values, owners))
    owners, rows, values = owners[order], rows[order], values[order]
    rank = np.arange(len(owners)) - np.searchsorted(owners, owners, side="left")
    keep = rank < fetch
    scores[owners[keep], rank[keep]] = values[keep]
    found[owners[keep], rank[keep]] = rows[keep]


def sdt_postfilter(matrix: Any, fetch: int, eligibility: Any, extra: int, threads: int, block: int) -> tuple[Any, Any, dict[str, Any]]:
    """Search the top fetch+extra of every row, drop the ineligible, search again x4 deeper for the queries still short."""
    import numpy as np
    from sparse_dot_topn import sp_matmul_topn

    n = matrix.shape[0]
    scores = np.full((n, fetch), -np.inf, dtype=np.float32)
    found = np.full((n, fetch), -1, dtype=np.int64)
    transposed = matrix.T.tocsr()
    pending, top_n, searched = np.arange(n), min(fetch + extra, n), []
    while pending.size:
        searched.append({"top_n": top_n, "queries": int(pending.size)})
        short = []
        step = max(1, block // top_n)
        for start in range(0, len(pending), step):
            part = pending[start : start + step]
            result = sp_matmul_topn(matrix[part], transposed, top_n=top_n, threshold=0.0, sort=True, n_threads=threads)
            counts = np.diff(result.indptr)
            local = np.repeat(np.arange(len(part)), counts)
            rows = result.indices.astype(np.int64)
            keep = eligibility.mask(part[local], rows[:, None])[:, 0]
            kept = np.bincount(local[keep], minlength=len(part))
            # Exhausted (fewer than top_n rows with a cosine > 0) or deep enough: this query's answer is exact.
            done = (kept >= fetch) | (counts < top_n) | (top_n >= n)
            take = keep & done[local]
            scatter(scores, found, part[local[take]], rows[take], result.data[take], fetch)
            short.append(part[~done])
        pending = np.concatenate(short)
        top_n = min(top_n * DEEPEN, n)
    again = sum(s["queries"] for s in searched[1:])
    return (
        scores,
        found,
        {
            "rounds": len(searched),
            "re_searched": again,
            "re_searched_queries": searched[1]["queries"] if len(searched) > 1 else 0,
            "round_queries": searched,
        },
    )


def sdt_per_group(matrix: Any, fetch: int, eligibility: Any, threads: int, block: int) -> tuple[Any, Any, dict[str, Any]]:
    """Per group of queries sharing their rule values, the top `fetch` of its eligible rows only (C[eligible])."""
    import numpy as np
    from sparse_dot_topn import sp_matmul_topn

    n = matrix.shape[0]
    scores = np.full((n, fetch), -np.inf, dtype=np.float32)
    found = np.full((n, fetch), -1, dtype=np.int64)
    groups = 0
    for group in eligibility.groups():
        groups += 1
        rows = group.eligible_rows(n)
        if not len(rows):
            continue
        take = min(fetch, len(rows))
        transposed = matrix[rows].T.tocsr()
        step = max(1, block // take)
        for start in range(0, len(group.positions), step):
            part = group.positions[start : start + step]
            # Threads for a group of one query cost more to start than the product (a shop per offer: 1 query each).
            workers = threads if len(part) >= SMALL_GROUP else None
            result = sp_matmul_topn(matrix[part], transposed, top_n=take, threshold=0.0, sort=True, n_threads=workers)
            local = np.repeat(np.arange(len(part)), np.diff(result.indptr))
            scatter(scores, found, part[local], rows[result.indices], result.data, fetch)
    return scores, found, {"groups": groups}


def scipy_per_group(matrix: Any, fetch: int, eligibility: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The groups and slices of sdt_per_group, each searched by masked_search without rules."""
    import numpy as np

    n = matrix.shape[0]
    scores = np.full((n, fetch), -np.inf, dtype=np.float32)
    found = np.full((n, fetch), -1, dtype=np.int64)
    groups = 0
    for group in eligibility.groups():
        groups += 1
        rows = group.eligible_rows(n)
        if not len(rows):
            continue
        scores[group.positions], local = masked_search(matrix[group.positions], matrix[rows], fetch, None)
        found[group.positions] = np.where(local >= 0, rows[np.maximum(local, 0)], -1)
    return scores, found, {"groups": groups}


def run_method(args: argparse.Namespace) -> dict[str, Any]:
    """One method over the catalog's TF-IDF rows (every item a query); its (scores, rows) to --result."""
    import numpy as np

    from pss_ops.config import PostFilterConfig
    from pss_ops.search.eligibility import Eligibility
    from pss_ops.search.exact import exact_search

    if args.worker in SDT_METHODS:
        import sparse_dot_topn  # noqa: F401  (imported before the clock starts, as scipy is)

    matrix, table, _ = load(args.workdir)
    rules = PostFilterConfig(different=("seller",))
    started = time.perf_counter()
    if args.worker == "load_only":
        return {"items": matrix.shape[0]}
    eligibility = Eligibility(rules, table, table)
    if args.worker == "scipy_masked":
        scores, found = masked_search(matrix, matrix, args.fetch, eligibility)
        extra: dict[str, Any] = {}
    elif args.worker == "pss_exact_search":
        scores, found, _ = exact_search(matrix, matrix, args.fetch, eligibility, positive_only=True)
        extra = {}
    elif args.worker == "sdt_postfilter":
        scores, found, extra = sdt_postfilter(matrix, args.fetch, eligibility, args.extra, args.threads, args.sdt_block)
    elif args.worker == "sdt_per_group":
        scores, found, extra = sdt_per_group(matrix, args.fetch, eligibility, args.threads, args.sdt_block)
    elif args.worker == "scipy_per_group":
        scores, found, extra = scipy_per_group(matrix, args.fetch, eligibility)
    else:
        raise ValueError(f"unknown method {args.worker}")
    seconds = time.perf_counter() - started
    np.savez(args.result, scores=scores, found=found)
    return {"seconds": round(seconds, 3), **extra}


# --- exactness (one child per catalog) ------------------------------------------------------------------


def brute_force(matrix: Any, sellers: Any, positions: Any, fetch: int) -> Any:
    """The exact masked top-`fetch` scores of the given queries: every row's cosine, other sellers only, full sort."""
    import numpy as np

    transposed = matrix.T.tocsr()
    out = np.full((len(positions), fetch), -np.inf, dtype=np.float32)
    take = min(fetch, matrix.shape[0])
    for start in range(0, len(positions), 256):
        part = positions[start : start + 256]
        block = (matrix[part] @ transposed).toarray()
        block[block <= 0] = -np.inf
        block[sellers[part][:, None] == sellers[None, :]] = -np.inf
        out[start : start + len(part), :take] = -np.sort(-block, axis=1)[:, :take]
    return out


def equal_lists(a: Any, b: Any) -> Any:
    """Per query: the two score lists agree slot by slot (both missing, or both present within TOLERANCE)."""
    import numpy as np

    fa, fb = np.isfinite(a), np.isfinite(b)
    close = np.abs(np.where(fa, a, 0.0) - np.where(fb, b, 0.0)) <= TOLERANCE
    return ((fa == fb) & (~fa | close)).all(axis=1)


def check(args: argparse.Namespace) -> dict[str, Any]:
    """Each method's exact fraction against the exact answer, and its returned rows' validity."""
    import numpy as np

    matrix, _, sellers = load(args.workdir)
    n, fetch = matrix.shape[0], args.fetch
    results = {m: np.load(path) for m, path in json.loads(args.results).items()}
    full = n <= args.brute_force_max
    if full:
        positions = np.arange(n)
    else:
        positions = np.sort(np.random.default_rng(args.seed).choice(n, size=min(args.sample, n), replace=False))
    exact = brute_force(matrix, sellers, positions, fetch)
    report: dict[str, Any] = {
        "reference": f"brute force, all {n} queries" if full else f"brute force on a sample of {len(positions)} queries",
        "queries_short_of_fetch": int((~np.isfinite(exact[:, -1])).sum()),
        "reference_rows": int(np.isfinite(exact).sum()),
        "queries_checked": len(positions),
        "methods": {},
    }
    reference = None
    if not full and "scipy_masked" in results:
        sample_ok = equal_lists(results["scipy_masked"]["scores"][positions], exact)
        if sample_ok.all():
            reference = results["scipy_masked"]["scores"]
            report["reference"] = (
                f"scipy_masked's lists (all {n} queries), after it matched brute force on every query of a {len(positions)}-query sample"
            )
    for method, arrays in results.items():
        scores, found = arrays["scores"], arrays["found"]
        row: dict[str, Any] = {}
        if full:
            row["exact"] = round(float(equal_lists(scores, exact).mean()), 6)
        else:
            row["exact_sample"] = round(float(equal_lists(scores[positions], exact).mean()), 6)
            row["exact"] = round(float(equal_lists(scores, reference).mean()), 6) if reference is not None else row["exact_sample"]
        present = found >= 0
        queries, _ = np.nonzero(present)
        candidates = found[present]
        ineligible = int((sellers[queries] == sellers[candidates]).sum()) + int((np.isfinite(scores) != present).sum())
        cosines = np.concatenate(
            [
                np.asarray(matrix[queries[i : i + 65_536]].multiply(matrix[candidates[i : i + 65_536]]).sum(axis=1)).ravel()
                for i in range(0, len(queries), 65_536)
            ]
            or [np.zeros(0)]
        )
        wrong = int((np.abs(cosines - scores[present]) > TOLERANCE).sum())
        row["invalid"] = ineligible + wrong
        row["returned"] = int(present.sum())
        report["methods"][method] = row
    return report


# --- the parent: runs the children, prints the tables ---------------------------------------------------


def pss_source() -> dict[str, Any]:
    """The commit the bench runs on, and which of the searched modules differ from it (uncommitted edits)."""
    import subprocess

    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], capture_output=True, text=True, cwd=ROOT)
        return done.stdout.strip() if done.returncode == 0 else ""

    files = ["pss_ops/search/exact.py", "pss_ops/search/eligibility.py", "pss_ops/features/lexical.py"]
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "uncommitted": git("diff", "--name-only", "HEAD", "--", *files).split()}


def worker_command(args: argparse.Namespace, worker: str, work: Path, catalog: str, **options: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, "--workdir", str(work), "--catalog", catalog]
    command += ["--fetch", str(args.fetch), "--extra", str(args.extra), "--threads", str(args.threads), "--seed", str(args.seed)]
    command += ["--items", str(args.items), "--big-share", str(args.big_share)]
    command += ["--sdt-block", str(args.sdt_block), "--sample", str(args.sample), "--brute-force-max", str(args.brute_force_max)]
    for key, value in options.items():
        command += [f"--{key}", value]
    return command


def measure(args: argparse.Namespace, catalog: str, work: Path, sdt_installed: bool) -> dict[str, Any]:
    """One catalog: its TF-IDF, the load-only floor, each method in its own child, then every method's exactness."""
    print(f"[{catalog}] prepare", file=sys.stderr, flush=True)
    made = json.loads(run_child(worker_command(args, "prepare", work, catalog), work / "prepare.log")["last_line"])
    floor = run_child(worker_command(args, "load_only", work, catalog), work / "load_only.log")
    methods: dict[str, Any] = {}
    results: dict[str, str] = {}
    for method in args.methods:
        if method in SDT_METHODS and not sdt_installed:
            methods[method] = {"skipped": "not installed"}
            continue
        print(f"[{catalog}] {method}", file=sys.stderr, flush=True)
        results[method] = str(work / f"{method}.npz")
        child = run_child(worker_command(args, method, work, catalog, result=results[method]), work / f"{method}.log")
        out = json.loads(child["last_line"])
        methods[method] = {"seconds": out.pop("seconds"), "peak_rss_mib": child["peak_rss_mib"], "child_seconds": child["seconds"], **out}
    checked: dict[str, Any] = {"methods": {}}
    if results:
        print(f"[{catalog}] check", file=sys.stderr, flush=True)
        checked = json.loads(
            run_child(worker_command(args, "check", work, catalog, results=json.dumps(results)), work / "check.log")["last_line"]
        )
    for method, row in checked.pop("methods").items():
        methods[method].update(row)
    return {**made, **checked, "load_only_peak_rss_mib": floor["peak_rss_mib"], "methods": methods}


def table(catalog: str, entry: dict[str, Any], args: argparse.Namespace) -> str:
    source = CATALOGS[catalog] if catalog != "dominated" else f"seller-dominated, {CATALOGS['dominated']} (seed {args.seed})"
    sellers = ", ".join(f"{k} {v}" for k, v in entry["sellers"].items())
    lines = [
        f"{catalog}: {source}; {entry['items']} items, {entry['distinct_sellers']} sellers (largest: {sellers}"
        f"{', ...' if entry['distinct_sellers'] > 3 else ''}); TF-IDF {entry['items']} x {entry['terms']}, {entry['nnz']} non-zeros",
    ]
    if "reference" in entry:
        lines.append(
            f"exact answer: {entry['reference']}; queries with fewer than {args.fetch} eligible rows: {entry['queries_short_of_fetch']}"
        )
    lines.append(f"{'method':<54}{'seconds':>9}{'peak RSS MiB':>14}{'exact':>24}{'invalid':>9}  rounds / re-searched queries")
    lines.append(f"{'  load only (imports + matrix, no search)':<54}{'':>9}{entry['load_only_peak_rss_mib']:>14.0f}")
    for method in args.methods:
        row = entry["methods"][method]
        label = f"{method}: {METHODS[method]}"
        if "skipped" in row:
            lines.append(f"{label:<54}  {row['skipped']} ({SDT_PIP})")
            continue
        exact = f"{row['exact']:.4f}"
        if "exact_sample" in row:
            exact += f" (sample {row['exact_sample']:.4f})"
        notes = ""
        if method == "sdt_postfilter":
            depth = " -> ".join(f"top {s['top_n']}: {s['queries']}" for s in row["round_queries"])
            rounds = f"{row['rounds']} round{'s' if row['rounds'] > 1 else ''}"
            notes = f"{rounds}, {row['re_searched']} query-searches again ({row['re_searched_queries']} queries); {depth}"
        elif method in ("sdt_per_group", "scipy_per_group"):
            notes = f"1 round, {row['groups']} query groups (one C[eligible] slice each)"
        else:
            notes = "1 round (mask during the search)" if method == "scipy_masked" else "as in the tree (header)"
        lines.append(f"{label:<54}{row['seconds']:>9.2f}{row['peak_rss_mib']:>14.0f}{exact:>24}{row['invalid']:>9}  {notes}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogs", default=",".join(CATALOGS), help=f"comma-separated, of {', '.join(CATALOGS)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--items", type=int, default=ITEMS, help="size of the dominated catalog")
    parser.add_argument("--big-share", type=float, default=BIG_SHARE, help="share of the dominated catalog's seller 'big'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fetch", type=int, default=41, help="rows per query: k 10 x candidate_multiplier 4, plus 1 for self")
    parser.add_argument("--extra", type=int, help="sdt_postfilter's first top_n is fetch + extra (default: fetch)")
    parser.add_argument("--threads", type=int, default=2, help="sparse_dot_topn's n_threads")
    parser.add_argument("--sdt-block", type=int, default=SDT_BLOCK, help="sparse_dot_topn result entries per call (queries x top_n)")
    parser.add_argument("--brute-force-max", type=int, default=10_000, help="catalogs up to this size are checked in full by brute force")
    parser.add_argument("--sample", type=int, default=2_000, help="brute-force sample of queries for larger catalogs")
    parser.add_argument("--out", help="also write the printed output to this file")
    parser.add_argument("--work-dir", help="keep the matrices and results here (default: a temp dir, removed)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--catalog", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.extra is None:
        args.extra = args.fetch

    if args.worker:
        if args.worker == "prepare":
            result = prepare(args)
        elif args.worker == "check":
            result = check(args)
        else:
            result = run_method(args)
        print(json.dumps(result))
        return 0

    args.methods = [m for m in args.methods.split(",") if m]
    names = [c for c in args.catalogs.split(",") if c]
    if not args.methods or any(m not in METHODS for m in args.methods):
        parser.error(f"--methods: use {', '.join(METHODS)}")
    if not names or any(c not in CATALOGS for c in names):
        parser.error(f"--catalogs: use {', '.join(CATALOGS)}")
    source = pss_source()
    sdt_installed = importlib.util.find_spec("sparse_dot_topn") is not None
    sdt_version = None
    if sdt_installed:
        from importlib.metadata import version

        sdt_version = version("sparse_dot_topn")
    elif any(m in SDT_METHODS for m in args.methods):
        print(f"sparse_dot_topn is not installed, so its methods are skipped; for this benchmark only: {SDT_PIP}", file=sys.stderr)

    root = Path(args.work_dir or tempfile.mkdtemp(prefix="pss-bench-lexical-topk-"))
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report: dict[str, Any] = {}
    try:
        for name in names:
            work = root / name
            work.mkdir(parents=True, exist_ok=True)
            report[name] = measure(args, name, work, sdt_installed)
    finally:
        if not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()

    text = io.StringIO()
    with redirect_stdout(text):
        print(
            f"Filter-aware exact lexical top-{args.fetch} (rule: different seller), TF-IDF char_wb 2-4 of titles, every item a query; "
            f"sparse_dot_topn {sdt_version or 'not installed'}, n_threads {args.threads}, first top_n {args.fetch + args.extra}, "
            f"{args.sdt_block} result entries per call; "
            f"started {started}, {os.cpu_count()} CPUs, 1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
        )
        edits = f", with uncommitted edits to {', '.join(source['uncommitted'])}" if source["uncommitted"] else ""
        print(f"PSS at commit {source['commit']}{edits}")
        if not sdt_installed and any(m in SDT_METHODS for m in args.methods):
            print(f"sparse_dot_topn is not installed (not a PSS dependency); for this benchmark only: {SDT_PIP}")
        for name, entry in report.items():
            print()
            print(table(name, entry, args))
        print(
            json.dumps(
                {
                    "bench": "lexical_topk",
                    "fetch": args.fetch,
                    "first_top_n": args.fetch + args.extra,
                    "deepen": DEEPEN,
                    "threads": args.threads,
                    "sdt_block": args.sdt_block,
                    "tolerance": TOLERANCE,
                    "sparse_dot_topn": sdt_version,
                    "pss": source,
                    "started": started,
                    "load_average": {"before": load_before[0], "after": load_after[0]},
                    "catalogs": report,
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
