"""The installed distribution's version, for files and messages that record it."""

from importlib.metadata import version

__version__ = version("xbar-compiler")
