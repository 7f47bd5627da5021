"""Where each step's artifacts live under a run URI; names derive from partition names."""

from __future__ import annotations

from pss_ops import storage


def context(run_uri: str) -> str:
    return storage.join(run_uri, "run.json")


def plan_manifest(run_uri: str) -> str:
    return storage.join(run_uri, "plan", "manifest.json")


def catalog_partition(run_uri: str, name: str) -> str:
    return storage.join(run_uri, "plan", "partitions", f"{name}.parquet")


def rejects(run_uri: str) -> str:
    return storage.join(run_uri, "plan", "rejects.csv")


def embedded(run_uri: str, name: str) -> str:
    return storage.join(run_uri, "embed", f"{name}.parquet")


def embed_manifest(run_uri: str, name: str) -> str:
    return storage.join(run_uri, "embed", f"{name}.json")


def retriever_input(run_uri: str, name: str, retriever: str) -> str:
    return storage.join(run_uri, "embed", f"{name}.{retriever}.npz")


def lexical_idf(run_uri: str, retriever: str, first_index_partition: str) -> str:
    # A scope's IDF is named after its first index partition: scope names are catalog values, not path-safe.
    return storage.join(run_uri, "index_plan", f"{first_index_partition}.{retriever}.idf.npz")


def index_plan_manifest(run_uri: str) -> str:
    return storage.join(run_uri, "index_plan", "manifest.json")


def index_file(run_uri: str, name: str) -> str:
    return storage.join(run_uri, "index", f"{name}.faiss")


def index_vectors(run_uri: str, name: str) -> str:
    return storage.join(run_uri, "index", f"{name}.vectors.npy")


def index_ids(run_uri: str, name: str) -> str:
    return storage.join(run_uri, "index", f"{name}.ids.parquet")


def retriever_rows(run_uri: str, name: str, retriever: str) -> str:
    return storage.join(run_uri, "index", f"{name}.{retriever}.npz")


def index_manifest(run_uri: str, name: str) -> str:
    return storage.join(run_uri, "index", f"{name}.json")


def query_result(run_uri: str, name: str) -> str:
    return storage.join(run_uri, "query", f"{name}.parquet")


def query_manifest(run_uri: str, name: str) -> str:
    return storage.join(run_uri, "query", f"{name}.json")


def filtered(run_uri: str, name: str) -> str:
    return storage.join(run_uri, "post_filter", f"{name}.parquet")


def filter_manifest(run_uri: str, name: str) -> str:
    return storage.join(run_uri, "post_filter", f"{name}.json")


def publish_manifest(run_uri: str) -> str:
    return storage.join(run_uri, "publish", "manifest.json")


def similar_items(run_uri: str) -> str:
    return storage.join(run_uri, "publish", "similar_items.parquet")


def duplicate_groups(run_uri: str) -> str:
    return storage.join(run_uri, "publish", "duplicate_groups.parquet")


def run_summary(run_uri: str) -> str:
    return storage.join(run_uri, "report", "run_summary.json")
