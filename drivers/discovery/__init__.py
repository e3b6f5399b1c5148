"""LAN discovery I/O: UDP sockets, python-zeroconf, and the runtime Service."""
