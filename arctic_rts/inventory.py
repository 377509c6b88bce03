"""The RTS inventory GeoPackage: write one year atomically and under a lock, read it back.

The slumps it stores come from :func:`arctic_rts.merge.merge_polygons`; the change layers from
:func:`arctic_rts.changes.change_layer`; files derived from it (GeoParquet, summary CSV) are
written by :mod:`arctic_rts.exports`.

Layout of the GeoPackage (all layers in ``InventoryConfig.crs``, EPSG:3413 by default):

* ``rts_<year>``: one MultiPolygon layer per year (one slump per row, see
  :data:`arctic_rts.merge.RTS_COLUMNS`, plus ``date_first`` and ``date_last``: DATE fields,
  the first and last date a scene saw the slump). A layer per year, rather than one layer
  with a year field, so that writing a year replaces exactly one table and never touches the
  rows of the others.
* ``changes_<y1>_<y2>``: change between consecutive calendar years, written whenever both
  years are present (see :mod:`arctic_rts.changes`), with DATE fields ``date_prev`` and
  ``date_curr`` (the span between the two observations).
* ``layer_styles``: QGIS's table of styles; the year and change layers' default styles
  (:mod:`arctic_rts.gis`), so QGIS draws them styled and time-aware on open.
* ``scenes``: one row per scene and year (footprint geometry, status, error, counts).
* ``runs``: one attribute row per write (run id, layer, counts, versions, the run's whole
  configuration as JSON).

Writes are atomic: the file is copied to a temporary file in the same folder, the copy is
changed, flushed to disk and renamed over the original with ``os.replace``. A crash at any
point leaves either the old file or the new one, never a half-written one, and the bytes of
other years' tables are copied, not re-encoded. One writer at a time: an exclusive
``fcntl.flock`` on ``<file>.lock``, which the operating system releases when the holding
process dies, so a killed writer never leaves a stale lock (POSIX only; on NFS it needs a
working lock daemon); the file is removed when the lock is let go. A write that fails for
lack of space or permission is a :class:`~arctic_rts.errors.StorageError` and leaves the
previous file as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.metadata
import json
import logging
import os
import shutil
import socket
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape

from arctic_rts.changes import CHANGE_CLASSES, change_layer
from arctic_rts.config import InventoryConfig, validate_year
from arctic_rts.errors import ConfigError, InventoryError, InventoryLockedError, StorageError
from arctic_rts.files import atomic_path, temporary_sibling
from arctic_rts.gis import write_styles
from arctic_rts.merge import _RTS_DTYPES, RTS_COLUMNS, _empty
from arctic_rts.vectorize import polygonal

logger = logging.getLogger(__name__)

#: Fixed columns of the ``scenes`` table; any other key of a scene goes into ``extra`` (JSON).
SCENE_COLUMNS: tuple[str, ...] = (
    "scene_id",
    "year",
    "run_id",
    "mgrs_tile",
    "datetime",
    "epsg",
    "cloud_cover",
    "status",
    "error",
    "n_polygons",
    "seconds",
    "extra",
)

#: DATE fields each ``rts_<year>`` layer carries after :data:`~arctic_rts.merge.RTS_COLUMNS`:
#: the first and last date a scene saw the slump (from its ``dates``).
DATE_COLUMNS: tuple[str, ...] = ("date_first", "date_last")

#: Columns of the ``runs`` table.
RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "year",
    "layer",
    "written_at",
    "n_polygons",
    "n_scenes",
    "arctic_rts_version",
    "versions",
    "stac_url",
    "info",
)


# ---------------------------------------------------------------------------------------------
# GeoPackage


def write_inventory(
    path: str | os.PathLike[str],
    polygons: gpd.GeoDataFrame,
    *,
    year: int,
    run: Mapping[str, Any],
    scenes: gpd.GeoDataFrame | Sequence[Mapping[str, Any]],
    overwrite: bool = False,
    config: InventoryConfig = InventoryConfig(),  # noqa: B008 - frozen, so sharing is safe
    pixel_size: float = 10.0,
) -> Path:
    """Write one year of the inventory into the GeoPackage, atomically and under a lock.

    Creates the file when absent; otherwise adds (or with ``overwrite`` replaces) the layer
    ``rts_<year>``, refreshes ``changes_<year-1>_<year>`` / ``changes_<year>_<year+1>`` when
    the neighbouring year is present, replaces this year's rows of ``scenes`` and appends one
    row to ``runs``. Other years' layers are left as they are.

    Args:
        path: The GeoPackage (``.gpkg``).
        polygons: This year's slumps, :func:`~arctic_rts.merge.merge_polygons` output (any
            CRS; reprojected to ``config.crs``, geometries made valid and MultiPolygon).
        year: The year the polygons describe.
        run: Provenance of the run: at least ``run_id``; ``stac_url``, configuration,
            versions, query, items, timings, counts are kept whole as JSON in ``runs.info``.
        scenes: One entry per scene: a GeoDataFrame, or dicts with :data:`SCENE_COLUMNS` keys
            (``item_id`` is taken for ``scene_id``) and an optional ``geometry`` footprint
            (shapely or GeoJSON, EPSG:4326).
        overwrite: Replace the year's layer when it exists.
        config: CRS, overlap and change thresholds.
        pixel_size: Pixel edge in metres, for the change layer's ring.

    Returns:
        The path written.

    Raises:
        InventoryError: The year exists and ``overwrite`` is False, or the input lacks the
            inventory columns.
        InventoryLockedError: Another live process is writing the same file.
    """
    path = Path(path)
    year = validate_year(year)
    missing = [c for c in ("rts_id",) if c not in polygons.columns]
    if missing:
        raise InventoryError(
            f"polygons lack the inventory columns {missing}; pass the output of merge_polygons."
        )
    layer = f"rts_{year}"
    rts = _prepare_rts(polygons, year, config.crs)
    scene_frame = _prepare_scenes(scenes, year, str(run.get("run_id", "")), config.crs)

    with lock_inventory(path):
        layers = _layers(path)
        if layer in layers and not overwrite:
            raise InventoryError(
                f"{path} already holds year {year} (layer {layer}); use --overwrite "
                "(overwrite=True) to replace it."
            )
        stage = {"scene": "", "stage": "write", "total": 1}
        logger.info(
            "write: %s, %d slumps, into %s", layer, len(rts), path, extra={**stage, "done": 0}
        )
        try:
            _write_year_file(path, rts, layer, year, layers, scene_frame, run, config, pixel_size)
        except Exception as err:  # GDAL's and SQLite's errors are not OSErrors
            if isinstance(err, OSError) or _is_full(err):
                raise storage_error(path, err) from err
            raise
        logger.info("write: %s done", layer, extra={**stage, "done": 1})
    return path


def _write_year_file(
    path: Path,
    rts: gpd.GeoDataFrame,
    layer: str,
    year: int,
    layers: list[str],
    scene_frame: gpd.GeoDataFrame,
    run: Mapping[str, Any],
    config: InventoryConfig,
    pixel_size: float,
) -> None:
    """The body of :func:`write_inventory`, run under its lock."""
    # Same folder (os.replace is atomic only within a file system), same suffix (GDAL
    # warns about a GeoPackage without the .gpkg extension).
    with atomic_path(path, suffix=path.suffix) as tmp:
        if path.exists():
            shutil.copy2(path, tmp)
        _write_layer(tmp, rts, layer, f"Retrogressive thaw slumps {year} (arctic-rts)")
        for y1, y2 in ((year - 1, year), (year, year + 1)):
            other = y1 if y2 == year else y2
            if f"rts_{other}" in layers:
                prev = rts if y1 == year else _read_layer(tmp, f"rts_{y1}")
                curr = rts if y2 == year else _read_layer(tmp, f"rts_{y2}")
                changes = change_layer(
                    prev,
                    curr,
                    pixel_size=pixel_size,
                    rel_threshold=config.change_rel_threshold,
                    ring_px=config.change_ring_px,
                    min_overlap=config.min_overlap,
                    years=(y1, y2),
                )
                changes = _with_change_dates(changes, prev, curr)
                _write_layer(tmp, changes, f"changes_{y1}_{y2}", f"RTS change {y1}-{y2}")
        _replace_year_rows(tmp, "scenes", scene_frame, year, layers)
        _replace_year_rows(tmp, "runs", _run_row(run, year, layer, rts, scene_frame), None, layers)
        write_styles(tmp)
        _before_replace(tmp, path)


def read_inventory(path: str | os.PathLike[str], year: int | None = None) -> gpd.GeoDataFrame:
    """Read one year (``rts_<year>``) or every year of an inventory GeoPackage.

    Raises:
        InventoryError: The file or the year is absent.
    """
    path = Path(path)
    layers = _layers(path)
    if not path.exists():
        raise InventoryError(f"{path} does not exist; write it with write_inventory first.")
    years = inventory_years(path)
    if year is not None:
        if f"rts_{year}" not in layers:
            raise InventoryError(f"{path} holds no year {year}; it holds {years or 'no year'}.")
        return _read_layer(path, f"rts_{year}")
    if not years:
        return _empty(InventoryConfig.crs, RTS_COLUMNS, _RTS_DTYPES)
    frames = [_read_layer(path, f"rts_{y}") for y in years]
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=frames[0].crs)


def inventory_years(path: str | os.PathLike[str]) -> list[int]:
    """The years present in an inventory GeoPackage, ascending (empty when there is no file)."""
    return sorted(
        int(name[4:])
        for name in _layers(Path(path))
        if name.startswith("rts_") and name[4:].isdigit()
    )


def last_write_info(path: str | os.PathLike[str], year: int) -> dict[str, Any] | None:
    """The ``runs.info`` of the last write of ``rts_<year>``; None when that year is absent.

    A year written by a version that kept no ``runs`` row for it gives an empty dict.
    """
    path = Path(path)
    layers = _layers(path)
    if f"rts_{year}" not in layers:
        return None
    if "runs" not in layers:
        return {}
    runs = pyogrio.read_dataframe(path, layer="runs", read_geometry=False)
    rows = runs[runs["layer"] == f"rts_{year}"]
    if not len(rows):
        return {}
    info = json.loads(rows.iloc[-1]["info"] or "{}")
    return dict(info) if isinstance(info, dict) else {}


def change_counts(path: str | os.PathLike[str], year: int) -> dict[str, int] | None:
    """Rows per class of ``changes_<year-1>_<year>`` (None when that layer is absent)."""
    path = Path(path)
    layer = f"changes_{year - 1}_{year}"
    if layer not in _layers(path):
        return None
    frame = pyogrio.read_dataframe(path, layer=layer, read_geometry=False)
    return {c: int((frame["change"] == c).sum()) for c in CHANGE_CLASSES}


# ---------------------------------------------------------------------------------------------
# Lock


#: Locks this process holds: path -> (owning thread id, depth).
_HELD: dict[Path, tuple[int, int]] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def lock_inventory(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the exclusive write lock of an inventory for the duration of a ``with`` block.

    The lock is ``fcntl.flock`` on ``<file>.lock`` (holding the holder's pid, host and start
    time for the error message). The kernel drops it when the process exits, however it dies,
    so it can never be stale; the holder removes the file when it lets go, so none is left
    beside the output (a killed holder leaves it, unlocked). Re-entrant within one process (the
    pipeline holds it around a whole run while ``write_inventory`` takes it again). Stale
    temporary files of a killed writer are removed once the lock is held.

    Raises:
        InventoryLockedError: Another process holds the lock.
        InventoryError: The folder cannot take the lock file (see :func:`check_writable`).
    """
    key = Path(path).resolve()
    me = threading.get_ident()
    with _HELD_GUARD:
        owner, depth = _HELD.get(key, (None, 0))
        if owner is not None and owner != me:
            raise InventoryLockedError(
                f"{key} is being written by another thread of this process; wait for it."
            )
        if owner == me:
            _HELD[key] = (me, depth + 1)
    if owner == me:
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD[key] = (me, depth)
        return

    lock_path = key.with_name(key.name + ".lock")
    with contextlib.suppress(OSError):  # check_writable says what is wrong with the folder
        key.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(key, lock_path)
    try:
        info = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}, sort_keys=True
        ).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        for stale in key.parent.glob(f".{key.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        with _HELD_GUARD:
            _HELD[key] = (me, 1)
        try:
            yield
        finally:
            with _HELD_GUARD:
                del _HELD[key]
            # Removed while still held, so no .lock file is left beside the output; a process
            # that opened it just before finds it unlinked (see _open_locked) and starts over.
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open_locked(key: Path, lock_path: Path) -> int:
    """Open ``lock_path`` and take its exclusive lock; the descriptor of the locked file.

    A holder unlinks the file before it lets go, so a lock taken on a file that is no longer
    the one at ``lock_path`` is worthless: it is dropped and taken again on the new file.

    Raises:
        InventoryLockedError: Another process holds the lock.
        InventoryError: The folder cannot be written.
    """
    check_writable(key)
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise storage_error(key, err) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise InventoryLockedError(
                f"{key} is being written by {holder}; wait until that run ends (the lock frees "
                "itself when its process exits) or write to another file."
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an output that cannot be written; the path as given.

    The folder must exist, be a folder and take a new file (a probe file is created and
    removed, which catches read-only mounts that permission bits do not show); an existing
    output must be a writable file.

    Raises:
        ConfigError: The folder does not exist.
        InventoryError: The folder is a file, is read-only, or the output is not a writable
            file.
    """
    path = Path(path)
    folder = path.parent
    if not folder.exists():
        raise ConfigError(f"output folder {folder} does not exist; create it first.")
    if not folder.is_dir():
        raise InventoryError(f"the output folder {folder} is a file, not a folder; choose --out.")
    if path.is_dir():
        raise InventoryError(f"{path} is a folder; give --out a GeoPackage file name.")
    if path.exists() and not os.access(path, os.W_OK):
        raise InventoryError(f"{path} is read-only; make it writable or choose another --out.")
    probe = temporary_sibling(path, ".probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        raise storage_error(path, err) from err
    probe.unlink(missing_ok=True)
    return path


#: Errors of a full disk, a full quota, or a file-size limit (``ulimit -f``).
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _is_full(err: BaseException) -> bool:
    text = str(err)
    return getattr(err, "errno", None) in _FULL or any(
        words in text for words in ("No space left", "File too large", "disk is full")
    )


def storage_error(path: Path, err: BaseException) -> InventoryError:
    """One clear line for a failed write of ``path``: folder read-only, disk full, or else."""
    code = getattr(err, "errno", None)
    text = " ".join(str(err).split())
    if _is_full(err):
        return StorageError(
            f"no space left to write {path} ({text}); the previous file is unchanged. Free "
            "space (or raise the quota) and rerun."
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(
            f"cannot write in {path.parent} ({os.strerror(code)}); choose a writable --out folder."
        )
    return StorageError(f"cannot write {path}: {text}")


# ---------------------------------------------------------------------------------------------
# Helpers


def _prepare_rts(polygons: gpd.GeoDataFrame, year: int, crs: str) -> gpd.GeoDataFrame:
    if polygons.crs is None:
        raise InventoryError("polygons have no CRS; pass the output of merge_polygons.")
    frame = polygons.to_crs(crs) if len(polygons) else polygons.set_crs(crs, allow_override=True)
    frame = frame.copy()
    geoms = [polygonal(g) for g in frame.geometry]
    frame["geometry"] = [MultiPolygon([g]) if isinstance(g, Polygon) else g for g in geoms]
    frame = frame[~frame.geometry.is_empty]
    # -1 is merge_polygons' "year unknown" (vectorize got no year attribute).
    if "year" in frame.columns and len(frame) and (~frame["year"].isin([year, -1])).any():
        raise InventoryError(
            f"polygons carry years {sorted(set(frame['year']))} but are written as year {year}; "
            "merge each year separately."
        )
    frame["year"] = year
    first, last = _date_bounds(frame["dates"] if "dates" in frame.columns else None, len(frame))
    frame[DATE_COLUMNS[0]], frame[DATE_COLUMNS[1]] = _date_array(first), _date_array(last)
    cols = [c for c in (*RTS_COLUMNS, *DATE_COLUMNS) if c in frame.columns]
    extra = [c for c in frame.columns if c not in cols and c != "geometry"]
    return gpd.GeoDataFrame(frame[["geometry", *cols, *extra]], crs=crs).reset_index(drop=True)


def _date_bounds(dates: pd.Series | None, n: int) -> tuple[list[Any], list[Any]]:
    """First and last date (``datetime.date``, None where unknown) of comma-joined ISO
    ``dates`` (the merge's ``dates`` column), row by row."""
    if dates is None:
        return [None] * n, [None] * n
    parsed = [
        sorted(date.fromisoformat(d[:10]) for d in str(text).split(",") if d.strip())
        if isinstance(text, str)
        else []
        for text in dates
    ]
    return [p[0] if p else None for p in parsed], [p[-1] if p else None for p in parsed]


def _date_array(values: list[Any]) -> Any:
    """A column of dates that the GeoPackage gets as a DATE field, even empty or all None."""
    import pyarrow as pa

    return pd.array(values, dtype=pd.ArrowDtype(pa.date32()))


def _with_change_dates(
    changes: gpd.GeoDataFrame, prev: gpd.GeoDataFrame, curr: gpd.GeoDataFrame
) -> gpd.GeoDataFrame:
    """``date_prev`` (the last date its earlier slumps were seen) and ``date_curr`` (the first
    date its later ones were) on each row of a change layer, as dates: the span QGIS's
    temporal controller shows it for (None on the side with no slump: new, not_detected)."""

    def by_id(frame: gpd.GeoDataFrame, pick: int) -> dict[str, Any]:
        bounds = _date_bounds(frame["dates"] if "dates" in frame.columns else None, len(frame))
        return dict(zip(frame["rts_id"], bounds[pick], strict=True))

    last, first = by_id(prev, 1), by_id(curr, 0)

    def pick(ids: Any, known: dict[str, Any], choose: Any) -> Any:
        found = [known[i] for i in str(ids or "").split(",") if known.get(i) is not None]
        return choose(found) if found else None

    changes = changes.copy()
    changes["date_prev"] = _date_array([pick(i, last, max) for i in changes["rts_ids_prev"]])
    changes["date_curr"] = _date_array([pick(i, first, min) for i in changes["rts_ids_curr"]])
    return changes


def _prepare_scenes(
    scenes: gpd.GeoDataFrame | Sequence[Mapping[str, Any]], year: int, run_id: str, crs: str
) -> gpd.GeoDataFrame:
    if isinstance(scenes, gpd.GeoDataFrame):
        src_crs = scenes.crs or "EPSG:4326"
        records = [dict(r) for r in scenes.drop(columns=scenes.geometry.name).to_dict("records")]
        geoms = list(scenes.geometry)
    else:
        src_crs = "EPSG:4326"
        records = [dict(s) for s in scenes]
        geoms = [_as_geometry(r.pop("geometry", None)) for r in records]
    rows = []
    for rec in records:
        row = {c: rec.pop(c, None) for c in SCENE_COLUMNS if c != "extra"}
        if row["scene_id"] is None:  # STAC's name for it, as the pipeline's records use
            row["scene_id"] = rec.pop("item_id", None)
        row["year"] = year if row["year"] is None else int(row["year"])
        row["run_id"] = run_id if row["run_id"] is None else str(row["run_id"])
        row["extra"] = json.dumps(rec, default=str, sort_keys=True) if rec else None
        rows.append(row)
    geo = gpd.GeoSeries([polygonal(g) if g is not None else None for g in geoms], crs=src_crs)
    frame = gpd.GeoDataFrame(
        pd.DataFrame(rows, columns=list(SCENE_COLUMNS)), geometry=geo.values, crs=src_crs
    )
    frame = frame.to_crs(crs)
    for col in ("scene_id", "run_id", "mgrs_tile", "datetime", "status", "error", "extra"):
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
        frame[col] = frame[col].map(lambda v: None if v is None else str(v))
    for col in ("epsg", "n_polygons"):
        frame[col] = pd.array(frame[col], dtype="Int64")
    for col in ("cloud_cover", "seconds"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame["year"] = frame["year"].astype("int64")
    return frame[["geometry", *SCENE_COLUMNS]]


def _as_geometry(value: Any) -> Any:
    if value is None or isinstance(value, shapely.Geometry):
        return value
    if isinstance(value, Mapping):
        return shape(value)
    raise ValueError(
        f"a scene footprint must be a shapely geometry or GeoJSON dict, got {type(value).__name__}."
    )


def _run_row(
    run: Mapping[str, Any], year: int, layer: str, rts: gpd.GeoDataFrame, scenes: gpd.GeoDataFrame
) -> pd.DataFrame:
    from arctic_rts import __version__

    return pd.DataFrame(
        [
            {
                "run_id": str(run.get("run_id", "")),
                "year": year,
                "layer": layer,
                "written_at": _now(),
                "n_polygons": len(rts),
                "n_scenes": len(scenes),
                "arctic_rts_version": __version__,
                "versions": json.dumps(_versions(), sort_keys=True),
                "stac_url": str(run.get("stac_url", "")) or None,
                "info": json.dumps(dict(run), default=str, sort_keys=True),
            }
        ],
        columns=list(RUN_COLUMNS),
    )


#: Distributions whose versions every ``runs`` row records (read from metadata, not imported).
_VERSIONED = (
    "torch",
    "numpy",
    "xarray",
    "dask",
    "rasterio",
    "stackstac",
    "pystac-client",
    "geopandas",
    "shapely",
    "pyogrio",
    "pyproj",
)


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {
        "python": sys.version.split()[0],
        "gdal": pyogrio.__gdal_version_string__,
    }
    for dist in _VERSIONED:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    return found


def _replace_year_rows(
    target: Path, layer: str, new: pd.DataFrame, year: int | None, layers: list[str]
) -> None:
    """Rewrite a small table: its old rows (minus this year's when ``year``) plus ``new``."""
    if layer in layers:
        old = pyogrio.read_dataframe(target, layer=layer)
        if year is not None:
            old = old[old["year"] != year]
        frames = [f for f in (old, new) if len(f)]
        merged = pd.concat(frames, ignore_index=True) if frames else new
    else:
        merged = new
    if isinstance(new, gpd.GeoDataFrame):
        merged = gpd.GeoDataFrame(merged, geometry="geometry", crs=new.crs)
        _write_layer(target, merged, layer, "Scenes used by arctic-rts runs")
    else:
        pyogrio.write_dataframe(merged, target, layer=layer, driver="GPKG")


def _write_layer(target: Path, frame: gpd.GeoDataFrame, layer: str, description: str) -> None:
    pyogrio.write_dataframe(
        frame,
        target,
        layer=layer,
        driver="GPKG",
        geometry_type="MultiPolygon",
        promote_to_multi=True,
        layer_options={"SPATIAL_INDEX": "YES", "DESCRIPTION": description},
        # Arrow carries columns of datetime.date as GeoPackage DATE fields (QGIS's temporal
        # controller reads them); without it they would be written as text.
        use_arrow=True,
        # GeoPackage 1.2 rather than GDAL 3.10's default 1.4: GDAL <= 3.6 (older QGIS) warn
        # that 1.4 "may only be partially supported"; the inventory needs nothing newer.
        dataset_options=None if target.exists() else {"VERSION": "1.2"},
    )


def _read_layer(path: Path, layer: str) -> gpd.GeoDataFrame:
    frame = pyogrio.read_dataframe(path, layer=layer)
    if "touches_invalid" in frame.columns:
        frame["touches_invalid"] = frame["touches_invalid"].astype(bool)
    return frame


def _layers(path: Path) -> list[str]:
    if not path.exists():
        return []
    try:
        return [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio raises its own DataSourceError for unreadable files
        raise InventoryError(f"{path} is not a readable GeoPackage ({exc}); move it away.") from exc


def _before_replace(tmp: Path, path: Path) -> None:
    """Called inside a write once ``tmp`` holds the complete new file, before it replaces ``path``.

    Does nothing. It is the seam where tests stop a writer (monkeypatched in-process, or by a
    wrapper script in a subprocess) to kill it inside the write deterministically.
    """


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
