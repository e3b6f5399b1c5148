"""ESP-AT: the pure protocol layer and the backend against a module on a real pty."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DecodeError, DeviceTimeoutError, PolicyError, TooLargeError
from agent.provisioning import esp_at
from agent.provisioning.wifi import ConnectOutcome, Security, WifiCredentials
from drivers.wifi.esp_at import EspAtBackend
from tests.wifi.conftest import PLANTED_PASSPHRASE
from tests.wifi.fake_esp import FakeEspModule

# --- pure ------------------------------------------------------------------------


def test_escaping_of_comma_quote_backslash() -> None:
    assert esp_at.escape('a,b"c\\d') == 'a\\,b\\"c\\\\d'
    command = esp_at.join_command(WifiCredentials('x,"y', 'pa\\ss,"word'))
    assert command == b'AT+CWJAP="x\\,\\"y","pa\\\\ss\\,\\"word"\r\n'


@given(st.text(max_size=40))
def test_at_escape_round_trip(text: str) -> None:
    assert esp_at.unescape(esp_at.escape(text)) == text


def test_unescape_rejects_dangling_backslash() -> None:
    with pytest.raises(DecodeError):
        esp_at.unescape("abc\\")


@pytest.mark.parametrize(
    "credentials",
    [
        WifiCredentials(""),
        WifiCredentials("x" * 33),
        WifiCredentials("a\r\nAT+RST"),
        WifiCredentials("ok", "short"),
        WifiCredentials("ok", "pw\r\nAT+RST\r\n"),
    ],
)
def test_join_command_refuses_unsendable_credentials(credentials: WifiCredentials) -> None:
    with pytest.raises(PolicyError) as caught:
        esp_at.join_command(credentials)
    if credentials.passphrase:
        assert credentials.passphrase not in str(caught.value)


def test_cwlap_lines_parse() -> None:
    modern = b'+CWLAP:(3,"Home",-45,"AA:bb:cc:dd:ee:ff",6,-1,-1,4,4,7,0)'
    ap = esp_at.parse_cwlap_line(modern)
    assert (ap.ssid, ap.bssid, ap.signal_dbm, ap.security, ap.frequency_mhz) == (
        "Home",
        "aa:bb:cc:dd:ee:ff",
        -45,
        Security.WPA2_PSK,
        2437,
    )
    old = esp_at.parse_cwlap_line(b'+CWLAP:(0,"open",-80,"02:00:00:00:00:01",11)')
    assert old.security is Security.OPEN
    five = esp_at.parse_cwlap_line(b'+CWLAP:(6,"w3",-60,"02:00:00:00:00:02",36,0,0,4,4,7,0)')
    assert five.security is Security.WPA3_SAE and five.frequency_mhz == 5180


def test_escaped_ssids_in_cwlap_are_taken_whole() -> None:
    ssid = 'x",-1,"02:00:00:00:00:09",\\\u00e9'
    line = f'+CWLAP:(3,"{ssid}",-50,"02:00:00:00:00:01",1,0)'
    ap = esp_at.parse_cwlap_line(line.encode())
    assert ap.ssid == ssid
    assert ap.bssid == "02:00:00:00:00:01" and ap.signal_dbm == -50


@pytest.mark.parametrize(
    "line",
    [
        b'+CWLAP:(3,"Home",-45,"aa:bb:cc:dd:ee',
        b'+CWLAP:(3,"Home",-45',
        b"+CWLAP:(",
        b'+CWLAP:(3,"' + b"x" * 33 + b'",-45,"aa:bb:cc:dd:ee:ff",6)',
        b'+CWLAP:(3,"Home",loud,"aa:bb:cc:dd:ee:ff",6)',
        b"\xff\xfe\x00\x01",
    ],
)
def test_truncated_or_garbage_cwlap_lines_are_decode_errors(line: bytes) -> None:
    with pytest.raises(DecodeError):
        esp_at.parse_cwlap_line(line)


def test_overlong_at_lines_are_capped_and_resync() -> None:
    lines = esp_at.LineAssembler(max_line=16)
    assert lines.feed(b"OK\r\n" + b"A" * 40) == [b"OK"]
    assert lines.feed(b"B" * 40 + b"\r\nERROR\r\n+CW") == [b"ERROR"]
    assert lines.overlong_lines == 1 and lines.pending == b"+CW"


def test_exchange_ignores_echo_garbage_and_urcs() -> None:
    exchange = esp_at.AtExchange(b'AT+CWJAP="n","secret123"\r\n')
    for line in (b'AT+CWJAP="n","secret123"', b"\xff\x00garbage", b"WIFI CONNECTED", b"+IPD,3:xyz"):
        assert exchange.feed_line(line) is None
    reply = exchange.feed_line(b"OK")
    assert reply is not None and reply.status is esp_at.AtStatus.OK
    assert reply.notices == ["WIFI CONNECTED"] and reply.ignored_lines == 3
    assert all("secret123" not in text for text in reply.info + reply.notices)


def test_exchange_busy_and_result_codes() -> None:
    busy = esp_at.AtExchange(b"AT+CWLAP\r\n")
    reply = busy.feed_line(b"busy p...")
    assert reply is not None and reply.status is esp_at.AtStatus.BUSY
    join = esp_at.AtExchange(b'AT+CWJAP="a","b"\r\n')
    join.feed_line(b"+CWJAP:2")
    reply = join.feed_line(b"FAIL")
    assert reply is not None and reply.cwjap_code() == 2
    assert [esp_at.join_failure(code)[0] for code in (1, 2, 3, 4, 99, None)] == [
        ConnectOutcome.TIMEOUT,
        ConnectOutcome.WRONG_KEY,
        ConnectOutcome.NOT_FOUND,
        ConnectOutcome.FAILED,
        ConnectOutcome.FAILED,
        ConnectOutcome.FAILED,
    ]


def test_endless_reply_is_capped() -> None:
    exchange = esp_at.AtExchange(b"AT+CWLAP\r\n")
    with pytest.raises(TooLargeError):
        for _ in range(esp_at.MAX_LINES_PER_REPLY + 1):
            exchange.feed_line(b'+CWLAP:(0,"x",-1,"02:00:00:00:00:01",1)')


def test_station_ip_and_joined_ap() -> None:
    assert esp_at.parse_station_ip(['+CIPSTA:ip:"10.1.2.3"']) == "10.1.2.3"
    assert esp_at.parse_station_ip(['+CIPSTA_CUR:ip:"0.0.0.0"']) is None
    joined = esp_at.parse_joined_ap(['+CWJAP:"a,b","AA:00:00:00:00:01",6,-50,0,1,3,0,1'])
    assert joined == esp_at.JoinedAp("a,b", "aa:00:00:00:00:01")


@given(st.binary(max_size=300))
def test_at_parsers_only_raise_decode_error(data: bytes) -> None:
    lines = esp_at.LineAssembler(max_line=64)
    exchange = esp_at.AtExchange(b"AT+CWLAP\r\n")
    try:
        for line in lines.feed(data):
            exchange.feed_line(line)
        esp_at.parse_cwlap_line(data)
    except DecodeError:
        pass
    text = data.decode("utf-8", "surrogateescape")
    esp_at.parse_cwlap([text])
    esp_at.parse_station_ip([text])
    esp_at.parse_joined_ap([text])


# --- backend on a pty ---------------------------------------------------------------


@pytest.fixture
def module() -> Iterator[FakeEspModule]:
    fake = FakeEspModule({"Home": "password1", 'odd,"name\\': 'p,"w\\ord99', "Cafe": None})
    yield fake
    fake.stop()


@pytest.fixture
def backend(module: FakeEspModule) -> Iterator[EspAtBackend]:
    instance = EspAtBackend(module.port, 115200)
    yield instance
    instance.close()


def test_open_turns_echo_off(backend: EspAtBackend, module: FakeEspModule) -> None:
    assert module.received[0] == b"ATE0" and not module.echo


def test_scan_over_pty_with_garbage_and_malformed_lines(
    backend: EspAtBackend, module: FakeEspModule
) -> None:
    module.scan_lines = [
        b'+CWLAP:(3,"Home",-60,"02:00:00:00:01:00",6,-1,-1,4,4,7,0)',
        b'+CWLAP:(0,"Caf\xc3\xa9",-40,"02:00:00:00:02:00",1,-1,-1,0,0,7,0)',
        b'+CWLAP:(3,"Home",-50,"02:00:00:00:01:01",11,-1,-1,4,4,7,0)',
        b"\x00\xff\xfe binary junk",
        b'+CWLAP:(3,"trunc',
        b"X" * 2000,
    ]
    aps = backend.scan(timeout=2.0)
    assert [(ap.ssid, ap.signal_dbm) for ap in aps] == [("Caf\u00e9", -40), ("Home", -50)]


def test_connect_ok_stores_only_after_confirmed(
    backend: EspAtBackend, module: FakeEspModule
) -> None:
    result = backend.connect(WifiCredentials('odd,"name\\', 'p,"w\\ord99'), timeout=3.0)
    assert result.outcome is ConnectOutcome.CONNECTED and result.ip_address == "192.168.4.7"
    assert module.joins == [('odd,"name\\', 'p,"w\\ord99')] * 2
    assert module.flash == ('odd,"name\\', 'p,"w\\ord99') and module.store
    status = backend.status()
    assert status.connected and status.ssid == 'odd,"name\\'


@pytest.mark.parametrize(
    ("ssid", "password", "expected"),
    [
        ("Home", "wrongpass", ConnectOutcome.WRONG_KEY),
        ("Nowhere", "password1", ConnectOutcome.NOT_FOUND),
    ],
)
def test_failed_join_never_reaches_flash(
    backend: EspAtBackend, module: FakeEspModule, ssid: str, password: str, expected: ConnectOutcome
) -> None:
    result = backend.connect(WifiCredentials(ssid, password), timeout=3.0)
    assert result.outcome is expected
    assert module.flash is None and module.store, "SYSSTORE restored to 1"
    assert module.received[-2:] == [b"AT+CWQAP", b"AT+SYSSTORE=1"]


def test_joined_without_address_times_out(backend: EspAtBackend, module: FakeEspModule) -> None:
    module.grant_ip = False
    result = backend.connect(WifiCredentials("Cafe"), timeout=1.0)
    assert result.outcome is ConnectOutcome.TIMEOUT and module.flash is None


def test_busy_module_is_retried(backend: EspAtBackend, module: FakeEspModule) -> None:
    module.busy_replies = 2
    assert backend.connect(WifiCredentials("Home", "password1"), timeout=3.0).ok


def test_truncated_reply_times_out_cleanly(backend: EspAtBackend, module: FakeEspModule) -> None:
    module.truncate_reply_to = b"AT+CWLAP"
    with pytest.raises(DeviceTimeoutError, match="mid-line"):
        backend.scan(timeout=0.1)


def test_garbage_binary_on_the_serial_line_is_ignored(
    backend: EspAtBackend, module: FakeEspModule
) -> None:
    module.noise = b"\x00\xff\r\n\xfe\xfd garbage\r\n" + b"Z" * 3000 + b"\r\n"
    assert backend.connect(WifiCredentials("Home", "password1"), timeout=3.0).ok


def test_passphrase_never_logged_or_raised_esp(
    module: FakeEspModule, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    module.networks["Home"] = PLANTED_PASSPHRASE
    backend = EspAtBackend(module.port)
    try:
        module.echo = True  # a module that was reset and echoes again
        assert backend.connect(WifiCredentials("Home", PLANTED_PASSPHRASE), timeout=3.0).ok
        backend.connect(WifiCredentials("Home", PLANTED_PASSPHRASE + "x"), timeout=3.0)
        module.truncate_reply_to = b"AT+CWJAP="
        with pytest.raises(DeviceTimeoutError) as caught:
            backend.connect(WifiCredentials("Home", PLANTED_PASSPHRASE), timeout=0.2)
        assert PLANTED_PASSPHRASE not in str(caught.value)
    finally:
        backend.close()
    assert PLANTED_PASSPHRASE not in caplog.text
    for record in caplog.records:
        assert PLANTED_PASSPHRASE not in record.getMessage()
