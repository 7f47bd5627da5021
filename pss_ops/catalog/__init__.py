"""The catalog contract: reading (source), validation and rejects (validate), vector columns (vectors), partitioning (partition)."""
