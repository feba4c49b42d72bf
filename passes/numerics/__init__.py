"""The numerics the passes insert: plain modules and functions on tensors, no graph edits."""
