"""Match decisions: which candidate pairs are the same product (the pair features the matcher reads)."""
