"""One module owns every path under the state directory (issue: renaming one breaks erasure)."""

from __future__ import annotations

import ast
import pathlib

from agent.layout import StateLayout
from agent.matching.store import MANIFEST

REPO = pathlib.Path(__file__).resolve().parents[2]
LAYOUT = REPO / "agent" / "layout.py"
SOURCES = sorted(p for root in ("agent", "drivers") for p in (REPO / root).rglob("*.py"))


def _layout_paths(layout: StateLayout) -> list[pathlib.Path]:
    paths: list[pathlib.Path] = []
    for name in dir(StateLayout):
        value = getattr(layout, name)
        if isinstance(value, pathlib.Path) and name != "root":
            paths.append(value)
        elif isinstance(value, tuple) and all(isinstance(v, pathlib.Path) for v in value):
            paths.extend(value)
    return paths


def test_every_layout_path_lies_under_the_state_directory() -> None:
    root = pathlib.Path("/state")
    paths = _layout_paths(StateLayout(root))
    assert len(paths) >= 15
    assert all(root in p.parents for p in paths)


def test_no_other_module_builds_a_path_under_the_state_directory() -> None:
    """``state_dir / "x"`` or ``layout.root / "x"`` outside agent/layout.py is a second spelling."""
    offenders = []
    for path in SOURCES:
        if path == LAYOUT:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)):
                continue
            left = node.left
            named = left.attr if isinstance(left, ast.Attribute) else getattr(left, "id", "")
            if named in {"state_dir", "root", "_state_dir"}:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_state_file_names_are_spelled_only_in_the_layout() -> None:
    layout = StateLayout(pathlib.Path("/s"))
    # The gallery names its own index inside its directory (checked against the layout below).
    names = {p.name for p in _layout_paths(layout) if p.suffix} - {layout.faces_manifest.name}
    names.add(layout.discovery_instance_id.name)
    offenders = []
    for path in SOURCES:
        if path == LAYOUT:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in names:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert offenders == []


def test_the_gallery_keeps_its_manifest_where_the_layout_says() -> None:
    assert StateLayout(pathlib.Path("/s")).faces_manifest.name == MANIFEST
