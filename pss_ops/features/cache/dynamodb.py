"""DynamoDB backend of the embedding cache: batched reads and writes, throttled keys retried, nothing lost."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from pss_ops.features.cache.base import CacheKey, EmbeddingCache

log = logging.getLogger(__name__)

GET_BATCH = 100  # BatchGetItem's limit per request
WRITE_BATCH = 25  # BatchWriteItem's limit per request
TTL_ATTRIBUTE = "expires_at"


class CacheThrottledError(RuntimeError):
    """DynamoDB kept returning unprocessed keys after every retry."""


def table_spec(table_name: str) -> dict[str, Any]:
    """CreateTable arguments: one hash key `pk` = model_id#item_id, on-demand billing."""
    return {
        "TableName": table_name,
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    }


def ttl_spec(table_name: str) -> dict[str, Any]:
    """UpdateTimeToLive arguments: entries expire when `expires_at` (epoch seconds) passes."""
    return {"TableName": table_name, "TimeToLiveSpecification": {"Enabled": True, "AttributeName": TTL_ATTRIBUTE}}


def create_table(client: Any, table_name: str) -> None:
    """Create the cache table with TTL enabled and wait until it is active (idempotent)."""
    try:
        client.create_table(**table_spec(table_name))
    except client.exceptions.ResourceInUseException:
        pass
    client.get_waiter("table_exists").wait(TableName=table_name)
    client.update_time_to_live(**ttl_spec(table_name))


def _pk(model_id: str, item_id: str) -> str:
    return f"{model_id}#{item_id}"


class DynamoDBEmbeddingCache(EmbeddingCache):
    """Vectors stored as float32 binary under pk = model_id#item_id, with the content hash beside them."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        ttl_days: float = 90,
        max_attempts: int = 10,
        base_delay: float = 0.05,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.ttl_seconds = int(ttl_days * 86400)
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self.retries = 0

    def _backoff(self, attempt: int) -> None:
        # Full jitter (AWS architecture blog): spreads retries of parallel workers apart.
        self.retries += 1
        self._sleep(random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt)))

    def get_many(self, model_id: str, keys: Sequence[CacheKey]) -> dict[CacheKey, np.ndarray]:
        wanted = dict(keys)
        pks = list(dict.fromkeys(_pk(model_id, item_id) for item_id in wanted))
        found: dict[CacheKey, np.ndarray] = {}
        prefix = len(model_id) + 1
        for start in range(0, len(pks), GET_BATCH):
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": [{"pk": {"S": pk}} for pk in pks[start : start + GET_BATCH]],
                    "ProjectionExpression": "pk, content_hash, dim, vector",
                }
            }
            for response in self._until_processed(self.client.batch_get_item, request, "UnprocessedKeys", "Keys"):
                for item in response.get("Responses", {}).get(self.table_name, []):
                    item_id = item["pk"]["S"][prefix:]
                    content_hash = item["content_hash"]["S"]
                    vector = np.frombuffer(bytes(item["vector"]["B"]), dtype=np.float32)
                    if wanted.get(item_id) == content_hash and vector.shape[0] == int(item["dim"]["N"]):
                        found[(item_id, content_hash)] = vector
        return found

    def put_many(self, model_id: str, entries: Iterable[tuple[str, str, np.ndarray]]) -> None:
        expires = int(time.time()) + self.ttl_seconds
        # BatchWriteItem refuses two requests for one key, so the last entry per item wins.
        latest: dict[str, dict[str, Any]] = {}
        for item_id, content_hash, vector in entries:
            vector = np.asarray(vector, dtype=np.float32)
            latest[item_id] = {
                "PutRequest": {
                    "Item": {
                        "pk": {"S": _pk(model_id, item_id)},
                        "content_hash": {"S": content_hash},
                        "dim": {"N": str(vector.shape[0])},
                        "vector": {"B": vector.tobytes()},
                        TTL_ATTRIBUTE: {"N": str(expires)},
                    }
                }
            }
        self._write(list(latest.values()))

    def _write(self, requests: list[dict[str, Any]]) -> None:
        for start in range(0, len(requests), WRITE_BATCH):
            pending = {self.table_name: requests[start : start + WRITE_BATCH]}
            for _ in self._until_processed(self.client.batch_write_item, pending, "UnprocessedItems", None):
                pass

    def _until_processed(self, call: Any, request: dict[str, Any], unprocessed: str, items: str | None) -> Iterator[dict[str, Any]]:
        """Yield each response of call(RequestItems=...) while re-sending what DynamoDB left unprocessed.

        Backs off with jitter between attempts; raises CacheThrottledError after max_attempts, never drops anything.
        """
        for attempt in range(self.max_attempts):
            response = call(RequestItems=request)
            yield response
            request = response.get(unprocessed) or {}
            if not request:
                return
            left = request[self.table_name][items] if items else request[self.table_name]
            log.debug("%s: %d unprocessed, retrying", unprocessed, len(left))
            if attempt + 1 < self.max_attempts:  # no pointless sleep before giving up
                self._backoff(attempt)
        raise CacheThrottledError(
            f"DynamoDB table {self.table_name}: {len(left)} {'keys' if items else 'writes'} still unprocessed "
            f"after {self.max_attempts} attempts"
        )

    def delete_model(self, model_id: str) -> int:
        paginator = self.client.get_paginator("scan")
        deletes: list[dict[str, Any]] = []
        for page in paginator.paginate(
            TableName=self.table_name,
            ProjectionExpression="pk",
            FilterExpression="begins_with(pk, :prefix)",
            ExpressionAttributeValues={":prefix": {"S": f"{model_id}#"}},
        ):
            deletes.extend({"DeleteRequest": {"Key": {"pk": item["pk"]}}} for item in page.get("Items", []))
        self._write(deletes)
        return len(deletes)
