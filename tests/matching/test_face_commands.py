"""MQTT face commands: hostile arguments become error replies, never crashes."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import BadDataError, DecodeError, NotFoundError
from agent.matching.face_commands import face_commands
from agent.matching.gallery import Gallery
from tests.support.clock import FixedClock


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, object]]] = []

    def record(self, kind: str, detail: object, now: float) -> None:
        self.records.append((kind, dict(detail)))  # type: ignore[call-overload]


@pytest.fixture
def gallery(tmp_path: pathlib.Path) -> Gallery:
    g = Gallery.open(tmp_path / "faces", 4)
    g.enrol("alice", np.eye(4)[:2])
    g.enrol("bob", np.eye(4)[2:3], label="Bob")
    return g


def test_list_rename_remove(gallery: Gallery) -> None:
    audit = Audit()
    handlers = face_commands(lambda: gallery, FixedClock(5.0), audit)
    listed = handlers["face.list"]({})
    assert [i["name"] for i in listed["identities"]] == ["alice", "bob"]  # type: ignore[index]
    alice = gallery.find("alice")
    assert handlers["face.rename"]({"name": "alice", "label": "Al"})["label"] == "Al"
    assert handlers["face.remove"]({"name": alice.id}) == {"removed": alice.id}
    assert [r.name for r in gallery.identities()] == ["bob"]
    assert [kind for kind, _ in audit.records] == ["face.rename", "face.remove"]


def test_overlong_name_is_rejected(gallery: Gallery) -> None:
    with pytest.raises(DecodeError):
        face_commands(lambda: gallery, FixedClock(0.0))["face.remove"]({"name": "a" * 10_000})


def test_non_string_name_is_rejected(gallery: Gallery) -> None:
    handlers = face_commands(lambda: gallery, FixedClock(0.0))
    for value in (None, 7, ["alice"], {"x": 1}, b"alice"):
        with pytest.raises(DecodeError):
            handlers["face.remove"]({"name": value})


def test_unknown_argument_is_rejected(gallery: Gallery) -> None:
    with pytest.raises(DecodeError, match="unknown argument"):
        face_commands(lambda: gallery, FixedClock(0.0))["face.list"]({"all": True})


def test_removing_a_missing_identity_is_not_found(gallery: Gallery) -> None:
    with pytest.raises(NotFoundError):
        face_commands(lambda: gallery, FixedClock(0.0))["face.remove"]({"name": "carol"})


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=80) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=8,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    command=st.sampled_from(["face.list", "face.remove", "face.rename"]),
    args=st.dictionaries(st.sampled_from(["name", "to", "label", "x"]) | st.text(max_size=5),
                         values, max_size=4),
)
def test_any_arguments_give_a_reply_or_bad_data(
    gallery: Gallery, command: str, args: dict[str, object]
) -> None:
    handler = face_commands(lambda: gallery, FixedClock(0.0))[command]
    try:
        reply = handler(args)
    except BadDataError:
        return
    assert isinstance(reply, dict)
