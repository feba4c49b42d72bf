"""The commands of ``xbar``, one module each, each with ``run(args) -> exit status``."""
