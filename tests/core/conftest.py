"""Fixtures shared by the pump tests (tests/support/pumprig.py)."""

from tests.support.pumprig import outbox

__all__ = ["outbox"]
