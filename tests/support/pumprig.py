"""The pump against a real outbox, with a transport that only records what it was given."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.database import Database
from agent.outbox import Outbox


class ListTransport:
    connected = True

    def __init__(self) -> None:
        self.sent: list[str] = []

    def publish_queued(
        self, topic: str, payload: bytes, purpose: str, msg_id: str, expires_in: int,
        *, json: object = None,
    ) -> int:
        self.sent.append(msg_id)
        return len(self.sent)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    db = Database(tmp_path / "agent.sqlite")
    try:
        yield Outbox(db, max_messages=10_000, default_expiry_seconds=3600)
    finally:
        db.close()
