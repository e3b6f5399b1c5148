"""Pure core of edge-agent: no sockets, serial, cv2, paho or subprocess here."""
