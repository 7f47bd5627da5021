"""Quality: metric definitions (metrics, recall), the search's recall against brute force (search_recall), `pss evaluate` (evaluate)."""
