"""The similar_items warehouse table: its one shape (schema) and the per-partition replace (publish)."""
