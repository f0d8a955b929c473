"""The data model: ware IDs, filters, formulas, run records, and their hashes."""
