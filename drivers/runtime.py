"""The composition root of ``edge-agent run``: builds every part and runs the loop.

This is the one place besides drivers that reads the clock, installs signal
handlers and wires the pure core to sockets.  The loop wakes on broker
callbacks or every ``runtime.tick_seconds``; each pass handles commands, ticks
the feature services, commits buffered events to the outbox and lets the pump
publish.  READY=1 goes out before the outbox replay starts, so a long backlog
never delays start-up.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType

from agent.commands import CommandRouter, consent_commands, status_command
from agent.config import AgentConfig
from agent.consent import ConsentLedger
from agent.database import Database
from agent.events import Event
from agent.liveness import Liveness, WatchdogGate
from agent.minimise import Minimiser, Pseudonymiser, load_or_create_secret
from agent.outbox import Outbox
from agent.ports import Service
from agent.pump import Pump
from agent.sink import OutboxSink
from agent.stats import StatisticsAggregator
from agent.topics import Topics
from drivers.mqtt import MqttLink, client_id_for
from drivers.sdnotify import Notifier, watchdog_interval

log = logging.getLogger(__name__)

VERSION = "0.1.0"
MAX_COMMANDS_PER_PASS = 32


class Agent:
    """Every long-lived part of the agent, built from one configuration."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        notifier: Notifier | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        # Liveness and the watchdog measure elapsed time on a clock NTP cannot
        # step: a wall clock set back would stop the pings (and systemd kills a
        # healthy agent) or make a wedged part look fresh.
        self.monotonic = monotonic
        self.started_at = clock()
        config.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(config.state_dir, 0o700)
        self.db = Database.in_state_dir(config.state_dir)
        self.ledger = ConsentLedger(self.db, config.privacy.policy_version)
        self.topics = Topics(config.mqtt.topic_prefix, config.device.serial_number)
        self.outbox = Outbox(
            self.db,
            max_messages=config.outbox.max_messages,
            default_expiry_seconds=config.outbox.default_expiry_seconds,
        )
        pseudonymiser = Pseudonymiser(
            load_or_create_secret(config.state_dir), self.ledger.key_generation
        )
        self.minimiser = Minimiser(
            device_id=config.device.serial_number,
            is_granted=self.ledger.is_granted,
            pseudonymiser=pseudonymiser,
            timestamp_precision=config.privacy.timestamp_precision.value,
            max_event_bytes=config.privacy.max_event_bytes,
        )
        self.stats = StatisticsAggregator(
            _LateSink(self), config.privacy.statistics_interval_seconds, self.started_at
        )
        self.sink = OutboxSink(
            self.minimiser,
            self.outbox,
            self.topics,
            observers=(self.stats.observe,),
            refresh_consent=self.ledger.refresh,
        )
        self.pump = Pump(
            self.outbox,
            window=config.mqtt.max_inflight,
            batch=config.outbox.replay_batch,
            is_granted=self.ledger.is_granted,
        )
        self.wake = threading.Event()
        self.link: MqttLink | None = None
        if config.mqtt.enabled:
            self.link = MqttLink(
                config.mqtt,
                self.topics,
                self.pump,
                self.wake,
                client_id=config.mqtt.client_id or client_id_for(config.device.serial_number),
            )
        self.router = CommandRouter(max_bytes=config.mqtt.max_command_bytes)
        for name, handler in consent_commands(self.ledger, clock).items():
            self.router.register(name, handler)
        self.router.register("status", status_command(self.status))
        self.services: list[Service] = [self.stats]
        self.notifier = notifier or Notifier.from_environment(environ)
        interval = watchdog_interval(environ)
        fraction = config.runtime.watchdog_fraction
        self.liveness = Liveness(max_silence=(interval or 30.0) * fraction * 2)
        self.watchdog = WatchdogGate(self.liveness, interval * fraction if interval else None)
        self._stop = threading.Event()

    def add_service(self, service: Service) -> None:
        self.services.append(service)

    # --- status ----------------------------------------------------------------

    def status(self) -> dict[str, object]:
        now = self.clock()
        return {
            "device": self.config.device.serial_number,
            "model": self.config.device.model,
            "version": VERSION,
            "uptime_seconds": int(now - self.started_at),
            "broker_connected": bool(self.link and self.link.connected),
            "outbox": dict(self.outbox.stats()),
            "published": self.pump.published,
            "consent": self.ledger.snapshot(),
            "services": [s.name for s in self.services],
            "commands": self.router.names,
            "stale": self.liveness.stale(self.monotonic()),
        }

    # --- the loop --------------------------------------------------------------

    def emit(self, event: Event) -> bool:
        accepted = self.sink.emit(event)
        self.wake.set()
        return accepted

    def request_stop(self) -> None:
        self._stop.set()
        self.wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self.ledger.reapply_withdrawals()
        now = self.clock()
        for name in ("loop", "pump", *(s.name for s in self.services)):
            self.liveness.expect(name, self.monotonic())
        for service in self.services:
            service.start()
        self.emit(
            Event("device.status", occurred_at=now, fields={"state": "started", "version": VERSION})
        )
        log.info(
            "agent %s started for device %s, %d messages queued",
            VERSION,
            self.config.device.serial_number,
            len(self.outbox),
        )
        self.notifier.ready(status=f"queued {len(self.outbox)} messages")

    def step(self) -> None:
        """One pass of the loop; never raises for a single failing part."""
        now = self.clock()
        try:
            self.ledger.refresh()
            if self.link is not None:
                self.link.tick(now)
                self._handle_commands()
        except Exception:
            log.exception("broker link or command pass failed")
        for service in self.services:
            try:
                service.tick(now)
                self.liveness.beat(service.name, self.monotonic())
            except Exception:
                log.exception("service %s failed this tick", service.name)
        try:
            self.sink.flush(now)
            if self.link is not None:
                self.pump.tick(self.link, now)
            self.liveness.beat("pump", self.monotonic())
        except Exception:
            log.exception("outbox pass failed")
        beat = self.monotonic()
        self.liveness.beat("loop", beat)
        if self.watchdog.should_ping(beat):
            self.notifier.watchdog()

    def _handle_commands(self) -> None:
        link = self.link
        assert link is not None
        for _ in range(MAX_COMMANDS_PER_PASS):
            if not link.commands:
                return
            command = link.commands.popleft()
            reply = self.router.handle(command.name, command.payload)
            link.reply(command, reply)

    def run(self) -> None:
        self.start()
        try:
            while not self._stop.is_set():
                self.wake.wait(self.config.runtime.tick_seconds)
                self.wake.clear()
                self.step()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self.notifier.stopping()
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception:
                log.exception("stopping %s failed", service.name)
        try:
            self.sink.flush(self.clock())
        except Exception:
            log.exception("could not commit the last buffered events")
        if self.link is not None:
            # Give in-flight messages a moment to be acknowledged, then say offline.
            deadline = time.monotonic() + 2.0
            try:
                while self.pump.inflight and self.link.connected and time.monotonic() < deadline:
                    self.wake.wait(0.05)
                    self.wake.clear()
                    self.pump.tick(self.link, self.clock())
            except Exception:
                log.exception("outbox pass failed during shutdown")
            self.link.close()
        self.db.close()
        self.notifier.close()


