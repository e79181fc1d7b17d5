"""The ``calibench`` command line: ``parser`` builds the arguments, ``commands`` runs them."""

from calibench.cli.commands import main

__all__ = ["main"]
