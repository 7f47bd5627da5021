"""The embedding cache: the contract (base), SQLite and DynamoDB backends, and open_cache (backends)."""
