"""The [discovery] config section: defaults, bounds and strict keys."""

from __future__ import annotations

import pytest

from agent import config as agent_config
from agent.configschema import validate_defaults
from agent.discovery.settings import DiscoverySettings
from agent.errors import ConfigError
from drivers.discovery.service import build_service


def test_defaults_respect_their_bounds() -> None:
    validate_defaults(DiscoverySettings, "discovery")


def test_discovery_section_loads() -> None:
    cfg = agent_config.parse(
        "[discovery]\ndiscoverable = false\nreply_delay_max_ms = 0\n"
        'extra_scopes = ["onvif://www.onvif.org/location/hall"]\n'
    )
    assert cfg.discovery.discoverable is False
    assert cfg.discovery.reply_delay_max_ms == 0
    assert cfg.discovery.extra_scopes == ("onvif://www.onvif.org/location/hall",)


@pytest.mark.parametrize(
    ("line", "path"),
    [
        ("reply_delay_max_ms = 501", "discovery.reply_delay_max_ms"),
        ("max_datagram_bytes = 70000", "discovery.max_datagram_bytes"),
        ('wsd_multicast_group = "10.0.0.1"', "discovery.wsd_multicast_group"),
        ('interface_address = "eth0"', "discovery.interface_address"),
        ('extra_scopes = ["a b"]', "discovery.extra_scopes"),
        ('xaddrs_path = "onvif"', "discovery.xaddrs_path"),
        ("no_such_key = 1", "discovery.no_such_key"),
    ],
)
def test_bad_values_name_their_path(line: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        agent_config.parse(f"[discovery]\n{line}\n")
    assert info.value.path == path


def test_non_discoverable_mode_builds_no_mdns_announcer() -> None:
    cfg = agent_config.parse("[discovery]\ndiscoverable = false\n")
    service = build_service(cfg)
    assert service.announcer is None
    assert service.responder is not None


def test_disabled_parts_are_not_built() -> None:
    cfg = agent_config.parse("[discovery]\nwsd_enabled = false\nmdns_enabled = false\n")
    service = build_service(cfg)
    assert service.responder is None and service.announcer is None
    assert service.fileno() == -1
