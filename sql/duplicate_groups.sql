-- duplicate_groups: listings that the application's trained pair matcher judges to be the same product,
-- one row per member. Each row says: in this application's catalog snapshot, within this category,
-- item_id belongs to the group group_id, which has group_size members (always at least two: an item
-- linked to no other has no row). weakest_link is the lowest match_probability (see similar_items.sql)
-- among the group's scored internal pairs: how sure the group's least sure link is.
-- A run without a matcher publishes no rows, and clears its (application, snapshot_date, category) slice.
-- run_id names the pipeline run that produced the row.
-- Portable DDL: runs unchanged on SQLite and PostgreSQL 15.

CREATE TABLE IF NOT EXISTS duplicate_groups (
    application   TEXT             NOT NULL,
    snapshot_date DATE             NOT NULL,
    category      TEXT             NOT NULL,
    -- Kept from one snapshot to the next while the group's members don't change.
    group_id      TEXT             NOT NULL,
    item_id       TEXT             NOT NULL,
    group_size    INTEGER          NOT NULL,
    weakest_link  DOUBLE PRECISION NOT NULL,
    run_id        TEXT             NOT NULL,
    PRIMARY KEY (application, snapshot_date, category, item_id)
);

-- A group's members: "which listings are the same product as X?" is X's group_id, then this lookup.
CREATE INDEX IF NOT EXISTS duplicate_groups_group_idx
    ON duplicate_groups (application, snapshot_date, category, group_id);
