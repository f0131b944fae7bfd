"""The ``edgeq`` command line: parses, calls the library, prints. No logic of its own."""
from edgeq.cli.main import main

__all__ = ["main"]
