"""DynamoDB embedding cache against a real moto server: batching, TTL, throttled retries and the embed step."""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pss_ops import storage
from pss_ops.config import parse_config
from pss_ops.features.cache.backends import open_cache
from pss_ops.features.cache.dynamodb import (
    GET_BATCH,
    TTL_ATTRIBUTE,
    WRITE_BATCH,
    CacheThrottledError,
    DynamoDBEmbeddingCache,
)
from pss_ops.features.compound import content_hashes
from pss_ops.features.embedded import read_vectors
from pss_ops.features.lexical import char_ngram_vectors
from pss_ops.steps.embed import embed_partition
from pss_ops.steps.plan import make_context, plan
from tests.aws.conftest import S3Bucket
from tests.conftest import DATA

DIM = 64
N_ITEMS = 260
MODEL = "compound-0123456789abcdef"
OTHER_MODEL = "compound-fedcba9876543210"

Entry = tuple[str, str, np.ndarray]


@functools.cache
def catalog() -> pd.DataFrame:
    return pd.read_csv(DATA / "catalog.csv", dtype=str, keep_default_na=False)


def spread(n: int) -> pd.DataFrame:
    """n rows spread evenly over the whole catalog (Amazon rows come first, Google rows after)."""
    frame = catalog()
    return frame.iloc[np.linspace(0, len(frame) - 1, n).astype(int)].reset_index(drop=True)


def real_entries(n: int = N_ITEMS) -> list[Entry]:
    """(item_id, content hash of the title, 64-dim char n-gram vector) for n real Amazon and Google listings."""
    rows = spread(n)
    assert len(rows) == n and rows["item_id"].str.startswith("amazon:").any() and rows["item_id"].str.startswith("google:").any()
    vectors = char_ngram_vectors(rows["title"].tolist(), ngram_min=3, ngram_max=5, dims=DIM)
    hashes = content_hashes(rows, ("title",))
    return [(item, h, vectors[i]) for i, (item, h) in enumerate(zip(rows["item_id"], hashes))]


def keys_of(entries: list[Entry]) -> list[tuple[str, str]]:
    return [(item, h) for item, h, _ in entries]


def assert_all_found(found: dict[tuple[str, str], np.ndarray], entries: list[Entry]) -> None:
    assert set(found) == set(keys_of(entries))
    for item, h, vector in entries:
        back = found[(item, h)]
        assert back.dtype == np.float32 and back.shape == (vector.shape[0],)
        assert back.tobytes() == np.asarray(vector, np.float32).tobytes(), item


def stored_pks(client: Any, table: str, model_id: str) -> set[str]:
    """Every pk of a model in the table, read with a plain scan (not through the cache)."""
    pks: set[str] = set()
    for page in client.get_paginator("scan").paginate(TableName=table, ProjectionExpression="pk"):
        pks.update(item["pk"]["S"] for item in page.get("Items", []) if item["pk"]["S"].startswith(f"{model_id}#"))
    return pks


class Sleeps(list[float]):
    """A sleep function that records the delays instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class RecordingClient:
    """Forwards to the real moto client and records the size of every batch request."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self.table = table
        self.get_sizes: list[int] = []
        self.write_sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 - boto3's keyword
        self.get_sizes.append(len(RequestItems[self.table]["Keys"]))
        return self._client.batch_get_item(RequestItems=RequestItems)

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 - boto3's keyword
        self.write_sizes.append(len(RequestItems[self.table]))
        return self._client.batch_write_item(RequestItems=RequestItems)


