"""``edge-agent run``: the main loop over what the composition root built.

The loop wakes on broker callbacks or every ``runtime.tick_seconds``; each
pass re-reads consent once, handles commands (committing their events before
any reply), ticks the feature services and queues the events they return,
commits buffered events to the outbox and lets the pump publish.  READY=1 goes
out before the outbox replay starts, so a long backlog never delays start-up.
This module installs the signal handlers; ``drivers/compose.py`` builds
everything else.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from types import FrameType

from agent import __version__, cbor, jsonform
from agent.commands import CommandRouter, Handled, status_command
from agent.config import AgentConfig, TlsMode
from agent.events import Event
from agent.feature import Mode
from agent.jsonform import JSON_CONTENT_TYPE
from agent.liveness import WatchdogGate
from agent.minimise import Minimiser, Pseudonymiser, load_or_create_secret
from agent.ports import Clock, Service
from agent.pump import Pump
from agent.sink import OutboxSink
from agent.stats import StatisticsAggregator, purposes_from
from agent.topics import Topics
from drivers.compose import Composition, FeatureBuilder, compose
from drivers.heap import release_startup_pages
from drivers.logs.setup import stderr_is_journal
from drivers.mqtt import IncomingCommand
from drivers.sdnotify import Notifier, watchdog_interval

log = logging.getLogger(__name__)
# One line per event the agent records or holds back, and why (``make run``'s console).
event_log = logging.getLogger("edge_agent.events")
# sd_notify STATUS= is refreshed at most this often (it costs a COUNT of the outbox).
STATUS_INTERVAL_SECONDS = 1.0

VERSION = __version__
MAX_COMMANDS_PER_PASS = 32
FOREIGN_REPLY_MESSAGE = "the response topic must lie under this device's reply/ namespace"
FOREIGN_REPLY_TOPIC = {
    "ok": False,
    "error": {"code": "forbidden", "message": FOREIGN_REPLY_MESSAGE},
}


class Agent:
    """The long-running loop over one :class:`~drivers.compose.Composition`.

    Everything with state (database, ledger, outbox, link, features) comes
    built from the composition root; the agent adds only the per-event path
    (minimiser, sink, statistics), the command router and the watchdog.
    """

    def __init__(
        self,
        composition: Composition,
        *,
        notifier: Notifier | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        c = composition
        if c.mode is not Mode.DAEMON or c.pump is None:
            raise ValueError("the agent runs a daemon-mode composition")
        self.composition = c
        self.config = config = c.config
        self.clock = c.clock
        self.started_at = self.clock.now()
        self.db, self.ledger, self.outbox, self.topics = c.db, c.ledger, c.outbox, c.topics
        self.pump: Pump = c.pump
        self.link = c.link
        self.wake = c.wake
        pseudonymiser = Pseudonymiser(
            load_or_create_secret(config.state_dir), self.ledger.key_generation
        )
        self.minimiser = Minimiser(
            device_id=config.device.serial_number,
            schemas=c.schemas,
            is_granted=self.ledger.is_granted,
            pseudonymiser=pseudonymiser,
            timestamp_precision=config.privacy.timestamp_precision.value,
            max_event_bytes=config.privacy.max_event_bytes,
        )
        # Counts only what is consented when it happens, and no count below k.
        self.stats = StatisticsAggregator(
            config.privacy.statistics_interval_seconds,
            self.started_at,
            is_granted=self.ledger.is_granted,
            purpose_of=purposes_from(c.schemas),
            min_count=config.privacy.statistics_min_count,
        )
        self.sink = OutboxSink(
            self.minimiser,
            self.outbox,
            self.topics,
            observers=(self.stats.observe, self._log_event),
        )
        self.router = CommandRouter(
            c.authoriser, callers=c.callers, confidential=c.confidential
        )
        for name, handler in c.commands.items():
            self.router.register(name, handler)
        self.router.register("status", status_command(self.status))
        self.services: list[Service] = [self.stats, *c.services]
        self.notifier = notifier or Notifier.from_environment(environ)
        interval = watchdog_interval(environ)
        self.liveness = c.liveness
        self.watchdog = WatchdogGate(
            self.liveness, interval * config.runtime.watchdog_fraction if interval else None
        )
        # Plain values, no Event: a signal handler sets them on the main thread, which
        # may be inside any lock at that moment (see drivers/wakeup.py).
        self._stop = False
        self._stop_signal: int | None = None
        # (connection, base topic, versions) the retained messages were last published for.
        self._retained_for: object = None
        self._upgrade_state = "idle"
        self._status_at: float | None = None

    @classmethod
    def build(
        cls,
        config: AgentConfig,
        *,
        builders: Sequence[FeatureBuilder] | None = None,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Agent:
        """Compose ``config`` for the daemon and wrap it (``builders=()``: the spine alone)."""
        composition = compose(
            config, Mode.DAEMON, builders=builders, clock=clock, environ=environ
        )
        try:
            return cls(composition, notifier=notifier, environ=environ)
        except BaseException:
            composition.close()
            raise

    def monotonic(self) -> float:
        return self.clock.monotonic()

    # --- status ----------------------------------------------------------------

    def status(self) -> dict[str, object]:
        # Public (answered unsigned): nothing personal, no serial number, no consent.
        now = self.clock.now()
        return {
            "device": self.topics.device,
            "bound": self.composition.principals.owner() is not None,
            "model": self.config.device.model,
            "version": VERSION,
            "uptime_seconds": int(now - self.started_at),
            "broker_connected": bool(self.link and self.link.connected),
            "outbox": dict(self.outbox.stats()),
            "storage": self.outbox.storage.stats() if self.outbox.storage else {},
            "published": self.pump.published,
            "services": [s.name for s in self.services],
            "commands": self.router.names,
            "stale": self.liveness.stale(self.monotonic()),
            # What the owner accepted against advice (mqtt.allow_plaintext), on every reply.
            "warnings": [w for w in (self.config.mqtt.plaintext_warning,) if w],
        }

    # --- the loop --------------------------------------------------------------

    def _log_event(self, event: Event) -> None:
        """Say what becomes of ``event`` at the consent door (the minimiser's check)."""
        if event.type == "upgrade.state":
            self._upgrade_state = str(event.fields.get("state", self._upgrade_state))
        if not self.config.logs.event_lines:
            return  # logs.event_lines: make run's narration, not a device's log
        if event.type not in self.composition.schemas:
            event_log.info("%s held: no schema for this event type", event.type)
            return
        purpose = self.composition.schemas.get(event.type).purpose
        phase = event.fields.get("phase")
        name = f"{event.type} {phase}" if isinstance(phase, str) else event.type
        if not self.ledger.is_granted(purpose):
            event_log.info("%s held: %s not consented", name, purpose.value)
        elif self.outbox.storage is not None and self.outbox.storage.full and purpose.needs_consent:
            event_log.info("%s held: storage full", name)
        else:
            event_log.info("%s recorded (%s)", name, purpose.value)

    def _update_status(self) -> None:
        """sd_notify STATUS=: broker, queue depth and upgrade state, when one changed."""
        if not self.notifier.enabled:
            return
        beat = self.monotonic()
        if self._status_at is not None and beat - self._status_at < STATUS_INTERVAL_SECONDS:
            return
        self._status_at = beat
        if self.link is None:
            broker = "broker disabled"
        else:
            broker = "broker connected" if self.link.connected else "broker unreachable"
        self.notifier.status(
            f"{broker}; {len(self.outbox)} queued; upgrade {self._upgrade_state}"
        )

    def emit(self, event: Event) -> bool:
        accepted = self.sink.emit(event)
        # One wake per pass is enough (the pass flushes every buffered event), and
        # Event.set() takes the lock the waiting loop holds: not per event.
        if not self.wake.is_set():
            self.wake.set()
        return accepted

    def request_stop(self, signum: int | None = None) -> None:
        """Safe from a signal handler: no locks, no logging (the loop reports it)."""
        self._stop_signal = signum
        self._stop = True
        self.wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop

    def start(self) -> None:
        self.ledger.reapply_withdrawals()
        now = self.clock.now()
        for name in ("loop", "pump", *(s.name for s in self.services)):
            self.liveness.expect(name, self.monotonic())
        for service in self.services:
            service.start()
        self.emit(
            Event("device.status", occurred_at=now, fields={"state": "started", "version": VERSION})
        )
        log.info(
            "agent %s started as device %s, %d messages queued",
            VERSION,
            self.config.device.serial_number,
            len(self.outbox),
        )
        release_startup_pages()  # what importing touched once (drivers/heap.py)
        self.notifier.ready(status=f"queued {len(self.outbox)} messages")

    def step(self) -> None:
        """One pass of the loop; never raises for a single failing part."""
        now = self.clock.now()
        # Storage first: integrity, space and loss checks decide what this pass may accept.
        self.sink.maintain(now)
        try:
            self.ledger.refresh()
            self._follow_binding()
            if self.link is not None:
                self.link.tick(now)
                self._handle_commands(now)
        except Exception as exc:
            # A broken or full disk fails every pass alike: one line, not a traceback each time.
            if not self.sink.storage_failure(exc, now):
                log.exception("broker link or command pass failed")
        for service in self.services:
            try:
                for event in service.tick(now):
                    self.sink.emit(event)
                self.liveness.beat(service.name, self.monotonic())
            except Exception:
                log.exception("service %s failed this tick", service.name)
        try:
            refused = self.sink.refused
            self.sink.flush(now)
            if self.sink.refused > refused:
                # Consent withdrawn between the minimiser and the outbox's own check.
                event_log.info(
                    "%d event(s) held at the outbox door: consent withdrawn before storing",
                    self.sink.refused - refused,
                )
            if self.link is not None:
                self.pump.tick(self.link, now)
                self._publish_retained()
            self.liveness.beat("pump", self.monotonic())
        except Exception as exc:
            if not self.sink.storage_failure(exc, now):
                log.exception("outbox pass failed")
        beat = self.monotonic()
        self.liveness.beat("loop", beat)
        if self.watchdog.should_ping(beat):
            self.notifier.watchdog()
        self._update_status()

    def _publish_retained(self) -> None:
        """Features' retained messages (tombstones), again on each connection or change."""
        link = self.link
        if link is None or not link.connected:
            return
        sources = [r for f in self.composition.features for r in f.retained]
        key = (link.connects, self.topics.base, tuple(r.version for r in sources))
        if not sources or key == self._retained_for:
            return
        for source in sources:
            # absolute: whole topics outside <prefix>/<device>/ (Home Assistant discovery).
            absolute = bool(getattr(source, "absolute", False))
            for suffix, payload in source.retained_messages().items():
                topic = suffix if absolute else f"{self.topics.base}/{suffix}"
                link.publish_retained(topic, payload)
        self._retained_for = key

    def _follow_binding(self) -> None:
        """A binding (or unbind) gave the device a new id: move its topics along."""
        # Re-read: `edge-agent auth enrol/reset` may have rebound from another process.
        device_id = self.composition.principals.reload()
        if device_id == self.topics.device:
            return
        log.info("device id changed by a binding; moving to the new topics")
        self.topics = Topics(self.topics.prefix, device_id)
        self.composition.topics = self.topics
        self.sink.topics = self.topics
        if self.link is not None:
            self.link.retarget(self.topics)

    def _handle_commands(self, now: float) -> None:
        """Run up to MAX_COMMANDS_PER_PASS commands; their events are committed before any reply.

        One commit covers the whole batch, so a burst of commands costs one fsync.
        If it fails (or the disk is full) every command of the batch that had
        events hears ``unavailable`` and its events are not kept: never ``ok``
        for something that is not on disk.
        """
        link = self.link
        assert link is not None
        answered: list[tuple[IncomingCommand, Handled]] = []
        while link.commands and len(answered) < MAX_COMMANDS_PER_PASS:
            command = link.commands.popleft()
            answered.append((command, self._handle_command(command, now)))
        if not answered:
            return
        events = [event for _, handled in answered for event in handled.events]
        refusal = self.sink.commit(events, now) if events else None
        for command, handled in answered:
            reply, content_type = handled.reply, handled.content_type
            if refusal is not None and handled.events:
                self.router.failed += 1
                reply = cbor.dumps(
                    {"ok": False, "error": {"code": "unavailable", "message": refusal}}
                )
                if content_type == JSON_CONTENT_TYPE:
                    reply = jsonform.cbor_to_json(reply)
            for topic in handled.clear_retained:
                link.publish_retained(topic, b"")
            link.reply(command, reply, content_type)

    def _handle_command(self, command: IncomingCommand, now: float) -> Handled:
        """One command in CBOR or JSON; a JSON ``response_topic`` is checked like v5's."""
        request = self.router.decode(command.payload, command.content_type)
        foreign = command.foreign_response_topic
        if request.response_topic is not None and command.response_topic is None and not foreign:
            # MQTT v3.1.1 clients name their reply topic in the JSON (the v5 property wins).
            if self.topics.is_reply_topic(request.response_topic):
                command.response_topic = request.response_topic
            else:
                foreign = True
        if foreign:
            return self.router.refuse(request, "forbidden", FOREIGN_REPLY_MESSAGE)
        return self.router.handle(command.name, command.payload, now, request=request)

    def run(self) -> None:
        self.start()
        try:
            while not self._stop:
                self.wake.wait(self.config.runtime.tick_seconds)
                self.wake.clear()
                self.step()
        finally:
            if self._stop_signal is not None:
                log.info("signal %d: stopping", self._stop_signal)
            self.shutdown()

    def shutdown(self) -> None:
        now = self.clock.now()
        self.notifier.stopping()
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception:
                log.exception("stopping %s failed", service.name)
        try:
            self.sink.flush(now)
        except Exception:
            log.exception("could not commit the last buffered events")
        if self.link is not None:
            # Give in-flight messages a moment to be acknowledged, then say offline.
            deadline = self.monotonic() + 2.0
            try:
                while self.pump.inflight and self.link.connected and self.monotonic() < deadline:
                    self.wake.wait(0.05)
                    self.wake.clear()
                    self.pump.tick(self.link, self.clock.now())
            except Exception:
                log.exception("outbox pass failed during shutdown")
        self.composition.close()
        self.notifier.close()


def install_signal_handlers(agent: Agent) -> None:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Runs on the main thread between any two bytecodes: it must not log or lock.
        agent.request_stop(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def command_name() -> str:
    """How to type ``edge-agent`` in this shell: bare when on $PATH, else its path."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "edge-agent":
        found = shutil.which("edge-agent")
        if found and os.path.realpath(found) == os.path.realpath(argv0):
            return "edge-agent"
        return os.path.relpath(argv0) if not argv0.startswith("/") else argv0
    return "edge-agent" if shutil.which("edge-agent") else f"{sys.executable} -m drivers"


def run(
    config: AgentConfig, *, announce: bool = True, config_path: str | None = None
) -> int:
    agent = Agent.build(config)
    install_signal_handlers(agent)
    mqtt = config.mqtt
    if mqtt.plaintext_warning:
        log.warning("%s", mqtt.plaintext_warning)
    if announce:
        cli = command_name()
        where = (f" --config {config_path}" if config_path else "") + (
            f" --state-dir {config.state_dir}"
        )
        tls = "TLS" if mqtt.tls is TlsMode.ON else "plaintext"
        broker = f"{mqtt.host}:{mqtt.port} ({tls})" if mqtt.enabled else "disabled"
        text = (
            f"edge-agent {VERSION}: device {config.device.serial_number}\n"
            f"  state directory : {config.state_dir.resolve()}\n"
            f"  outbox          : {agent.db.path.resolve()} ({len(agent.outbox)} queued)\n"
            f"  broker          : {broker}\n"
            f"  watch events    : {cli} watch{where}\n"
            f"  consent         : everything off by default; grant with: {cli} consent "
            f"grant cloud_events{where}\n"
            "  console         : one line per event recorded or held back (and why)\n"
            f"  features        : {', '.join(s.name for s in agent.services)}\n"
            "  stop with Ctrl-C"
        )
        if stderr_is_journal():
            # journald reads a <N> priority at the start of each line (sd-daemon(3)).
            text = "\n".join(f"<6>{line}" for line in text.split("\n"))
        print(text, file=sys.stderr, flush=True)
    agent.run()
    return 0
