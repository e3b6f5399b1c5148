"""``make bench``: run every ``tests/bench/bench_*.py`` and write one table.

Each module exposes ``run(report: Report) -> None`` and adds rows; a module
that fails is reported as such and the others still run.  The table goes to
stdout and to ``bench-results.md``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import sys
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent.parent / "bench-results.md"


@dataclasses.dataclass
class Row:
    area: str
    metric: str
    value: str
    peer: str = ""
    ratio: str = ""
    goal: str = ""
    verdict: str = ""


class Report:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def row(
        self,
        area: str,
        metric: str,
        value: str,
        *,
        peer: str = "",
        ratio: float | None = None,
        goal: str = "",
        met: bool | None = None,
    ) -> None:
        verdict = "" if met is None else ("met" if met else "NOT met")
        ratio_text = "" if ratio is None else f"{ratio:.3f}x"
        self.rows.append(Row(area, metric, value, peer, ratio_text, goal, verdict))
        print(f"  {area} | {metric} | {value} | {peer} | {ratio_text} | {goal} | {verdict}")
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    wanted = set(argv)
    report = Report()
    failures = 0
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem
        if wanted and name not in wanted and name.removeprefix("bench_") not in wanted:
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"tests.bench.{name}")
            module.run(report)
        except Exception:
            failures += 1
            traceback.print_exc()
            report.row(name, "run", "FAILED (see output)")
        print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)
    lines = [
        "| area | metric | value | peer (same run) | ratio | goal | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.area} | {r.metric} | {r.value} | {r.peer} | {r.ratio} | {r.goal} | {r.verdict} |"
        for r in report.rows
    ]
    table = "\n".join(lines) + "\n"
    OUT.write_text(table)
    print()
    print(table)
    print(f"written to {OUT}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
