"""Similarity search: HNSW indexes (hnsw), the exact top-K merge (merge), tuning (tuning) and the post-filter rules (filters)."""
