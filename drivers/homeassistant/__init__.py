"""Home Assistant MQTT discovery as a feature unit (``build_homeassistant``)."""

from drivers.homeassistant.feature import build_homeassistant

__all__ = ["build_homeassistant"]
