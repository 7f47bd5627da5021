-- similar_items: the published result of PSS, one row per (query item, rank).
-- Each row says: in this application's catalog snapshot, within this category,
-- candidate_item_id is the rank-th most similar item to query_item_id (higher score = more similar;
-- when the application has a pair matcher, ranks follow match_probability instead).
-- found_by and retriever_scores are NULL on rows published before retrievers were recorded, and
-- match_probability on rows published before matchers existed or by a run without one.
-- run_id names the pipeline run that produced the row.
-- Portable DDL: runs unchanged on SQLite and PostgreSQL 15.

CREATE TABLE IF NOT EXISTS similar_items (
    application       TEXT             NOT NULL,
    snapshot_date     DATE             NOT NULL,
    category          TEXT             NOT NULL,
    query_item_id     TEXT             NOT NULL,
    candidate_item_id TEXT             NOT NULL,
    rank              INTEGER          NOT NULL,
    score             DOUBLE PRECISION NOT NULL,
    run_id            TEXT             NOT NULL,
    -- Retrievers whose own top list held the candidate, comma-separated ("dense,lexical"): the overlap.
    found_by          TEXT,
    -- Each retriever's cosine for the pair as a JSON object ({"dense": 0.91, "lexical": 0.62}); score fuses them.
    retriever_scores  TEXT,
    -- Calibrated probability that the two items are the same product, from the application's trained pair
    -- matcher (pss train-matcher): of pairs at 0.9, about 90% are matches. NULL when no matcher is configured.
    match_probability DOUBLE PRECISION,
    PRIMARY KEY (application, snapshot_date, category, query_item_id, rank)
);

-- Reverse lookups: "which items list X as similar?"
CREATE INDEX IF NOT EXISTS similar_items_candidate_idx
    ON similar_items (application, snapshot_date, candidate_item_id);
