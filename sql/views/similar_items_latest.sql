-- similar_items_latest: the rows of each application's latest snapshot_date only.
-- The view's query, the same on PostgreSQL and SQLite; pss_ops/warehouse/schema.py adds the dialect's
-- CREATE (PostgreSQL has no CREATE VIEW IF NOT EXISTS, SQLite no CREATE OR REPLACE VIEW).
-- s.* follows the table's columns (sql/similar_items.sql), so the view never lists them again.

SELECT s.*
FROM similar_items AS s
WHERE s.snapshot_date = (
    SELECT MAX(l.snapshot_date)
    FROM similar_items AS l
    WHERE l.application = s.application
);
