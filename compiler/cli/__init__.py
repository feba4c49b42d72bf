"""The ``xbar`` command line: main.py parses and dispatches, commands/ holds one module per command,
the rest is what commands share (arguments, console, model and data loading, reports, views)."""
