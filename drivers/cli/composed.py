"""One-shot commands open the agent's state through the same composition root as the daemon."""

from __future__ import annotations

import argparse
import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from drivers.cli.common import load_config

if TYPE_CHECKING:
    from drivers.compose import Composition


@contextlib.contextmanager
def composed(args: argparse.Namespace) -> Iterator[Composition]:
    """The CLI-mode composition for ``--config``/``--state-dir``; closed on exit."""
    # lazy: heavy (every feature's drivers: half a second that --help must not pay)
    from agent.feature import Mode
    from drivers.compose import compose

    composition = compose(load_config(args), Mode.CLI)
    try:
        yield composition
    finally:
        composition.close()


def with_composition(
    handler: Callable[[Composition, argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A sub-command handler that runs inside the CLI-mode composition."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        with composed(args) as composition:
            return handler(composition, args)

    return run