class ThrottlingClient(RecordingClient):
    """Like DynamoDB under throttling: while `throttle(call_number)` holds, only part of a batch is processed.

    The rest comes back as UnprocessedItems / UnprocessedKeys in exactly the shape DynamoDB uses. With
    `process_nothing` every throttled call processes nothing at all.
    """

    def __init__(self, client: Any, table: str, throttle: Callable[[int], bool], *, process_nothing: bool = False) -> None:
        super().__init__(client, table)
        self.throttle = throttle
        self.process_nothing = process_nothing
        self.get_calls = 0
        self.write_calls = 0
        self.unprocessed_keys = 0
        self.unprocessed_items = 0
        self.throttled_responses = 0

    def _split(self, requests: list[Any]) -> tuple[list[Any], list[Any]]:
        if self.process_nothing:
            return [], list(requests)
        # Every other request is left unprocessed (never in a tidy prefix), at least one per call.
        return list(requests[1::2]), list(requests[0::2])

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        self.get_sizes.append(len(RequestItems[self.table]["Keys"]))
        call, self.get_calls = self.get_calls, self.get_calls + 1
        if not self.throttle(call):
            return self._client.batch_get_item(RequestItems=RequestItems)
        request = RequestItems[self.table]
        processed, rest = self._split(request["Keys"])
        if processed:
            response = self._client.batch_get_item(RequestItems={self.table: {**request, "Keys": processed}})
            assert not response.get("UnprocessedKeys")
        else:
            response = {"Responses": {self.table: []}, "UnprocessedKeys": {}}
        response["UnprocessedKeys"] = {self.table: {**request, "Keys": rest}}
        self.unprocessed_keys += len(rest)
        self.throttled_responses += 1
        return response

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        self.write_sizes.append(len(RequestItems[self.table]))
        call, self.write_calls = self.write_calls, self.write_calls + 1
        if not self.throttle(call):
            return self._client.batch_write_item(RequestItems=RequestItems)
        processed, rest = self._split(RequestItems[self.table])
        if processed:
            response = self._client.batch_write_item(RequestItems={self.table: processed})
            assert not response.get("UnprocessedItems")
        else:
            response = {"UnprocessedItems": {}}
        response["UnprocessedItems"] = {self.table: rest}
        self.unprocessed_items += len(rest)
        self.throttled_responses += 1
        return response


# --- table --------------------------------------------------------------------------------------------------


def test_created_table_has_pk_on_demand_billing_and_ttl(dynamodb: Any, cache_table: str) -> None:
    table = dynamodb.describe_table(TableName=cache_table)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = dynamodb.describe_time_to_live(TableName=cache_table)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED"
    assert ttl["AttributeName"] == TTL_ATTRIBUTE == "expires_at"


def test_create_table_is_idempotent(dynamodb: Any, cache_table: str) -> None:
    from pss_ops.features.cache.dynamodb import create_table

    cache = DynamoDBEmbeddingCache(dynamodb, cache_table)
    entries = real_entries(3)
    cache.put_many(MODEL, entries)
    create_table(dynamodb, cache_table)
    assert_all_found(cache.get_many(MODEL, keys_of(entries)), entries)


# --- round trip ---------------------------------------------------------------------------------------------


