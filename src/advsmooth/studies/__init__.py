"""Study functions that reproduce tables and figures of the four papers (called by specs)."""
