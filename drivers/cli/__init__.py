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

Under ``--json`` a failure also prints an error document on stdout
(:mod:`drivers.cli.output`).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import typing
from collections.abc import Callable, Sequence

from agent import __version__
from agent.errors import BadDataError, EdgeAgentError, StateDirError, TransportError
from drivers.cli.output import UsageError

EXIT_OK = 0
EXIT_TRANSPORT = 1
EXIT_BAD_DATA = 2
# Kept equal to RestartPreventExitStatus= in systemd/edge-agent.service (a test checks).
EXIT_STATE_DIR = 73

Handler = Callable[[argparse.Namespace], int]

EPILOG = """\
configuration: --config FILE, else $EDGE_AGENT_CONFIG, else /etc/edge-agent/agent.toml;
the state directory is the configuration's state_dir unless --state-dir or
$STATE_DIRECTORY names another.

--json: every command that prints data takes it (one JSON document; JSON Lines, one
object per event, for long-running commands).  On failure it still prints the one
line on stderr and adds {"ok": false, "error": {"code", "message", "exit_code"}} on
stdout.

exit codes:
  0    success
  1    a peer, device or file failed (trying again may work); a check that failed
  2    bad input: invalid configuration, argument or data
  73   the state directory is unusable (read-only, a file, another user's)
  130  interrupted (Ctrl-C)
"""

def command_modules() -> list[str]:
    package = sys.modules[__name__]
    return sorted(
        info.name for info in pkgutil.iter_modules(package.__path__) if info.name.startswith("cmd_")
    )


class _Parser(argparse.ArgumentParser):
    """argparse, except that a refused command line raises :class:`UsageError`.

    argparse itself prints the usage and exits, so ``--json`` would get nothing on
    stdout; main() prints the line and the error document instead.  Sub-command
    parsers are made of the same class (``add_subparsers`` uses the parent's).
    """

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(self.prog, message)


def _wants_json(arguments: Sequence[str]) -> bool:
    options = arguments[: arguments.index("--")] if "--" in arguments else arguments
    return "--json" in options


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``only`` just that module's commands.

    ``edge-agent run`` takes the narrow path so the long-running process does
    not import every tool's dependencies (OpenCV, zeroconf...) it never uses.
    """
    parser = _Parser(
        prog="edge-agent",
        description="Security camera / NVR edge agent",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the version and exit",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in [only] if only else command_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(subparsers)
    return parser


def _error(line: str) -> None:
    """One line on stderr; with journald's ``<3>`` (error) priority when stderr is the journal."""
    from drivers.logs.setup import stderr_is_journal  # lazy: --help stays light

    print(f"<3>{line}" if stderr_is_journal() else line, file=sys.stderr)


def _fail(error: BaseException, exit_code: int, as_json: bool) -> int:
    """The one stderr line; under ``--json`` also the error document on stdout."""
    interrupted = isinstance(error, KeyboardInterrupt)
    message = "interrupted" if interrupted else str(error)
    if interrupted:
        _error("edge-agent: interrupted")
    elif isinstance(error, UsageError):
        _error(f"{error.prog}: error: {message}")  # argparse's own form
    else:
        _error(f"edge-agent: error: {message}")
    if as_json:
        from drivers.cli.output import dumps, error_document

        # One line: also the last line of a long-running command's JSON Lines.
        print(dumps(error_document(error, message, exit_code)), flush=True)
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    narrow = f"cmd_{arguments[0]}" if arguments else ""
    parser = build_parser(
        narrow if narrow in {"cmd_run", "cmd_config", "cmd_watch"} else None
    )
    try:
        args = parser.parse_args(arguments)
    except UsageError as exc:
        return _fail(exc, EXIT_BAD_DATA, _wants_json(arguments))
    handler: Handler = args.func
    as_json = bool(getattr(args, "json", False))
    try:
        return handler(args)
    except KeyboardInterrupt as exc:
        return _fail(exc, 130, as_json)
    except StateDirError as exc:
        return _fail(exc, EXIT_STATE_DIR, as_json)
    except BadDataError as exc:
        return _fail(exc, EXIT_BAD_DATA, as_json)
    except TransportError as exc:
        return _fail(exc, EXIT_TRANSPORT, as_json)
    except EdgeAgentError as exc:
        return _fail(exc, EXIT_TRANSPORT, as_json)
    except ModuleNotFoundError as exc:
        # A light install (no vision extra) asked for a command that reads images.
        from drivers.cli.common import missing_extra

        missing = missing_extra(exc)
        if missing is None:
            raise
        return _fail(missing, EXIT_TRANSPORT, as_json)
    except OSError as exc:
        # A file or device error no layer wrapped: still one line (it names the file).
        return _fail(exc, EXIT_TRANSPORT, as_json)
