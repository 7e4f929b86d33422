"""Aggregates, value objects, commands and the rules they enforce. No I/O."""
