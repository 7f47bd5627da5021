"""Title embedding side by side: our path against plain sentence-transformers encode, the caches, cold vs warm.

All in one run, on the same n real titles (Amazon–Google catalog + WDC computers, repeated to reach n):
  st_encode          plain `SentenceTransformer.encode(titles)`, all defaults (batch 32, torch's own threads):
                     the baseline every speedup and cosine is measured against
  st_encode_threads  the same encode with torch set to our thread count, so the thread share of the gain shows
  ours_onnx          pss_ops.features.text.encode.encode_texts as the pipeline runs it (ONNX Runtime, the default)
  ours_torch         the same path on torch (PSS_TEXT_RUNTIME=torch)
  tried_*            variants measured and not kept (int8 quantisation), kept here as the evidence
Load/export time is excluded from titles/s (each variant is warmed on 64 titles first) and reported apart.
Then the embedding cache: warm lookups per second on SQLite and on DynamoDB (moto server on 127.0.0.1),
and the embed step (pss_ops.steps.embed.embed_partition) cold then warm on each backend, model already loaded.
Prints a table, then one JSON line.

    .venv/bin/python bench/embed.py --n 5000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pss_ops.features.text.encode import default_threads, encode_texts, length_sorted_batches, mean_pool  # noqa: E402
from pss_ops.features.text.model import load_text_model, load_tokenizer  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
TITLE_SOURCES = (ROOT / "data" / "amazon_google" / "catalog.csv", ROOT / "data" / "wdc_computers" / "products.csv")
TARGETS = {"speedup": 2.0, "cosine": 0.99, "warm_over_cold": 50.0}
WARMUP = 64
Encoder = Callable[[list[str]], np.ndarray]


def load_titles(n: int) -> list[str]:
    """n real titles, the sources' non-empty titles in file order, repeated if n exceeds them."""
    titles: list[str] = []
    for path in TITLE_SOURCES:
        titles += [t for t in pd.read_csv(path, dtype=str, keep_default_na=False)["title"] if t.strip()]
    return (titles * (n // len(titles) + 1))[:n]


def cosines(reference: np.ndarray, vectors: np.ndarray) -> tuple[float, float]:
    """Per-row cosine to the reference: (min, mean)."""
    c = (reference * vectors).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(vectors, axis=1))
    return float(c.min()), float(c.mean())


def prepare_variant(label: str, titles: list[str], prepare: Callable[[], Encoder]) -> tuple[str, Encoder, float]:
    """Load the variant and warm it on a few titles; that time is its load time, outside titles/s."""
    start = time.perf_counter()
    encode = prepare()
    encode(titles[:WARMUP])
    return label, encode, time.perf_counter() - start


def measure(variants: list[tuple[str, Encoder, float]], titles: list[str], chunk: int) -> list[dict[str, Any]]:
    """Every variant over all titles, chunk by chunk in rotating order, so load swings on a shared machine hit all alike."""
    seconds = {label: 0.0 for label, _, _ in variants}
    parts: dict[str, list[np.ndarray]] = {label: [] for label, _, _ in variants}
    for number, start in enumerate(range(0, len(titles), chunk)):
        block = titles[start : start + chunk]
        shift = number % len(variants)
        for label, encode, _ in variants[shift:] + variants[:shift]:
            began = time.perf_counter()
            parts[label].append(encode(block))
            seconds[label] += time.perf_counter() - began
        print(f"  {start + len(block)}/{len(titles)} titles", file=sys.stderr, flush=True)
    return [
        {
            "variant": label,
            "seconds": seconds[label],
            "titles_per_s": len(titles) / seconds[label],
            "load_s": load_seconds,
            "vectors": np.vstack(parts[label]),
        }
        for label, _, load_seconds in variants
    ]


def plain_encode(torch_threads: int) -> Encoder:
    """sentence-transformers' encode with its defaults; torch's thread count is process-wide, so it is set per call."""
    import torch

    model = load_text_model(MODEL)

    def encode(titles: list[str]) -> np.ndarray:
        torch.set_num_threads(torch_threads)
        return model.encode(titles, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)

    return encode


def tried_ort_int8(threads: int, batch_size: int) -> Encoder:
    """ONNX Runtime dynamic int8 (per-channel weights) of our exported graph."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from pss_ops.features.text.onnx import cached_onnx

    source = cached_onnx(MODEL)
    folder = Path(tempfile.mkdtemp(prefix="pss-bench-int8-"))
    if not isinstance(source, Path):
        (folder / "fp32.onnx").write_bytes(source)
        source = folder / "fp32.onnx"
    quantize_dynamic(str(source), str(folder / "int8.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(folder / "int8.onnx"), options, providers=["CPUExecutionProvider"])

    def encode(titles: list[str]) -> np.ndarray:
        ids = [e.ids for e in load_tokenizer(MODEL).encode_batch(titles)]
        out = np.empty((len(titles), 384), np.float32)
        for rows, input_ids, mask in length_sorted_batches(ids, batch_size):
            feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
            out[rows] = mean_pool(session.run(None, feeds)[0], mask)
        return out

    return encode


def tried_torch_int8(threads: int, batch_size: int) -> Encoder:
    """torch.ao dynamic int8 quantisation of the transformer's Linear layers."""
    import copy
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torch.ao deprecation notice
        quantized = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(load_text_model(MODEL)[0].auto_model), {torch.nn.Linear}, dtype=torch.qint8
        )

    def encode(titles: list[str]) -> np.ndarray:
        torch.set_num_threads(threads)
        ids = [e.ids for e in load_tokenizer(MODEL).encode_batch(titles)]
        out = np.empty((len(titles), 384), np.float32)
        with torch.inference_mode():
            for rows, input_ids, mask in length_sorted_batches(ids, batch_size):
                hidden = quantized(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
                out[rows] = mean_pool(hidden.numpy(), mask)
        return out

    return encode


def text_rows(titles: list[str], threads: int, batch_size: int, tried: bool, chunk: int) -> list[dict[str, Any]]:
    """Every variant on the same titles; cosines against the plain encode."""
    import torch

    torch_default = torch.get_num_threads()
    specs: list[tuple[str, Callable[[], Encoder]]] = [(f"st_encode (torch threads {torch_default})", lambda: plain_encode(torch_default))]
    if threads != torch_default:
        specs.append((f"st_encode (torch threads {threads})", lambda: plain_encode(threads)))
    specs += [
        ("ours_onnx", lambda: lambda t: encode_texts(t, model=MODEL, batch_size=batch_size, runtime="onnx", threads=threads)),
        ("ours_torch", lambda: lambda t: encode_texts(t, model=MODEL, batch_size=batch_size, runtime="torch", threads=threads)),
    ]
    if tried:
        specs += [
            ("tried_ort_int8", lambda: tried_ort_int8(threads, batch_size)),
            ("tried_torch_int8", lambda: tried_torch_int8(threads, batch_size)),
        ]
    variants = [prepare_variant(label, titles, prepare) for label, prepare in specs]
    rows = measure(variants, titles, chunk)
    torch.set_num_threads(torch_default)
    base = rows[0]
    for row in rows:
        row["speedup"] = row["titles_per_s"] / base["titles_per_s"]
        row["cos_min"], row["cos_mean"] = cosines(base["vectors"], row["vectors"])
    return rows


# --- caches and the embed step -----------------------------------------------------------------------


def moto_dynamodb() -> tuple[Any, Any]:
    """A moto server on 127.0.0.1 (port chosen by the OS) and a DynamoDB client on it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client(
        "dynamodb",
        endpoint_url=f"http://{host}:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return server, client


def catalog_partition(titles: list[str], folder: Path) -> Any:
    """The titles as one catalog partition on disk, unique item ids, the columns the example config reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pss_ops.manifests import CatalogPartition

    n = len(titles)
    table = pa.table(
        {
            "item_id": [f"bench:{i}" for i in range(n)],
            "category": ["all"] * n,
            "title": titles,
            "brand": [""] * n,
            "description": [""] * n,
            "seller": [f"seller{i % 7}" for i in range(n)],
        }
    )
    uri = str(folder / "catalog-00000.parquet")
    pq.write_table(table, uri)
    return CatalogPartition(name="all-00000", uri=uri, scope="all", rows=n)


def step_rows(titles: list[str], work: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Warm lookup throughput per backend, and the embed step cold then warm per backend."""
    from pss_ops.config import load_config
    from pss_ops.features.cache.dynamodb import DynamoDBEmbeddingCache, create_table
    from pss_ops.features.cache.sqlite import SQLiteEmbeddingCache
    from pss_ops.features.compound import content_hashes, input_columns
    from pss_ops.steps.embed import embed_partition
    from pss_ops.steps.plan import make_context

    config = load_config(ROOT / "examples" / "near_identical.yaml")
    partition = catalog_partition(titles, work)
    server, client = moto_dynamodb()
    lookups, steps = [], []
    try:
        create_table(client, "pss-bench-cache")
        backends = {
            "sqlite": (lambda: SQLiteEmbeddingCache(str(work / "cache.sqlite")), str(work / "cache.sqlite")),
            "dynamodb (moto)": (lambda: DynamoDBEmbeddingCache(client, "pss-bench-cache"), "dynamodb://pss-bench-cache"),
        }
        for backend, (open_backend, uri) in backends.items():
            cache = open_backend()
            ctx = make_context(
                config,
                catalog_uri=partition.uri,
                run_uri=str(work / f"run-{backend.split()[0]}"),
                snapshot_date=dt.date(2024, 5, 1),
                run_id="bench",
                cache_uri=uri,
            )
            timings = {}
            for phase in ("cold", "warm"):
                start = time.perf_counter()
                result = embed_partition(ctx, partition, cache)
                timings[phase] = time.perf_counter() - start
                expected_hits = 0 if phase == "cold" else len(titles)
                assert result.cache_hits == expected_hits, (backend, phase, result.cache_hits)
            steps.append(
                {
                    "backend": backend,
                    "rows": len(titles),
                    "cold_s": timings["cold"],
                    "warm_s": timings["warm"],
                    "warm_over_cold": timings["cold"] / timings["warm"],
                }
            )
            # The raw lookup the warm step makes, alone: keys as the step computes them.
            frame = pd.read_parquet(partition.uri)
            keys = list(zip(frame["item_id"], content_hashes(frame, input_columns(config))))
            start = time.perf_counter()
            found = cache.get_many(ctx.model_id, keys)
            seconds = time.perf_counter() - start
            assert len(found) == len(keys)
            lookups.append({"backend": backend, "vectors": len(keys), "seconds": seconds, "vectors_per_s": len(keys) / seconds})
            cache.close()
    finally:
        server.stop()
    return lookups, steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="titles to embed (real titles, repeated if needed)")
    parser.add_argument("--step-n", type=int, default=None, help="rows of the cold/warm embed step (default: --n)")
    parser.add_argument("--threads", type=int, default=None, help="our intra-op threads (default: pss_ops default_threads())")
    parser.add_argument("--batch-size", type=int, default=64, help="our batch size (the text feature's default)")
    parser.add_argument("--chunk", type=int, default=500, help="titles per turn when the variants take turns")
    parser.add_argument("--no-tried", action="store_true", help="skip the int8 variants that were tried and not kept")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    threads = args.threads or default_threads()
    titles = load_titles(args.n)

    print(f"embedding {len(titles)} titles, our threads {threads}, load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    rows = text_rows(titles, threads, args.batch_size, not args.no_tried, args.chunk)
    with tempfile.TemporaryDirectory(prefix="pss-bench-embed-") as work:
        lookups, steps = step_rows(load_titles(args.step_n or args.n), Path(work))

    print(f"\nTitle embedding, {len(titles)} titles ({MODEL}); cosine per row against st_encode")
    print(f"{'variant':34s} {'titles/s':>9s} {'speedup':>8s} {'cos min':>9s} {'cos mean':>9s} {'load s':>7s}")
    for r in rows:
        print(
            f"{r['variant']:34s} {r['titles_per_s']:9.1f} {r['speedup']:7.2f}x {r['cos_min']:9.5f} {r['cos_mean']:9.5f} {r['load_s']:7.2f}"
        )
    print("\nWarm cache lookups (get_many of every key)")
    print(f"{'backend':18s} {'vectors':>8s} {'seconds':>8s} {'vectors/s':>10s}")
    for r in lookups:
        print(f"{r['backend']:18s} {r['vectors']:8d} {r['seconds']:8.3f} {r['vectors_per_s']:10.0f}")
    print("\nEmbed step (embed_partition, near_identical features), model loaded, cold then warm")
    print(f"{'backend':18s} {'rows':>6s} {'cold s':>8s} {'warm s':>8s} {'cold/warm':>10s}")
    for r in steps:
        print(f"{r['backend']:18s} {r['rows']:6d} {r['cold_s']:8.3f} {r['warm_s']:8.3f} {r['warm_over_cold']:9.1f}x")

    ours = next(r for r in rows if r["variant"] == "ours_onnx")
    sqlite_step = steps[0]
    targets = {
        "speedup": {"value": ours["speedup"], "target": TARGETS["speedup"], "met": ours["speedup"] >= TARGETS["speedup"]},
        "cosine_min": {"value": ours["cos_min"], "target": TARGETS["cosine"], "met": ours["cos_min"] >= TARGETS["cosine"]},
        "warm_over_cold_sqlite": {
            "value": sqlite_step["warm_over_cold"],
            "target": TARGETS["warm_over_cold"],
            "met": sqlite_step["warm_over_cold"] >= TARGETS["warm_over_cold"],
        },
    }
    print(
        "\nTargets: " + ", ".join(f"{k} {v['value']:.3f} (≥ {v['target']}) {'met' if v['met'] else 'NOT met'}" for k, v in targets.items())
    )
    payload = {
        "bench": "embed",
        "n": len(titles),
        "threads": threads,
        "batch_size": args.batch_size,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()[0]},
        "text": [{k: v for k, v in r.items() if k != "vectors"} for r in rows],
        "cache_lookup": lookups,
        "embed_step": steps,
        "targets": targets,
    }
    print(json.dumps(payload, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
