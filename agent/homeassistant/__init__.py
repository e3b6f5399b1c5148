"""Home Assistant MQTT discovery: the discovery configs, built from consent and device info."""
