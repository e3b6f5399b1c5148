"""I/O edge of edge-agent: hardware, OS, sockets, broker, camera."""
