"""Model files that ship inside an installed package, checked before they are loaded.

Nothing is fetched at run time: a model is a file of a pinned package, found
without importing the package, and used only if its SHA-256 matches the pin.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pathlib

from agent.errors import BadDataError


def package_models_dir(
    package: str, subdirectory: str, error: type[BadDataError], install_hint: str
) -> pathlib.Path:
    """``<package>/<subdirectory>`` of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise error(install_hint)
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / subdirectory


def checked_file(
    path: pathlib.Path, expected: str, error: type[BadDataError], *, what: str, fix: str
) -> pathlib.Path:
    """``path`` once its SHA-256 is ``expected``; ``error`` (one line) otherwise."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror or exc}") from exc
    if digest.hexdigest() != expected:
        raise error(
            f"{what} {path} has SHA-256 {digest.hexdigest()}, expected {expected}"
            f" ({fix})"
        )
    return path

