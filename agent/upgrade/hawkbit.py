"""Eclipse hawkBit's Direct Device Integration (DDI) API as pure functions over parsed JSON.

The driver (:mod:`drivers.upgrade.hawkbit`) does the HTTP; this module reads
the server's documents -- the controller base (polling interval and links),
``deploymentBase`` and ``cancelAction`` -- decides what to do from them, the
persisted :class:`ActionState` and the local :class:`UpgradeRecord`, and builds
the feedback bodies.  The signed SUIT envelope still decides what is
installed: hawkBit only says *which* release and *when*.

* ``update``/``download`` = ``skip`` (e.g. outside hawkBit's maintenance
  window, ``maintenanceWindow: unavailable``): nothing is fetched; one
  ``scheduled`` feedback says why.
* ``attempt``: installed when the device's own policy allows it now
  (auto-install for this model, local maintenance windows, deferral).
* ``forced``: installed (and rebooted into) now, whatever the local windows;
  signature, policy and the failed-release rule still apply.
* The result after the trial boot -- committed, or rolled back by the health
  check -- is reported as ``closed`` with ``success``/``failure``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Mapping

from agent.errors import DecodeError
from agent.upgrade.machine import State, UpgradeRecord

MAX_DOCUMENT_BYTES = 256 * 1024
_SLEEP = re.compile(r"^(\d{1,3}):([0-5]\d):([0-5]\d)$")


class Handling(enum.Enum):
    SKIP = "skip"
    ATTEMPT = "attempt"
    FORCED = "forced"


class Phase(enum.Enum):
    NEW = "new"  # seen, nothing done yet
    SCHEDULED = "scheduled"  # told the server it waits (skip, or local policy)
    INSTALLING = "installing"  # handed to the installer; the upgrade record has the outcome
    FINISHED = "finished"  # closed feedback sent


@dataclasses.dataclass(frozen=True)
class ControllerBase:
    sleep_seconds: int
    deployment_href: str | None
    cancel_href: str | None


@dataclasses.dataclass(frozen=True)
class Artifact:
    filename: str
    size: int | None
    sha256: str | None
    href: str


@dataclasses.dataclass(frozen=True)
class Deployment:
    action_id: str
    download: Handling
    update: Handling
    maintenance_window: str | None  # "available" | "unavailable" | None (no window)
    envelope: Artifact
    image: Artifact


@dataclasses.dataclass(frozen=True)
class ActionState:
    """What the device did about one hawkBit action (persisted between polls and reboots)."""

    action_id: str = ""
    phase: Phase = Phase.NEW
    sequence: int = -1  # the SUIT sequence, once its envelope verified
    forced: bool = False

    def to_bytes(self) -> bytes:
        data = dataclasses.asdict(self)
        data["phase"] = self.phase.value
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> ActionState:
        if raw is None:
            return cls()
        try:
            data = json.loads(raw)
            return cls(
                action_id=str(data["action_id"]),
                phase=Phase(data["phase"]),
                sequence=int(data["sequence"]),
                forced=bool(data["forced"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DecodeError(f"hawkBit action file is unreadable: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class Feedback:
    execution: str  # closed | proceeding | scheduled | rejected | download | downloaded ...
    finished: str = "none"  # success | failure | none
    details: tuple[str, ...] = ()
    progress: tuple[int, int] | None = None  # (cnt, of)

    def body(self) -> dict[str, object]:
        """The DDI ``DdiActionFeedback`` JSON posted to ``.../{actionId}/feedback``.

        As the current API publishes it: ``status`` only (``time`` is optional,
        and the ``id`` member of old servers is gone).
        """
        result: dict[str, object] = {"finished": self.finished}
        if self.progress is not None:
            result["progress"] = {"cnt": self.progress[0], "of": self.progress[1]}
        status: dict[str, object] = {"execution": self.execution, "result": result}
        if self.details:
            status["details"] = [d[:500] for d in self.details]
        return {"status": status}


class Step(enum.Enum):
    WAIT = "wait"  # nothing to do now (feedback, if any, first)
    INSTALL = "install"  # fetch the envelope, verify, install
    REPORT = "report"  # send the closing feedback


@dataclasses.dataclass(frozen=True)
class Plan:
    step: Step
    state: ActionState
    feedback: Feedback | None = None


# --- parsing ----------------------------------------------------------------------


def _mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise DecodeError(f"hawkBit {what} is not a JSON object")
    return value


def _href(links: object, name: str) -> str | None:
    if not isinstance(links, Mapping):
        return None
    link = links.get(name)
    href = link.get("href") if isinstance(link, Mapping) else None
    if href is None:
        return None
    if not isinstance(href, str) or not href.startswith(("http://", "https://")):
        raise DecodeError(f"hawkBit link {name!r} is not an http(s) URL")
    return href


def parse_sleep(text: object) -> int:
    """``config.polling.sleep`` ("HH:MM:SS") in seconds."""
    match = _SLEEP.match(text) if isinstance(text, str) else None
    if match is None:
        raise DecodeError(f"hawkBit polling sleep {str(text)[:20]!r} is not HH:MM:SS")
    hours, minutes, seconds = (int(g) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse_base(document: object, min_seconds: int, max_seconds: int) -> ControllerBase:
    """The controller base resource: the polling interval (bounded) and the action links."""
    base = _mapping(document, "controller base")
    config = _mapping(base.get("config", {}), "config")
    polling = _mapping(config.get("polling", {}), "polling")
    sleep = parse_sleep(polling.get("sleep", "00:05:00"))
    links = base.get("_links")
    return ControllerBase(
        sleep_seconds=min(max(sleep, min_seconds), max_seconds),
        deployment_href=_href(links, "deploymentBase"),
        cancel_href=_href(links, "cancelAction"),
    )


def _artifact(raw: object) -> Artifact:
    item = _mapping(raw, "artifact")
    filename = item.get("filename")
    if not isinstance(filename, str) or not filename:
        raise DecodeError("hawkBit artifact has no filename")
    links = item.get("_links")
    href = _href(links, "download") or _href(links, "download-http")
    if href is None:
        raise DecodeError(f"hawkBit artifact {filename!r} has no download link")
    size = item.get("size")
    hashes = item.get("hashes")
    sha256 = hashes.get("sha256") if isinstance(hashes, Mapping) else None
    return Artifact(
        filename=filename,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        sha256=sha256 if isinstance(sha256, str) else None,
        href=href,
    )


def _handling(value: object, what: str) -> Handling:
    try:
        return Handling(value)
    except ValueError as exc:
        raise DecodeError(f"hawkBit {what} handling {str(value)[:20]!r} is unknown") from exc


def parse_deployment(document: object, envelope_suffix: str) -> Deployment:
    """``deploymentBase``: the action, its handling and the envelope + image artifacts."""
    base = _mapping(document, "deploymentBase")
    action_id = base.get("id")
    if not isinstance(action_id, str | int) or isinstance(action_id, bool):
        raise DecodeError("hawkBit deploymentBase has no action id")
    deployment = _mapping(base.get("deployment"), "deployment")
    chunks = deployment.get("chunks")
    if not isinstance(chunks, list):
        raise DecodeError("hawkBit deployment has no chunks")
    artifacts: list[Artifact] = []
    for chunk in chunks:
        raw = _mapping(chunk, "chunk").get("artifacts", [])
        artifacts.extend(_artifact(a) for a in (raw if isinstance(raw, list) else []))
    envelopes = [a for a in artifacts if a.filename.endswith(envelope_suffix)]
    images = [a for a in artifacts if not a.filename.endswith(envelope_suffix)]
    if len(envelopes) != 1 or len(images) != 1:
        raise DecodeError(
            f"hawkBit deployment must carry one *{envelope_suffix} envelope and one image; "
            f"it has {len(envelopes)} envelope(s) and {len(images)} other artifact(s)"
        )
    window = deployment.get("maintenanceWindow")
    return Deployment(
        action_id=str(action_id),
        download=_handling(deployment.get("download", "forced"), "download"),
        update=_handling(deployment.get("update", "forced"), "update"),
        maintenance_window=window if isinstance(window, str) else None,
        envelope=envelopes[0],
        image=images[0],
    )


def parse_cancel(document: object) -> str:
    """``cancelAction``: the id of the action to stop."""
    cancel = _mapping(_mapping(document, "cancelAction").get("cancelAction"), "cancelAction")
    stop = cancel.get("stopId")
    if not isinstance(stop, str | int) or isinstance(stop, bool):
        raise DecodeError("hawkBit cancelAction has no stopId")
    return str(stop)


# --- decisions --------------------------------------------------------------------


def outcome(record: UpgradeRecord, sequence: int) -> Feedback | None:
    """The closing feedback for ``sequence`` if the upgrade record has an outcome, else None."""
    if sequence < 0:
        return None
    if record.installed_sequence >= sequence:
        return Feedback("closed", "success", (f"sequence {record.installed_sequence} runs",))
    if sequence in record.failed_sequences or (
        record.sequence == sequence and record.state == State.FAILED
    ):
        reason = record.reason if record.sequence == sequence else "failed here before"
        return Feedback("closed", "failure", (f"sequence {sequence}: {reason or 'failed'}",))
    return None


def _scheduled(state: ActionState, why: str) -> Plan:
    if state.phase == Phase.SCHEDULED:
        return Plan(Step.WAIT, state)  # said so already
    waiting = dataclasses.replace(state, phase=Phase.SCHEDULED)
    return Plan(Step.WAIT, waiting, Feedback("scheduled", "none", (why,)))


def plan_deployment(
    deployment: Deployment, state: ActionState, record: UpgradeRecord, local_policy_ok: bool
) -> Plan:
    """What to do about ``deployment`` now."""
    if state.action_id != deployment.action_id:
        state = ActionState(action_id=deployment.action_id)
    if state.phase == Phase.FINISHED:
        return Plan(Step.WAIT, state)
    if state.phase == Phase.INSTALLING:
        closing = outcome(record, state.sequence)
        if closing is not None:
            return Plan(Step.REPORT, dataclasses.replace(state, phase=Phase.FINISHED), closing)
        if record.busy or state.sequence < 0:
            return Plan(Step.WAIT, state)  # downloading, awaiting the reboot, on trial
    if Handling.SKIP in (deployment.download, deployment.update):
        why = (
            "maintenance window unavailable"
            if deployment.maintenance_window == "unavailable"
            else "the server asks to skip this action for now"
        )
        return _scheduled(state, why)
    forced = deployment.update == Handling.FORCED
    if not forced and not local_policy_ok:
        return _scheduled(state, "waiting for the device's auto-install policy or its window")
    if record.busy:
        return _scheduled(state, f"another upgrade is {record.state.value}")
    installing = dataclasses.replace(state, phase=Phase.INSTALLING, forced=forced)
    starting = Feedback("proceeding", "none", ("verifying the signed envelope",))
    return Plan(Step.INSTALL, installing, starting)


def plan_cancel(stop_id: str, state: ActionState, record: UpgradeRecord) -> tuple[Feedback, bool]:
    """The cancel feedback for ``stop_id``, and whether a running download must stop.

    Once the image is in the slot and armed the trial decides; the cancellation
    is then rejected (DDI ``rejected``), never half-applied.
    """
    ours = state.action_id == stop_id and state.phase == Phase.INSTALLING
    armed = record.state in (State.INSTALLING, State.AWAITING_REBOOT, State.TRIAL)
    if ours and armed and record.sequence == state.sequence:
        why = f"sequence {record.sequence} is already installed ({record.state.value})"
        return Feedback("rejected", "none", (why,)), False
    stop = ours and record.state == State.DOWNLOADING
    return Feedback("closed", "success", ("cancelled on request",)), stop