@dataclasses.dataclass
class _LateSink:
    """Lets the statistics aggregator reach the sink built after it."""

    agent: Agent

    def emit(self, event: Event) -> bool:
        return self.agent.sink.emit(event)


def install_signal_handlers(agent: Agent) -> None:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        agent.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def run(config: AgentConfig, *, announce: bool = True) -> int:
    from drivers.features import attach_features

    agent = Agent(config)
    features = attach_features(agent)
    install_signal_handlers(agent)
    if announce:
        mqtt = config.mqtt
        broker = f"{mqtt.host}:{mqtt.port}" if mqtt.enabled else "disabled"
        print(
            f"edge-agent {VERSION}: device {config.device.serial_number}\n"
            f"  state directory : {config.state_dir.resolve()}\n"
            f"  outbox          : {agent.db.path.resolve()} ({len(agent.outbox)} queued)\n"
            f"  broker          : {broker}; watch with: mosquitto_sub -h {mqtt.host} "
            f"-p {mqtt.port} -t '{agent.topics.base}/#' -v\n"
            f"  consent         : everything off by default; grant with: edge-agent consent "
            f"grant cloud_events --state-dir {config.state_dir}\n"
            f"  features        : {', '.join(s.name for s in agent.services)}\n"
            "  stop with Ctrl-C",
            file=sys.stderr,
            flush=True,
        )
    try:
        agent.run()
    finally:
        features.close()
    return 0
