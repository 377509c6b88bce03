"""What the benchmark scripts share: the mean ± std cell and the rewrite of their own section of
BENCHMARKS.md (from its ``## `` heading to the next one)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def mean_std(values: list[float]) -> str:
    """``mean ± std`` of the finite values (one value alone; "n/a" for none)."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def rewrite_section(heading: str, lines: list[str], path: Path = BENCHMARKS) -> str:
    """Replace the section that starts at ``heading`` with ``lines`` (append it if absent).

    ``lines`` start with the heading itself. Returns the section's text.
    """
    section = "\n".join(lines).rstrip("\n") + "\n"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    rows = old.splitlines()
    start = next((i for i, r in enumerate(rows) if r.strip() == heading), None)
    if start is None:
        text = old.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(rows)) if rows[i].startswith("## ")), len(rows))
        rest = "\n".join(rows[end:])
        text = "\n".join(rows[:start]) + "\n" + section + ("\n" + rest + "\n" if rest else "")
    path.write_text(text)
    return section
