"""The console copy is redacted like the store; withdrawing troubleshooting_logs purges it.

Issue 11 item 7: the stderr/journald copy was entirely unredacted, and a
withdrawal of ``troubleshooting_logs`` purged nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import subprocess
import sys
import textwrap
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from agent.config import AgentConfig
from agent.feature import Mode
from agent.keystore import DataKeys
from agent.layout import StateLayout
from agent.logs.redact import Redactor
from agent.logs.settings import LogSettings
from agent.purposes import Purpose
from drivers.compose import Composition, compose
from drivers.logs.feature import build_logs
from drivers.logs.setup import RedactingFormatter, install_logging, write_crash_record
from drivers.logs.store import LogStore
from tests.logs.leaks import leaks
from tests.support.clock import FixedClock

NAME = "Gwendolyn Ápfelbaum"
SSID = "Mallory's 5G"


@contextlib.contextmanager
def console() -> Iterator[logging.StreamHandler]:  # type: ignore[type-arg]
    """A console handler as ``edge-agent run`` sets up, on the (captured) stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def test_console_lines_and_tracebacks_are_redacted(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    redactor = Redactor(lambda: [NAME])
    redactor.remember(SSID)
    with console() as handler:
        handle = install_logging(
            AgentConfig(state_dir=tmp_path), redactor, clock=FixedClock(1.0),
            keys=DataKeys(StateLayout(tmp_path)),
        )
        try:
            assert isinstance(handler.formatter, RedactingFormatter)
            log = logging.getLogger("edge.test")
            log.warning("enrolled %s; query ?n=%s", NAME, urllib.parse.quote_plus(NAME))
            try:
                raise ValueError(f"no network {SSID!r} ({urllib.parse.quote(SSID)})")
            except ValueError:
                log.exception("connect failed for %s", json.dumps(SSID))
        finally:
            handle.close()
        # Closing gives the console its own formatter back.
        assert not isinstance(handler.formatter, RedactingFormatter)
    err = capsys.readouterr().err
    assert "WARNING edge.test: enrolled [REDACTED:known]" in err  # the layout is kept
    assert "Traceback" in err and "ValueError" in err
    assert leaks(NAME, err) == [] and leaks(SSID, err) == []


def test_an_unhandled_exception_reaches_stderr_only_redacted(tmp_path: pathlib.Path) -> None:
    script = textwrap.dedent(
        f"""
        import pathlib
        from agent.config import AgentConfig
        from agent.keystore import DataKeys
        from agent.layout import StateLayout
        from agent.logs.redact import Redactor
        from drivers.logs.setup import install_logging
        state = pathlib.Path({str(tmp_path)!r})
        handle = install_logging(AgentConfig(state_dir=state),
                                 Redactor(lambda: [{NAME!r}]), keys=DataKeys(StateLayout(state)))
        raise RuntimeError("boom for " + {urllib.parse.quote(NAME)!r})
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "RuntimeError" in done.stderr and "Traceback" in done.stderr
    assert leaks(NAME, done.stderr) == []


def test_the_cli_console_redacts_too(tmp_path: pathlib.Path) -> None:
    composition = compose(AgentConfig(state_dir=tmp_path), Mode.CLI, builders=(build_logs,))
    try:
        last_resort = logging.lastResort
        assert last_resort is not None
        assert isinstance(last_resort.formatter, RedactingFormatter)
        composition.redactor.remember(SSID)
        record = logging.LogRecord("t", logging.WARNING, __file__, 1, "ssid %s", (SSID,), None)
        assert leaks(SSID, last_resort.format(record)) == []
    finally:
        composition.close()
    assert logging.lastResort is not None
    assert not isinstance(logging.lastResort.formatter, RedactingFormatter)


# --- withdrawal -----------------------------------------------------------------------


@pytest.fixture
def daemon_logs(tmp_path: pathlib.Path) -> Iterator[Composition]:
    config = AgentConfig(state_dir=tmp_path, logs=LogSettings(max_store_bytes=256 * 1024))
    composition = compose(config, Mode.DAEMON, builders=(build_logs,), environ={})
    try:
        yield composition
    finally:
        composition.close()


def _store_text(store: LogStore) -> str:
    return "\n".join(store.iter_lines())


def test_withdrawing_troubleshooting_logs_purges_every_line_written_before(
    daemon_logs: Composition,
) -> None:
    c = daemon_logs
    (holding,) = c.feature("logs").holdings
    store = holding.holder
    assert isinstance(store, LogStore)
    c.ledger.grant(Purpose.TROUBLESHOOTING_LOGS, time.time())
    log = logging.getLogger("edge.test")
    log.warning("before the withdrawal: query ?n=%s", urllib.parse.quote(NAME))
    write_crash_record(store, c.redactor, "exception", "crash before", "trace", now=time.time())
    assert "before the withdrawal" in _store_text(store) and store.crash_files()
    change = c.ledger.withdraw(Purpose.TROUBLESHOOTING_LOGS, time.time(), source="test")
    assert change.purged["logs"] >= 2
    log.warning("after the withdrawal")
    text = _store_text(store)
    assert "before the withdrawal" not in text and "crash before" not in text
    assert "after the withdrawal" in text
    # The purge overwrote the bytes; it did not just drop them from the listing.
    raw = b"".join(p.read_bytes() for p in store.directory.iterdir() if p.is_file())
    assert b"before the withdrawal" not in raw
    # Re-run at every start (as the runtime does): what came after the withdrawal stays.
    c.ledger.reapply_withdrawals()
    assert "after the withdrawal" in _store_text(store)


def test_a_device_that_never_consented_keeps_its_logs_across_starts(
    daemon_logs: Composition,
) -> None:
    c = daemon_logs
    logging.getLogger("edge.test").warning("written without the consent")
    c.ledger.reapply_withdrawals()
    (holding,) = c.feature("logs").holdings
    assert isinstance(holding.holder, LogStore)
    assert "written without the consent" in _store_text(holding.holder)
    assert c.ledger.withdrawal_hooks(Purpose.TROUBLESHOOTING_LOGS) == ["logs"]
