"""Study functions that reproduce tables and figures of the seed papers (called by specs)."""
