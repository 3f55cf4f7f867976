"""The ``autopipe`` command line (:func:`main`). A leaf: nothing in the package imports it."""

from __future__ import annotations

from autopipe.cli.app import main

__all__ = ["main"]
