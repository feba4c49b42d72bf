"""Chip targets: descriptions of real chips, placing a compiled model's arrays on them, and the cost model."""
