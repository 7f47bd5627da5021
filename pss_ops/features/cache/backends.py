"""Opens the embedding cache a URI names; the one place that knows every backend."""

from __future__ import annotations

from pss_ops.features.cache.base import EmbeddingCache
from pss_ops.features.cache.sqlite import SQLiteEmbeddingCache


def open_cache(uri: str, *, dynamodb_client: object | None = None) -> EmbeddingCache:
    """Open the backend a cache URI names: dynamodb://TABLE, sqlite:///path or a local path."""
    if uri.startswith("dynamodb://"):
        # Imported here: boto3 is loaded only by runs that use DynamoDB.
        from pss_ops.features.cache.dynamodb import DynamoDBEmbeddingCache

        table = uri[len("dynamodb://") :].strip("/")
        if not table:
            raise ValueError(f"embedding cache URI {uri!r} names no table; use dynamodb://TABLE")
        if dynamodb_client is None:
            import boto3

            # Region, credentials and AWS_ENDPOINT_URL come from the environment the step runs in.
            dynamodb_client = boto3.client("dynamodb")
        return DynamoDBEmbeddingCache(dynamodb_client, table)
    if uri.startswith("sqlite:///"):
        uri = uri[len("sqlite:///") :]
    if "://" in uri:
        raise ValueError(f"unsupported embedding cache URI {uri!r}; use dynamodb://TABLE, sqlite:///path or a local path")
    return SQLiteEmbeddingCache(uri)
