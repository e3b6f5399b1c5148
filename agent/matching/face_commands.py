"""MQTT commands for the face gallery: ``face.list``, ``face.remove``, ``face.rename``.

Arguments come from the network: every value is type- and length-checked and a
bad one is a DecodeError (an error reply), never a crash.  Listing, removal and
relabelling always work, consent or not, so the owner can see and delete data;
nothing here adds biometric data (enrolment needs photos, see the CLI).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from agent.errors import DecodeError
from agent.matching.gallery import MAX_NAME_CHARS, Gallery
from agent.ports import AuditSink, Clock, CommandArgs, CommandHandler, CommandResult


def _text(args: CommandArgs, key: str, *, required: bool = True) -> str | None:
    value = args.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise DecodeError(f"{key!r} must be a string of at most {MAX_NAME_CHARS} characters")
    return value


def _only(args: CommandArgs, allowed: set[str]) -> None:
    unknown = [str(k)[:40] for k in args if k not in allowed]
    if unknown:
        raise DecodeError(f"unknown argument(s): {', '.join(sorted(unknown)[:5])}")


def face_commands(
    gallery: Callable[[], Gallery], clock: Clock, audit: AuditSink | None = None
) -> dict[str, CommandHandler]:
    """Handlers over the gallery returned by ``gallery()`` (it may be reopened)."""

    def record(kind: str, detail: Mapping[str, object]) -> None:
        if audit is not None:
            audit.record(kind, detail, clock.now())

    def list_(args: CommandArgs) -> CommandResult:
        _only(args, set())
        return gallery().listing()

    def remove(args: CommandArgs) -> CommandResult:
        _only(args, {"name"})
        name = _text(args, "name")
        assert name is not None
        removed = gallery().remove(name)
        record("face.remove", {"id": removed.id})
        return {"removed": removed.id}

    def rename(args: CommandArgs) -> CommandResult:
        _only(args, {"name", "to", "label"})
        name = _text(args, "name")
        assert name is not None
        updated = gallery().rename(
            name, _text(args, "to", required=False), _text(args, "label", required=False)
        )
        record("face.rename", {"id": updated.id})
        return {"id": updated.id, "name": updated.name, "label": updated.label}

    return {"face.list": list_, "face.remove": remove, "face.rename": rename}
