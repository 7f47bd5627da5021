-- similar_items_latest (PostgreSQL): the rows of each application's latest snapshot_date only.
-- PostgreSQL has no CREATE VIEW IF NOT EXISTS, so the view is (re)defined in place.
-- Keep the SELECT identical to similar_items_latest.sqlite.sql.

CREATE OR REPLACE VIEW similar_items_latest AS
SELECT s.application, s.snapshot_date, s.category, s.query_item_id,
       s.candidate_item_id, s.rank, s.score, s.run_id
FROM similar_items AS s
WHERE s.snapshot_date = (
    SELECT MAX(l.snapshot_date)
    FROM similar_items AS l
    WHERE l.application = s.application
);
