"""``labkit`` — the command line."""
from labkit.cli.main import main

__all__ = ["main"]
