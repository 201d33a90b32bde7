"""Study functions that reproduce tables and figures of the four papers (docs/algorithms.md) (called by specs)."""
