"""Feature extractors and the compound embedding built from them (paper §3.1.1)."""