def test_round_trip_of_260_real_items_crosses_batch_limits(dynamodb: Any, cache_table: str) -> None:
    entries = real_entries()
    client = RecordingClient(dynamodb, cache_table)
    cache = DynamoDBEmbeddingCache(client, cache_table)
    assert cache.get_many(MODEL, keys_of(entries)) == {}
    client.get_sizes.clear()

    cache.put_many(MODEL, entries)
    found = cache.get_many(MODEL, keys_of(entries))

    assert_all_found(found, entries)
    assert client.write_sizes == [WRITE_BATCH] * (N_ITEMS // WRITE_BATCH) + [N_ITEMS % WRITE_BATCH]
    assert client.get_sizes == [GET_BATCH, GET_BATCH, N_ITEMS - 2 * GET_BATCH]
    assert cache.retries == 0
    assert len(stored_pks(dynamodb, cache_table, MODEL)) == N_ITEMS


def test_stored_item_layout(dynamodb: Any, cache_table: str) -> None:
    entries = real_entries(2)
    DynamoDBEmbeddingCache(dynamodb, cache_table).put_many(MODEL, entries)
    item_id, content_hash, vector = entries[1]
    item = dynamodb.get_item(TableName=cache_table, Key={"pk": {"S": f"{MODEL}#{item_id}"}})["Item"]
    assert set(item) == {"pk", "content_hash", "dim", "vector", TTL_ATTRIBUTE}
    assert item["content_hash"] == {"S": content_hash}
    assert item["dim"] == {"N": str(DIM)}
    assert isinstance(item["vector"]["B"], bytes)
    assert len(item["vector"]["B"]) == 4 * DIM
    assert item["vector"]["B"] == vector.astype(np.float32).tobytes()


def test_float64_and_special_values_come_back_as_exact_float32(dynamodb: Any, cache_table: str) -> None:
    special = np.array([0.1, -0.0, 1e-45, np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1 / 3, -2.5e-8, 384.0], np.float32)
    wide = np.random.default_rng(3).normal(size=2432)  # float64, as wide as MiniLM + a 2048-dim n-gram block
    cache = DynamoDBEmbeddingCache(dynamodb, cache_table)
    cache.put_many(MODEL, [("a", "h", special), ("b", "h", wide)])
    found = cache.get_many(MODEL, [("a", "h"), ("b", "h")])
    assert found[("a", "h")].tobytes() == special.tobytes()
    assert found[("b", "h")].dtype == np.float32
    assert found[("b", "h")].tobytes() == wide.astype(np.float32).tobytes()


def test_changed_content_hash_misses_and_put_replaces(dynamodb: Any, cache_table: str) -> None:
    entries = real_entries(5)
    cache = DynamoDBEmbeddingCache(dynamodb, cache_table)
    cache.put_many(MODEL, entries)
    item, old_hash, _ = entries[0]
    new_key = (item, "f" * 32)
    found = cache.get_many(MODEL, [new_key, *keys_of(entries[1:])])
    assert new_key not in found
    assert set(found) == set(keys_of(entries[1:]))

    fresh = np.random.default_rng(7).normal(size=DIM).astype(np.float32)
    cache.put_many(MODEL, [(item, new_key[1], fresh)])
    assert cache.get_many(MODEL, [new_key])[new_key].tobytes() == fresh.tobytes()
    assert cache.get_many(MODEL, [(item, old_hash)]) == {}
    assert len(stored_pks(dynamodb, cache_table, MODEL)) == len(entries)


def test_other_model_misses(dynamodb: Any, cache_table: str) -> None:
    entries = real_entries(30)
    cache = DynamoDBEmbeddingCache(dynamodb, cache_table)
    cache.put_many(OTHER_MODEL, entries)
    assert cache.get_many(MODEL, keys_of(entries)) == {}
    assert_all_found(cache.get_many(OTHER_MODEL, keys_of(entries)), entries)


def test_duplicate_item_ids_in_one_call_last_write_wins(dynamodb: Any, cache_table: str) -> None:
    entries = real_entries(30)
    cache = DynamoDBEmbeddingCache(dynamodb, cache_table)
    item = entries[0][0]
    first = np.full(DIM, 0.25, np.float32)
    last = np.full(DIM, 0.75, np.float32)
    # Same item three times in one batch of 25 (BatchWriteItem itself refuses duplicate keys).
    cache.put_many(MODEL, [(item, "old", first), *entries[1:10], (item, "new", last), *entries[10:20], (item, "new", last)])
    assert cache.get_many(MODEL, [(item, "old")]) == {}
    assert cache.get_many(MODEL, [(item, "new")])[(item, "new")].tobytes() == last.tobytes()

    cache.put_many(MODEL, entries[1:])
    # Duplicate keys in one get (BatchGetItem refuses those too), and the last hash asked for an item decides.
    wanted = [*keys_of(entries[1:]), *keys_of(entries[1:5]), (item, "old"), (item, "new")]
    found = cache.get_many(MODEL, wanted)
    assert_all_found({k: v for k, v in found.items() if k[0] != item}, entries[1:])
    assert found[(item, "new")].tobytes() == last.tobytes()
    assert (item, "old") not in found
    assert cache.get_many(MODEL, [(item, "new"), (item, "old")]) == {}


def test_empty_calls_do_nothing(dynamodb: Any, cache_table: str) -> None:
    client = RecordingClient(dynamodb, cache_table)
    cache = DynamoDBEmbeddingCache(client, cache_table)
    cache.put_many(MODEL, [])
    assert cache.get_many(MODEL, []) == {}
    assert client.get_sizes == [] and client.write_sizes == []


@pytest.mark.parametrize("ttl_days", [90, 7, 0.5])
def test_entries_expire_after_ttl_days(dynamodb: Any, cache_table: str, ttl_days: float) -> None:
    entries = real_entries(3)
    # 90 days is the default: build that cache without the argument.
    if ttl_days == 90:
        cache = DynamoDBEmbeddingCache(dynamodb, cache_table)
    else:
        cache = DynamoDBEmbeddingCache(dynamodb, cache_table, ttl_days=ttl_days)
    before = int(time.time())
    cache.put_many(MODEL, entries)
    after = int(time.time())
    for item, _, _ in entries:
        stored = dynamodb.get_item(TableName=cache_table, Key={"pk": {"S": f"{MODEL}#{item}"}})["Item"]
        expires = int(stored[TTL_ATTRIBUTE]["N"])
        assert before + int(ttl_days * 86400) <= expires <= after + int(ttl_days * 86400)


# --- open_cache ---------------------------------------------------------------------------------------------


def test_open_cache_dynamodb_uri_with_client(dynamodb: Any, cache_table: str) -> None:
    cache = open_cache(f"dynamodb://{cache_table}", dynamodb_client=dynamodb)
    assert isinstance(cache, DynamoDBEmbeddingCache)
    assert cache.table_name == cache_table and cache.client is dynamodb
    entries = real_entries(3)
    cache.put_many(MODEL, entries)
    assert_all_found(open_cache(f"dynamodb://{cache_table}/", dynamodb_client=dynamodb).get_many(MODEL, keys_of(entries)), entries)


def test_open_cache_dynamodb_uri_from_environment(aws_env: str, dynamodb: Any, cache_table: str) -> None:
    entries = real_entries(3)
    DynamoDBEmbeddingCache(dynamodb, cache_table).put_many(MODEL, entries)
    cache = open_cache(f"dynamodb://{cache_table}")
    assert isinstance(cache, DynamoDBEmbeddingCache)
    assert cache.client.meta.endpoint_url == aws_env
    assert_all_found(cache.get_many(MODEL, keys_of(entries)), entries)


@pytest.mark.parametrize("uri", ["dynamodb://", "dynamodb:///"])
def test_open_cache_dynamodb_uri_without_table(uri: str) -> None:
    with pytest.raises(ValueError, match="names no table"):
        open_cache(uri)


# --- delete_model -------------------------------------------------------------------------------------------


def test_delete_model_removes_only_that_model(dynamodb: Any, cache_table: str) -> None:
    entries = real_entries(60)
    cache = DynamoDBEmbeddingCache(dynamodb, cache_table)
    cache.put_many(MODEL, entries[:20])
    cache.put_many(OTHER_MODEL, entries)
    # A model id that extends OTHER_MODEL must not be caught by its prefix.
    cache.put_many(OTHER_MODEL + "0", entries[:5])

    assert cache.delete_model(OTHER_MODEL) == len(entries)
    assert stored_pks(dynamodb, cache_table, OTHER_MODEL) == set()
    assert stored_pks(dynamodb, cache_table, OTHER_MODEL + "0") == {f"{OTHER_MODEL}0#{item}" for item, _, _ in entries[:5]}
    assert len(stored_pks(dynamodb, cache_table, MODEL)) == 20
    assert cache.get_many(OTHER_MODEL, keys_of(entries)) == {}
    assert_all_found(cache.get_many(MODEL, keys_of(entries[:20])), entries[:20])
    assert_all_found(cache.get_many(OTHER_MODEL + "0", keys_of(entries[:5])), entries[:5])
    assert cache.delete_model(OTHER_MODEL) == 0


# --- throttling ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["first_8_calls", "every_other_call"])
def test_throttled_batches_are_retried_until_nothing_is_lost(dynamodb: Any, cache_table: str, policy: str) -> None:
    entries = real_entries()
    throttle = (lambda call: call < 8) if policy == "first_8_calls" else (lambda call: call % 2 == 0)
    proxy = ThrottlingClient(dynamodb, cache_table, throttle)
    sleeps = Sleeps()
    cache = DynamoDBEmbeddingCache(proxy, cache_table, max_attempts=10, base_delay=0.01, max_delay=0.04, sleep=sleeps)

    cache.put_many(MODEL, entries)
    # Every vector reached the table, checked without the proxy.
    assert len(stored_pks(dynamodb, cache_table, MODEL)) == N_ITEMS
    assert_all_found(DynamoDBEmbeddingCache(dynamodb, cache_table).get_many(MODEL, keys_of(entries)), entries)
    write_sleeps = len(sleeps)

    found = cache.get_many(MODEL, keys_of(entries))
    assert_all_found(found, entries)

    assert proxy.unprocessed_items > 0 and proxy.unprocessed_keys > 0
    # One backoff per response that came back with unprocessed work, never more, never fewer.
    assert cache.retries == proxy.throttled_responses == len(sleeps) > 0
    assert all(size <= WRITE_BATCH for size in proxy.write_sizes)
    assert all(size <= GET_BATCH for size in proxy.get_sizes)
    assert all(0 <= delay <= cache.max_delay for delay in sleeps)
    assert max(sleeps) > 0
    if policy == "first_8_calls":
        # All eight throttled calls of each kind hit the first batch: attempts 0..7, full jitter, capped.
        assert write_sleeps == 8 and len(sleeps) == 16
        for attempt, delay in enumerate(sleeps[:8]):
            assert delay <= min(cache.max_delay, cache.base_delay * 2**attempt)
        for attempt, delay in enumerate(sleeps[8:]):
            assert delay <= min(cache.max_delay, cache.base_delay * 2**attempt)
        assert proxy.write_calls == 9 + (N_ITEMS // WRITE_BATCH)
        assert proxy.get_calls == 9 + 2
    else:
        # Each batch was throttled once and then went through.
        assert proxy.write_calls == 2 * (N_ITEMS // WRITE_BATCH + 1)
        assert proxy.get_calls == 2 * 3


def test_put_raises_when_writes_stay_unprocessed(dynamodb: Any, cache_table: str) -> None:
    entries = real_entries(30)
    proxy = ThrottlingClient(dynamodb, cache_table, lambda call: True, process_nothing=True)
    sleeps = Sleeps()
    cache = DynamoDBEmbeddingCache(proxy, cache_table, max_attempts=4, base_delay=0.01, max_delay=0.02, sleep=sleeps)
    with pytest.raises(CacheThrottledError, match=rf"{cache_table}: 25 writes still unprocessed after 4 attempts"):
        cache.put_many(MODEL, entries)
    assert proxy.write_calls == 4
    assert stored_pks(dynamodb, cache_table, MODEL) == set()
    # A backoff between attempts, none after the last one.
    assert len(sleeps) == cache.retries == 3
    assert all(0 <= delay <= 0.02 for delay in sleeps)


def test_put_raises_when_a_later_batch_stays_unprocessed(dynamodb: Any, cache_table: str) -> None:
    entries = real_entries(60)
    # The first batch goes through; from the second call on nothing is processed.
    proxy = ThrottlingClient(dynamodb, cache_table, lambda call: call >= 1, process_nothing=True)
    cache = DynamoDBEmbeddingCache(proxy, cache_table, max_attempts=3, sleep=Sleeps())
    with pytest.raises(CacheThrottledError, match="25 writes still unprocessed after 3 attempts"):
        cache.put_many(MODEL, entries)
    assert proxy.write_calls == 1 + 3
    assert len(stored_pks(dynamodb, cache_table, MODEL)) == WRITE_BATCH


def test_get_raises_when_keys_stay_unprocessed(dynamodb: Any, cache_table: str) -> None:
    entries = real_entries(30)
    DynamoDBEmbeddingCache(dynamodb, cache_table).put_many(MODEL, entries)
    proxy = ThrottlingClient(dynamodb, cache_table, lambda call: True, process_nothing=True)
    sleeps = Sleeps()
    cache = DynamoDBEmbeddingCache(proxy, cache_table, max_attempts=4, base_delay=0.01, max_delay=0.02, sleep=sleeps)
    with pytest.raises(CacheThrottledError, match=rf"{cache_table}: 30 keys still unprocessed after 4 attempts"):
        cache.get_many(MODEL, keys_of(entries))
    assert proxy.get_calls == 4
    assert len(sleeps) == cache.retries == 3
    assert all(0 <= delay <= 0.02 for delay in sleeps)


def test_get_raises_instead_of_reporting_partly_read_keys_as_misses(dynamodb: Any, cache_table: str) -> None:
    entries = real_entries(30)
    DynamoDBEmbeddingCache(dynamodb, cache_table).put_many(MODEL, entries)
    # Half of each batch is processed, but the other half never is: a partial result would look like misses.
    proxy = ThrottlingClient(dynamodb, cache_table, lambda call: True)
    cache = DynamoDBEmbeddingCache(proxy, cache_table, max_attempts=3, sleep=Sleeps())
    with pytest.raises(CacheThrottledError, match="keys still unprocessed after 3 attempts"):
        cache.get_many(MODEL, keys_of(entries))
    assert proxy.get_calls == 3


# --- embed step ---------------------------------------------------------------------------------------------


def test_embed_partition_twice_misses_then_hits(aws_env: str, dynamodb: Any, cache_table: str, s3_bucket: S3Bucket, tmp_path: Path) -> None:
    subset = spread(60)
    catalog_path = tmp_path / "catalog.csv"
    subset.to_csv(catalog_path, index=False)
    config = parse_config({"application": "t", "features": [{"type": "char_ngram", "dims": DIM}], "catalog": {"partition_size": 40}})
    cache_uri = f"dynamodb://{cache_table}"

    def run(run_id: str) -> list[Any]:
        ctx = make_context(
            config,
            catalog_uri=str(catalog_path),
            run_uri=storage.join(s3_bucket.uri, "runs", run_id),
            snapshot_date=dt.date(2024, 5, 1),
            run_id=run_id,
            cache_uri=cache_uri,
        )
        planned = plan(ctx)
        assert planned.rows_accepted == 60 and planned.rows_rejected == 0
        cache = open_cache(ctx.cache_uri)  # boto3's own client, pointed at moto by the environment
        assert isinstance(cache, DynamoDBEmbeddingCache)
        return [embed_partition(ctx, partition, cache) for partition in planned.partitions]

    cold = run("cold")
    assert len(cold) == 2 and sum(r.rows for r in cold) == 60
    assert all(r.cache_hits == 0 and r.cache_misses == r.rows for r in cold)
    assert len(stored_pks(dynamodb, cache_table, config.model_id)) == 60
    cold_vectors = [read_vectors(r.uri) for r in cold]

    warm = run("warm")
    assert [r.name for r in warm] == [r.name for r in cold]
    assert all(r.cache_hits == r.rows and r.cache_misses == 0 for r in warm)
    for (cold_table, cold_matrix), result in zip(cold_vectors, warm):
        warm_table, warm_matrix = read_vectors(result.uri)
        assert warm_table.column("item_id").to_pylist() == cold_table.column("item_id").to_pylist()
        assert warm_matrix.shape == (result.rows, DIM)
        assert warm_matrix.tobytes() == cold_matrix.tobytes()
        assert np.allclose(np.linalg.norm(warm_matrix, axis=1), 1.0, atol=1e-5)
