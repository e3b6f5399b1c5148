"""``edge-agent`` command line: the composition root for one-shot commands.

Each ``drivers/cli/cmd_*.py`` module adds its sub-commands through
``register(subparsers)``; the handler it sets with ``set_defaults(func=...)``
receives the parsed arguments and returns the process exit code.  Errors of the
agent's tree become one line on stderr and a non-zero exit code, never a
traceback:

* 1 (``EXIT_TRANSPORT``): a peer, device or file failed; trying again may work.
* 2 (``EXIT_BAD_DATA``): bad input, such as an invalid configuration.
* 73 (``EXIT_STATE_DIR``, ``EX_CANTCREAT`` of sysexits.h): the state directory
  is unusable (a file, read-only, another user's).  Restarting cannot help, so
  ``systemd/edge-agent.service`` lists it in ``RestartPreventExitStatus=``.
* 130: interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Callable, Sequence

from agent import __version__
from agent.errors import BadDataError, EdgeAgentError, StateDirError, TransportError

EXIT_OK = 0
EXIT_TRANSPORT = 1
EXIT_BAD_DATA = 2
# Kept equal to RestartPreventExitStatus= in systemd/edge-agent.service (a test checks).
EXIT_STATE_DIR = 73

Handler = Callable[[argparse.Namespace], int]

def command_modules() -> list[str]:
    package = sys.modules[__name__]
    return sorted(
        info.name for info in pkgutil.iter_modules(package.__path__) if info.name.startswith("cmd_")
    )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``only`` just that module's commands.

    ``edge-agent run`` takes the narrow path so the long-running process does
    not import every tool's dependencies (OpenCV, zeroconf...) it never uses.
    """
    parser = argparse.ArgumentParser(
        prog="edge-agent", description="Security camera / NVR edge agent"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in [only] if only else command_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    narrow = f"cmd_{arguments[0]}" if arguments else ""
    parser = build_parser(narrow if narrow in {"cmd_run", "cmd_config"} else None)
    args = parser.parse_args(arguments)
    handler: Handler = args.func
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("edge-agent: interrupted", file=sys.stderr)
        return 130
    except StateDirError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return EXIT_STATE_DIR
    except BadDataError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA
    except TransportError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return EXIT_TRANSPORT
    except EdgeAgentError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return EXIT_TRANSPORT
    except OSError as exc:
        # A file or device error no layer wrapped: still one line (it names the file).
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return EXIT_TRANSPORT
