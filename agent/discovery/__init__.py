"""LAN discovery, sans I/O: WS-Discovery codec and responder, SSDP, mDNS records."""
