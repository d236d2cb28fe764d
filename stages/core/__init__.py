"""What every stage shares: params models, atomic I/O, one-line errors, names shared with the flows."""
