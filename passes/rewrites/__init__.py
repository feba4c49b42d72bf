"""The graph passes, one per file: each edits a GraphModule in place by its listed rules."""
