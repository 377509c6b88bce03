"""What a yearly inventory run did, for people and for schedulers: summaries, report, log file.

:class:`InventoryRunResult` is what :func:`~arctic_rts.inventory_run.run_inventory` returns;
:func:`run_report` turns it into the machine-readable report that ``inventory run --report
run.json`` writes (per year and per scene: status, counts, timings, failures), and
:func:`failure_report` the report of a run that stopped with an error. :func:`log_to_file`
copies the ``arctic_rts`` log records of a run into a file with timestamps (``--log``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arctic_rts import __version__
from arctic_rts.errors import ConfigError
from arctic_rts.files import atomic_write

#: Layout version of the run report; bumped when a field changes meaning or goes away.
REPORT_VERSION = 1
#: The run's outcome in the report's ``status``: every scene done; some scenes failed; no
#: scene in any year; the run stopped with an error before its end.
RUN_STATUSES = ("complete", "partial", "nothing_found", "error")


@dataclass
class YearSummary:
    """What an inventory run did for one year."""

    year: int
    n_scenes: int = 0
    #: Scenes computed by this run (including those that failed).
    n_computed: int = 0
    #: Scenes taken from the manifest of an earlier run.
    n_from_manifest: int = 0
    #: Item ids of the scenes computed again because an earlier run recorded them as failed.
    retried: list[str] = field(default_factory=list)
    #: ``(item_id, error)`` of each scene that failed; the next run retries them.
    failed: list[tuple[str, str]] = field(default_factory=list)
    n_polygons: int = 0
    #: True when ``rts_<year>`` was (re)written; False when it already held this result.
    written: bool = False
    #: Counts per class of ``changes_<year-1>_<year>``, when the previous year is present.
    changes: dict[str, int] | None = None
    notes: list[str] = field(default_factory=list)
    #: One row per selected scene (see :func:`scene_row`), in item id order.
    scenes: list[dict[str, Any]] = field(default_factory=list)
    #: Wall-clock seconds this run spent on the year (search, compute, merge, write).
    seconds: float = 0.0


@dataclass
class InventoryRunResult:
    """The outcome of :func:`~arctic_rts.inventory_run.run_inventory`."""

    out: Path
    work_dir: Path
    run_id: str
    years: list[YearSummary]
    exports: list[Path] = field(default_factory=list)
    #: The run computed only the scenes that failed before (``--retry-failed``).
    retry_failed: bool = False

    @property
    def n_retried(self) -> int:
        """Scenes computed again after an earlier run recorded them as failed."""
        return sum(len(y.retried) for y in self.years)

    @property
    def n_failed(self) -> int:
        """Scenes that failed in this run, over all years."""
        return sum(len(y.failed) for y in self.years)

    @property
    def status(self) -> str:
        """``complete``, ``partial`` (scenes failed) or ``nothing_found`` (no scene at all)."""
        if self.years and not any(y.n_scenes for y in self.years):
            return "nothing_found"
        return "partial" if self.n_failed else "complete"

    def summary(self) -> str:
        """One block of lines per year: scenes, slumps, whether the layer changed, changes."""
        lines = [f"inventory : {self.out}", f"work      : {self.work_dir}"]
        for y in self.years:
            state = f"layer rts_{y.year} " + ("written" if y.written else "unchanged")
            if not y.n_scenes:
                state = "nothing written"
            lines.append(
                f"{y.year}      : {y.n_scenes} scenes ({y.n_computed} computed, "
                f"{y.n_from_manifest} from manifest, {len(y.failed)} failed), "
                f"{y.n_polygons} slumps, {state}"
            )
            if y.changes is not None:
                counts = ", ".join(f"{k} {v}" for k, v in y.changes.items())
                lines.append(f"  changes {y.year - 1}->{y.year}: {counts}")
            lines += [f"  note: {n}" for n in y.notes]
            lines += [f"  FAILED {item}: {err}" for item, err in y.failed]
        if self.retry_failed or self.n_retried:
            again = sum(item in y.retried for y in self.years for item, _ in y.failed)
            lines.append(
                f"retried   : {self.n_retried} scenes that failed before "
                f"({self.n_retried - again} now done, {again} failed again)"
            )
        if self.exports:
            lines.append("exports   : " + ", ".join(str(p) for p in self.exports))
        return "\n".join(lines)


def scene_row(record: Any, computed_by: str, run_id: str) -> dict[str, Any]:
    """A scene's row of the report from its :class:`~arctic_rts.pipeline.SceneRecord`.

    ``status`` is ``computed`` (by this run), ``reused`` (from an earlier run's manifest) or
    ``failed``; ``seconds`` is the time the scene took in the run that computed it.
    """
    if record.status == "failed":
        status = "failed"
    else:
        status = "computed" if computed_by == run_id else "reused"
    return {
        "item_id": record.item_id,
        "tile": record.mgrs_tile,
        "datetime": record.datetime,
        "cloud_cover": None if math.isnan(record.cloud_cover) else record.cloud_cover,
        "status": status,
        "error": record.error,
        "n_polygons": record.n_polygons,
        "seconds": round(float(record.seconds), 3),
        "run_id": computed_by,
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _header(
    run_file: Path | str | None, years: tuple[int, ...], started: str, seconds: float
) -> dict[str, Any]:
    return {
        "report_version": REPORT_VERSION,
        "arctic_rts_version": __version__,
        "run_file": None if run_file is None else str(run_file),
        "years_requested": list(years),
        "started": started,
        "finished": _now(),
        "seconds": round(seconds, 3),
    }


def run_report(
    result: InventoryRunResult,
    *,
    run_file: Path | str | None,
    years: tuple[int, ...],
    started: str,
    seconds: float,
) -> dict[str, Any]:
    """The JSON document of a run that reached its end (``status`` in :data:`RUN_STATUSES`).

    ``totals`` sums the years; each year's ``n_polygons`` is the number of rows of its
    ``rts_<year>`` layer when ``written`` or unchanged, and ``scenes`` lists every selected
    scene with its status, polygons and seconds.
    """
    year_docs = []
    for y in result.years:
        doc = dataclasses.asdict(y)
        doc["failed"] = [{"item_id": i, "error": e} for i, e in y.failed]
        doc["n_failed"] = len(y.failed)
        doc["status"] = "no_scenes" if not y.n_scenes else ("partial" if y.failed else "complete")
        year_docs.append(doc)
    totals = {
        key: sum(d[key] for d in year_docs)
        for key in ("n_scenes", "n_computed", "n_from_manifest", "n_failed", "n_polygons")
    }
    totals["n_retried"] = result.n_retried
    return {
        **_header(run_file, years, started, seconds),
        "status": result.status,
        "run_id": result.run_id,
        "out": str(result.out),
        "work_dir": str(result.work_dir),
        "totals": totals,
        "years": year_docs,
        "exports": [str(p) for p in result.exports],
        "error": None,
    }


def failure_report(
    err: BaseException,
    *,
    run_file: Path | str | None,
    years: tuple[int, ...],
    started: str,
    seconds: float,
) -> dict[str, Any]:
    """The JSON document of a run that stopped with ``err`` (``status`` ``error``)."""
    return {
        **_header(run_file, years, started, seconds),
        "status": "error",
        "years": [],
        "error": {"type": type(err).__name__, "message": " ".join(str(err).split())},
    }


def write_report(path: Path, doc: dict[str, Any]) -> Path:
    """Write a report atomically (a scheduler polling the file never reads half of it)."""
    text = json.dumps(doc, indent=1, default=str) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


class Reporting:
    """What :func:`reporting` yields: set ``years`` once known, ``result`` when the run returns."""

    def __init__(self, years: tuple[int, ...]) -> None:
        self.years = years
        self.result: InventoryRunResult | None = None


@contextlib.contextmanager
def reporting(
    path: Path | None, *, run_file: Path | str | None, years: tuple[int, ...] = ()
) -> Iterator[Reporting]:
    """Time a run and write its report to ``path`` (None: no report) when it ends.

    The report is written whether the run returns (:func:`run_report`) or raises, Ctrl-C
    included (:func:`failure_report`, then the exception goes on).
    """
    state = Reporting(years)
    started, t0 = _now(), time.perf_counter()
    try:
        yield state
    except BaseException as err:
        if path is not None:
            write_report(
                path,
                failure_report(
                    err,
                    run_file=run_file,
                    years=state.years,
                    started=started,
                    seconds=time.perf_counter() - t0,
                ),
            )
        raise
    if path is not None and state.result is not None:
        doc = run_report(
            state.result,
            run_file=run_file,
            years=state.years,
            started=started,
            seconds=time.perf_counter() - t0,
        )
        write_report(path, doc)


def check_writable_file(path: Path | None, flag: str) -> None:
    """Refuse, before any work, a ``--report`` / ``--log`` path that cannot be written.

    Raises:
        ConfigError: Its folder does not exist, or it is a folder.
    """
    if path is None:
        return
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; name a file, e.g. {flag} run.json.")
    if not path.parent.is_dir():
        raise ConfigError(f"{flag} {path}: folder {path.parent} does not exist; create it first.")


@contextlib.contextmanager
def log_to_file(path: Path | None, level: int = logging.INFO) -> Iterator[Callable[[str], None]]:
    """Copy the ``arctic_rts`` log records at ``level`` and above into ``path`` (appended).

    Each line has a UTC timestamp, the level and the logger; the file grows run after run, so
    a yearly schedule keeps its history in one place. The loggers' level is lowered to
    ``level`` for the duration when needed; handlers already installed keep their own
    threshold (what they showed before, they show now). Yields a function that writes a text
    (such as the final summary) into the file only; an exception that ends the run is written
    there too, as one line, before it goes on.
    """
    if path is None:
        yield lambda _text: None
        return
    root = logging.getLogger("arctic_rts")
    handler = logging.FileHandler(path, encoding="utf-8")
    formatter = logging.Formatter("%(asctime)sZ %(levelname)s %(name)s: %(message)s")
    formatter.converter = time.gmtime  # type: ignore[method-assign,assignment]
    handler.setFormatter(formatter)
    handler.setLevel(level)
    old_level = root.level
    shown = root.getEffectiveLevel()
    raised = [(h, h.level) for h in root.handlers if h.level < shown]
    for h, _ in raised:
        h.setLevel(shown)
    root.addHandler(handler)
    root.setLevel(min(level, shown))

    def note(text: str, levelno: int = logging.INFO) -> None:
        record = root.makeRecord(root.name, levelno, __file__, 0, text, (), None)
        handler.handle(record)

    try:
        yield note
    except BaseException as err:
        note(f"run stopped: {type(err).__name__}: {' '.join(str(err).split())}", logging.ERROR)
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)
        for h, lvl in raised:
            h.setLevel(lvl)
