"""The pure core of edge-agent (see README, "What agent/ may do")."""

# The one place the version is spelled: setup.cfg reads it (attr:), the CLI and
# the status reply print it.
__version__ = "0.1.0"
