"""Eclipse hawkBit DDI client: the HTTP side of :mod:`agent.upgrade.hawkbit`.

``GET {server}/{tenant}/controller/v1/{controllerId}`` every
``config.polling.sleep``; ``deploymentBase`` and ``cancelAction`` when linked;
feedback ``POST``\\ ed to ``.../{actionId}/feedback``.  The signed SUIT
envelope and the image are the action's two artifacts; the envelope goes
through the same verification, policy and failed-release rules as any other
(:meth:`Installer.verify`), and the image is fetched from its artifact link
(the signed digest decides).

The security token is read from ``upgrade.hawkbit.token_file`` and sent as
``Authorization: TargetToken|GatewayToken ...`` to the hawkBit origin only
(never across a redirect to a CDN); it is never logged.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from collections.abc import Callable

from agent.atomicfile import read_optional, write_atomic
from agent.config import AgentConfig
from agent.errors import BadDataError, ConfigError, DecodeError, EdgeAgentError, NotFoundError
from agent.layout import StateLayout
from agent.ports import Clock
from agent.upgrade import hawkbit as ddi
from agent.upgrade.envelope import verify_envelope
from agent.upgrade.errors import RollbackError
from agent.upgrade.hawkbit import ActionState, Feedback, Phase, Step
from agent.upgrade.machine import State
from agent.upgrade.settings import HawkbitSettings, HawkbitTokenKind, UpgradeSettings
from drivers.upgrade.http import (
    HttpClient,
    HttpImageSource,
    check_status,
    http_options,
    read_bounded,
)
from drivers.upgrade.installer import DownloadInterruptedError, Installer

log = logging.getLogger(__name__)
MAX_TOKEN_BYTES = 4096
PROGRESS_STEPS = 10  # progress feedback as cnt/of in tenths


def read_token(settings: HawkbitSettings) -> dict[str, str]:
    """The Authorization header from the token file ({} without one); the token is not logged."""
    if settings.token_file is None:
        return {}
    raw = read_optional(settings.token_file, MAX_TOKEN_BYTES)
    if raw is None:
        raise ConfigError("upgrade.hawkbit.token_file", f"{settings.token_file} does not exist")
    token = raw.decode("utf-8", "replace").strip()
    if not token or any(c.isspace() for c in token):
        raise ConfigError("upgrade.hawkbit.token_file", "must hold one token on one line")
    kind = "GatewayToken" if settings.token_kind == HawkbitTokenKind.GATEWAY else "TargetToken"
    return {"Authorization": f"{kind} {token}"}


def controller_url(settings: HawkbitSettings, controller_id: str) -> str:
    server = settings.server_url.rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise ConfigError("upgrade.hawkbit.server_url", "must be an http(s) URL")
    tenant = urllib.parse.quote(settings.tenant, safe="")
    controller = urllib.parse.quote(controller_id, safe="")
    return f"{server}/{tenant}/controller/v1/{controller}"


class DdiClient:
    """JSON over HTTP(S) to one hawkBit controller resource."""

    def __init__(self, settings: UpgradeSettings, controller_id: str) -> None:
        self.settings = settings
        self.base_url = controller_url(settings.hawkbit, controller_id)
        self.options = http_options(settings, read_token(settings.hawkbit))
        self.http = HttpClient(self.options)

    def image_source(self) -> HttpImageSource:
        """Artifact downloads: the token goes to the hawkBit origin only, never to a CDN."""
        return HttpImageSource(options=self.options)

    def get(
        self, uri: str, max_bytes: int = ddi.MAX_DOCUMENT_BYTES, accept: str | None = None
    ) -> bytes:
        headers = {"Accept": accept} if accept else {}
        connection, response, final = self.http.open(uri, headers)
        check_status(final, connection, response)
        return read_bounded(final, connection, response, max_bytes)

    def get_json(self, uri: str) -> object:
        try:
            return json.loads(self.get(uri, accept="application/hal+json"))
        except ValueError as exc:
            raise DecodeError(f"hawkBit answered {uri[:80]} with invalid JSON") from exc

    def post_json(self, uri: str, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json;charset=UTF-8"}
        connection, response, final = self.http.open(uri, headers, method="POST", body=data)
        check_status(final, connection, response)
        read_bounded(final, connection, response, ddi.MAX_DOCUMENT_BYTES)

    def feedback(self, action_href: str, feedback: Feedback) -> None:
        """POST ``feedback`` to ``{deploymentBase|cancelAction}/{id}/feedback``."""
        path = urllib.parse.urlsplit(action_href)._replace(query="", fragment="")
        self.post_json(path.geturl().rstrip("/") + "/feedback", feedback.body())


class HawkbitPoller:
    """Polls the controller base when due and carries out the DDI plan (worker thread)."""

    def __init__(
        self,
        client: DdiClient,
        installer: Installer,
        layout: StateLayout,
        clock: Clock,
        local_policy_ok: Callable[[float], bool],
    ) -> None:
        self.client = client
        self.installer = installer
        self.path = layout.upgrade_hawkbit_action
        self.clock = clock
        self.local_policy_ok = local_policy_ok
        self.settings = client.settings.hawkbit
        self.next_poll = 0.0
        self._cancelled = threading.Event()
        self._progress_step = -1
        self._action_href = ""
        self._pending_cancel: tuple[str, Feedback] | None = None

    # --- persisted action ---------------------------------------------------------

    def state(self) -> ActionState:
        return ActionState.from_bytes(read_optional(self.path, 64 * 1024))

    def _save(self, state: ActionState) -> None:
        write_atomic(self.path, state.to_bytes())

    @property
    def forced(self) -> bool:
        """The action being installed is forced: reboot into it without waiting for a window."""
        state = self.state()
        return state.forced and state.phase == Phase.INSTALLING

    # --- polling ------------------------------------------------------------------

    def due(self, now: float) -> bool:
        return now >= self.next_poll

    def poll(self, now: float) -> None:
        """One DDI round: controller base, then cancelAction and/or deploymentBase."""
        self._settle_cancel()  # a download cancelled while the worker was elsewhere
        base = ddi.parse_base(
            self.client.get_json(self.client.base_url),
            self.settings.min_poll_seconds,
            self.settings.max_poll_seconds,
        )
        self.next_poll = now + base.sleep_seconds
        if base.cancel_href is not None:
            self._cancel(base.cancel_href)
        if base.deployment_href is not None:
            self._deployment(base.deployment_href, now)

    def _cancel(self, href: str) -> None:
        stop_id = ddi.parse_cancel(self.client.get_json(href))
        state = self.state()
        feedback, stop = ddi.plan_cancel(stop_id, state, self.installer.record())
        if stop:
            # The download stops at its next chunk; the worker then abandons it and
            # confirms (_settle_cancel): the feedback follows the fact.
            self._pending_cancel = (href, feedback)
            self._cancelled.set()
            return
        if feedback.execution == "closed" and state.action_id == stop_id:
            self._save(ActionState(stop_id, Phase.FINISHED, state.sequence))
        self.client.feedback(href, feedback)
        log.info("hawkBit cancel of action %s: %s", stop_id, feedback.execution)

    def _settle_cancel(self) -> None:
        """After a cancelled download stopped: mark it failed (not barred), then confirm."""
        if self._pending_cancel is None or self.installer.record().state != State.DOWNLOADING:
            return
        href, feedback = self._pending_cancel
        state = self.state()
        self.installer.abandon(f"cancelled by the hawkBit server (action {state.action_id})")
        self._save(ActionState(state.action_id, Phase.FINISHED, state.sequence))
        self.client.feedback(href, feedback)
        self._pending_cancel = None
        self._cancelled.clear()
        log.info("hawkBit action %s cancelled during its download", state.action_id)

    def _deployment(self, href: str, now: float) -> None:
        deployment = ddi.parse_deployment(self.client.get_json(href), self.settings.envelope_suffix)
        plan = ddi.plan_deployment(
            deployment, self.state(), self.installer.record(), self.local_policy_ok(now)
        )
        self._action_href = href
        if plan.step == Step.INSTALL:
            self._save(plan.state)
            if plan.feedback is not None:
                self.client.feedback(href, plan.feedback)
            self._install(href, deployment, plan.state)
            return
        if plan.feedback is not None:
            self.client.feedback(href, plan.feedback)
            log.info(
                "hawkBit action %s: %s %s",
                deployment.action_id,
                plan.feedback.execution,
                "; ".join(plan.feedback.details),
            )
        self._save(plan.state)

    def _finish(self, href: str, state: ActionState, feedback: Feedback) -> None:
        self.client.feedback(href, feedback)
        self._save(ActionState(state.action_id, Phase.FINISHED, state.sequence, state.forced))
        log.info("hawkBit action %s closed: %s", state.action_id, feedback.finished)

    def _install(self, href: str, deployment: ddi.Deployment, state: ActionState) -> None:
        try:
            envelope = self.client.get(
                deployment.envelope.href, self.installer.settings.max_manifest_bytes
            )
            verified = self.installer.verify(envelope)
        except RollbackError as exc:  # not newer: fine if it is the very release that runs
            self._finish(href, state, self._already_installed(envelope, exc))
            return
        except (BadDataError, NotFoundError) as exc:
            self._finish(href, state, Feedback("closed", "failure", (str(exc),)))
            return
        state = ActionState(
            state.action_id, Phase.INSTALLING, verified.manifest.sequence, state.forced
        )
        self._save(state)
        self._cancelled.clear()
        self._progress_step = -1
        self.client.feedback(href, Feedback("download", "none", (deployment.image.filename,)))
        try:
            record = self.installer.install(envelope, image_uri=deployment.image.href)
        except DownloadInterruptedError:
            if self._cancelled.is_set():
                self._settle_cancel()
                return
            raise  # the agent is stopping: the download resumes at the next start
        except BadDataError as exc:
            self._finish(href, state, Feedback("closed", "failure", (str(exc),)))
            return
        except EdgeAgentError as exc:  # transport: cut for good, stalled, deadline
            self._finish(href, state, Feedback("closed", "failure", (str(exc),)))
            return
        detail = (
            f"sequence {record.sequence} installed in slot {record.target_slot}; trial boot next"
        )
        self.client.feedback(href, Feedback("downloaded", "none", (detail,)))

    def _already_installed(self, envelope: bytes, refusal: RollbackError) -> Feedback:
        record = self.installer.record()
        try:
            verified = verify_envelope(
                envelope, self.installer.keys.load(), max_bytes=len(envelope)
            )
        except BadDataError:
            return Feedback("closed", "failure", (str(refusal),))
        if verified.manifest.sequence == record.installed_sequence:
            return Feedback("closed", "success", (f"sequence {record.installed_sequence} runs",))
        return Feedback("closed", "failure", (str(refusal),))

    # --- during a download (installer.on_progress, installer.should_stop) ------------

    def on_progress(self, received: int, total: int) -> None:
        step = PROGRESS_STEPS * received // max(total, 1)
        if step != self._progress_step and self._action_href:
            self._progress_step = step
            feedback = Feedback("proceeding", "none", ("downloading",), (step, PROGRESS_STEPS))
            try:
                self.client.feedback(self._action_href, feedback)
            except EdgeAgentError as exc:  # progress is best effort
                log.info("hawkBit progress feedback failed: %s", exc)
        now = self.clock.now()
        if self.due(now) and not self._cancelled.is_set():
            try:  # a long download still hears a cancelAction
                base = ddi.parse_base(
                    self.client.get_json(self.client.base_url),
                    self.settings.min_poll_seconds,
                    self.settings.max_poll_seconds,
                )
                self.next_poll = now + base.sleep_seconds
                if base.cancel_href is not None:
                    self._cancel(base.cancel_href)
            except EdgeAgentError as exc:
                log.info("hawkBit poll during the download failed: %s", exc)

    def cancelled(self) -> bool:
        return self._cancelled.is_set()


def controller_id(config: AgentConfig) -> str:
    return config.upgrade.hawkbit.controller_id or config.device.serial_number
