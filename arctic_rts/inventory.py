"""The RTS inventory: merge per-scene polygons, write one GeoPackage atomically, compare years.

Layout of the GeoPackage (all layers in ``InventoryConfig.crs``, EPSG:3413 by default):

* ``rts_<year>``: one MultiPolygon layer per year (one slump per row, see :data:`RTS_COLUMNS`).
  A layer per year, rather than one layer with a year field, so that writing a year replaces
  exactly one table and never touches the rows of the others.
* ``changes_<y1>_<y2>``: change between consecutive calendar years, written whenever both
  years are present (see :func:`change_layer` and :data:`CHANGE_COLUMNS`).
* ``scenes``: one row per scene and year (footprint geometry, status, error, counts).
* ``runs``: one attribute row per write (run id, layer, counts, versions, the run's whole
  configuration as JSON).

Writes are atomic: the file is copied to a temporary file in the same folder, the copy is
changed, flushed to disk and renamed over the original with ``os.replace``. A crash at any
point leaves either the old file or the new one, never a half-written one, and the bytes of
other years' tables are copied, not re-encoded. One writer at a time: an exclusive
``fcntl.flock`` on ``<file>.lock``, which the operating system releases when the holding
process dies, so a killed writer never leaves a stale lock (POSIX only; on NFS it needs a
working lock daemon).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import math
import os
import shutil
import socket
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import MultiPolygon, Polygon, shape

from arctic_rts.config import InventoryConfig, VectorizeConfig, validate_year
from arctic_rts.errors import ConfigError, InventoryError, InventoryLockedError
from arctic_rts.files import atomic_path, atomic_write
from arctic_rts.vectorize import measure_polygons, polygonal

#: Columns of an ``rts_<year>`` layer (output of :func:`merge_polygons`), after ``geometry``.
RTS_COLUMNS: tuple[str, ...] = (
    "rts_id",
    "year",
    "area_m2",
    "perimeter_m",
    "mean_prob",
    "max_prob",
    "n_scenes",
    "n_scenes_complete",
    "touches_invalid",
    "scene_ids",
    "scene_mean_probs",
    "mgrs_tiles",
    "dates",
    "model",
    "weights_sha256",
    "run_id",
)

#: Columns of a ``changes_<y1>_<y2>`` layer (output of :func:`change_layer`).
CHANGE_COLUMNS: tuple[str, ...] = (
    "change",
    "year_prev",
    "year_curr",
    "rts_ids_prev",
    "rts_ids_curr",
    "area_prev_m2",
    "area_curr_m2",
    "d_area_m2",
    "rel_change",
    "threshold_m2",
)

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

#: Overlap share (of the smaller polygon) that links two views when either is cut by a cloud or
#: scene edge; above zero only to ignore slivers from reprojecting pixel edges.
CUT_MIN_OVERLAP = 0.01


_RTS_DTYPES = {
    "rts_id": "object",
    "year": "int64",
    "area_m2": "float64",
    "perimeter_m": "float64",
    "mean_prob": "float64",
    "max_prob": "float64",
    "n_scenes": "int64",
    "n_scenes_complete": "int64",
    "touches_invalid": "bool",
}
_CHANGE_DTYPES = {
    "change": "object",
    "year_prev": "int64",
    "year_curr": "int64",
    "area_prev_m2": "float64",
    "area_curr_m2": "float64",
    "d_area_m2": "float64",
    "rel_change": "float64",
    "threshold_m2": "float64",
}
#: Classes of a change layer's ``change`` column, in reporting order.
CHANGE_CLASSES: tuple[str, ...] = ("new", "grown", "shrunk", "stable", "not_detected")


# ---------------------------------------------------------------------------------------------
# Merge


def merge_polygons(
    frames: Iterable[gpd.GeoDataFrame],
    crs: str = InventoryConfig.crs,
    *,
    min_overlap: float = InventoryConfig.min_overlap,
    area_crs: str = VectorizeConfig.area_crs,
) -> gpd.GeoDataFrame:
    """Merge per-scene polygons into one polygon per slump, keeping every scene's evidence.

    Polygons of the same year are one slump when they overlap: intersection area >=
    ``min_overlap`` x the smaller polygon's area (relative to the smaller one, so that a slump
    cut by a tile edge or a cloud in one scene still joins the whole view from another), or any
    overlap (>= :data:`CUT_MIN_OVERLAP`) when one of them is cut (``touches_invalid``). Groups
    are transitive (connected components). Each group becomes one geometry: the union of its
    *complete* views (``touches_invalid`` False) when there is one, else the union of all views.

    Args:
        frames: ``vectorize`` outputs, any CRS each (UTM zones may differ).
        crs: Output CRS (EPSG:3413 by default).
        min_overlap: Share of the smaller polygon that must overlap, in (0, 1].
        area_crs: Equal-area CRS in which ``area_m2`` is recomputed.

    Returns:
        GeoDataFrame in ``crs`` with ``geometry`` and :data:`RTS_COLUMNS`, sorted by ``rts_id``.
        ``rts_id`` is ``RTS<year>_<x>_<y>``: the centroid in EPSG:3413 rounded to 10 m, so a
        rerun on the same input gives the same ids. ``mean_prob`` is the pixel-weighted mean of
        the complete views, ``max_prob`` the maximum of all; ``scene_ids``, ``mgrs_tiles``,
        ``dates``, ``model``, ``weights_sha256`` and ``run_id`` join the distinct values of all
        views with commas; ``scene_mean_probs`` gives each scene's mean probability in the
        order of ``scene_ids``; ``touches_invalid`` is True when no scene saw the slump whole.
    """
    if not 0 < min_overlap <= 1:
        raise ConfigError(f"min_overlap must lie in (0, 1], got {min_overlap}.")
    parts = []
    for i, frame in enumerate(frames):
        if frame.crs is None:
            raise ValueError(f"frame {i} has no CRS; vectorize output always has one.")
        if len(frame):
            parts.append(frame.to_crs(crs))
    if not parts:
        return _empty(crs, RTS_COLUMNS, _RTS_DTYPES)
    allp = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=crs)
    allp["geometry"] = [polygonal(g) for g in allp.geometry]
    allp = allp[~allp.geometry.is_empty].reset_index(drop=True)
    if not len(allp):
        return _empty(crs, RTS_COLUMNS, _RTS_DTYPES)

    years = _column(allp, "year", -1).astype("int64").to_numpy()
    cut = _column(allp, "touches_invalid", False).astype(bool).to_numpy()
    groups = _overlap_groups(np.asarray(allp.geometry.values), years, True, min_overlap, cut)
    rows = [_merge_group(allp.iloc[idx]) for idx in groups]
    geoms = [r.pop("geometry") for r in rows]
    out = gpd.GeoDataFrame(pd.DataFrame(rows), geometry=geoms, crs=crs)
    out["area_m2"], out["perimeter_m"] = measure_polygons(out.geometry, area_crs)
    out["rts_id"] = _rts_ids(out.geometry, out["year"].to_numpy(), out["area_m2"].to_numpy())
    out = out.sort_values("rts_id", kind="stable").reset_index(drop=True)
    return out[["geometry", *RTS_COLUMNS]].astype(_RTS_DTYPES)


def _overlap_groups(
    geoms: np.ndarray,
    keys: np.ndarray,
    same: bool,
    min_overlap: float,
    cut: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Connected components of the 'is the same slump' graph, as arrays of row positions.

    Two rows are linked when their intersection covers ``min_overlap`` of the smaller one and
    their ``keys`` are equal (``same``: merging scenes of one year) or differ (not ``same``:
    matching two years, where rows of one year must not chain through each other). Where
    either row is ``cut`` (touches a cloud or scene edge) any overlap beyond
    :data:`CUT_MIN_OVERLAP` links them: two pieces of one slump cut on opposite sides by two
    scenes may overlap little, yet the ground both call slump is the same slump.
    """
    n = len(geoms)
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    keep = (a < b) & ((keys[a] == keys[b]) if same else (keys[a] != keys[b]))
    a, b = a[keep], b[keep]
    if len(a):
        inter = shapely.area(shapely.intersection(geoms[a], geoms[b]))
        smaller = np.minimum(shapely.area(geoms[a]), shapely.area(geoms[b]))
        need = np.full(len(a), min_overlap)
        if cut is not None:
            need[cut[a] | cut[b]] = min(CUT_MIN_OVERLAP, min_overlap)
        ok = inter >= need * smaller
        a, b = a[ok], b[ok]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    order = np.argsort(label, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(label[order])) + 1)


def _merge_group(views: pd.DataFrame) -> dict[str, Any]:
    """One inventory row from the views (rows of vectorize output) of one slump."""
    touches = _column(views, "touches_invalid", False).astype(bool).to_numpy()
    complete = ~touches
    chosen = views[complete] if complete.any() else views
    weights = _column(chosen, "n_pixels", 1).astype(float).to_numpy()
    probs = _column(chosen, "mean_prob", math.nan).astype(float).to_numpy()
    scene_ids = _column(views, "scene_id", "").astype(str)
    per_scene = (
        pd.DataFrame(
            {
                "scene": scene_ids.to_numpy(),
                "p": _column(views, "mean_prob", math.nan).astype(float).to_numpy(),
                "w": _column(views, "n_pixels", 1).astype(float).to_numpy(),
                "complete": complete,
            }
        )
        .assign(pw=lambda d: d.p * d.w)
        .groupby("scene", sort=True)
        .agg(pw=("pw", "sum"), w=("w", "sum"), complete=("complete", "any"))
    )
    geom = polygonal(shapely.union_all(np.asarray(chosen.geometry.values)))
    return {
        "geometry": geom if isinstance(geom, MultiPolygon) else MultiPolygon([geom]),
        "year": int(_column(views, "year", -1).iloc[0]),
        "mean_prob": float(np.average(probs, weights=weights)) if weights.sum() else math.nan,
        "max_prob": float(_column(views, "max_prob", math.nan).astype(float).max()),
        "n_scenes": len(per_scene),
        "n_scenes_complete": int(per_scene["complete"].sum()),
        "touches_invalid": bool(not complete.any()),
        "scene_ids": ",".join(per_scene.index),
        "scene_mean_probs": ",".join(f"{v:.3f}" for v in per_scene.pw / per_scene.w),
        "mgrs_tiles": _joined(views, "mgrs_tile"),
        "dates": _joined(views, "date"),
        "model": _joined(views, "model"),
        "weights_sha256": _joined(views, "weights_sha256"),
        "run_id": _joined(views, "run_id"),
    }


def _rts_ids(geoms: gpd.GeoSeries, years: np.ndarray, areas: np.ndarray) -> list[str]:
    """Deterministic ids from the EPSG:3413 centroid (10 m) and year; rare clashes get _2, _3."""
    cent = geoms.to_crs("EPSG:3413").centroid
    base = [
        (f"RTS{y}_" if y >= 0 else "RTS_")
        + f"{round(p.x / 10) * 10:+08d}_{round(p.y / 10) * 10:+08d}"
        for p, y in zip(cent, years, strict=True)
    ]
    ids = list(base)
    seen: dict[str, list[int]] = {}
    for i, b in enumerate(base):
        seen.setdefault(b, []).append(i)
    for b, idx in seen.items():
        if len(idx) > 1:
            # Largest first keeps the plain id; the order is fixed by area then position.
            ranked = sorted(idx, key=lambda i: (-areas[i], i))
            for k, i in enumerate(ranked[1:], start=2):
                ids[i] = f"{b}_{k}"
    return ids


# ---------------------------------------------------------------------------------------------
# Change between years


def change_layer(
    prev: gpd.GeoDataFrame,
    curr: gpd.GeoDataFrame,
    *,
    pixel_size: float = 10.0,
    rel_threshold: float = InventoryConfig.change_rel_threshold,
    ring_px: float = InventoryConfig.change_ring_px,
    min_overlap: float = InventoryConfig.min_overlap,
    years: tuple[int, int] | None = None,
) -> gpd.GeoDataFrame:
    """Classify slumps between two years: new, grown, shrunk, stable, not_detected.

    Slumps of the two years are matched by overlap (intersection >= ``min_overlap`` x the
    smaller one); matches are grouped transitively, so two slumps that coalesce, or one that
    splits, form one group. Per group, with ``A`` the summed areas and ``P`` the summed
    perimeters of the previous year: the change is significant when
    ``|A_curr - A_prev| > max(rel_threshold x A_prev, ring_px x pixel_size x P)``, i.e. larger
    than 10% and than a one-pixel ring around the slump by default; then grown or shrunk, else
    stable. Groups with no previous slump are ``new``, with no current one ``not_detected``.

    Args:
        prev: Inventory rows of the earlier year (``merge_polygons`` output).
        curr: Inventory rows of the later year, any CRS (reprojected to ``prev``'s when both
            have rows).
        pixel_size: Pixel edge in metres for the ring (10 m for Sentinel-2).
        rel_threshold: Relative area change threshold.
        ring_px: Ring width in pixels.
        min_overlap: Overlap share that makes two polygons the same slump.
        years: ``(previous, current)`` year for the output columns; by default read from the
            frames' ``year`` column (-1 when a frame is empty).

    Returns:
        One row per group, with :data:`CHANGE_COLUMNS`; the geometry is the union of the
        current polygons (of the previous ones for ``not_detected``), in ``curr``'s CRS
        (``prev``'s when ``curr`` is empty).
    """
    crs = curr.crs if len(curr) or prev.crs is None else prev.crs
    if crs is None:
        raise ValueError("change_layer needs inventory frames with a CRS.")
    prev = prev.to_crs(crs) if prev.crs is not None else prev.set_crs(crs)
    n_prev = len(prev)
    both = gpd.GeoDataFrame(
        pd.concat([prev, curr.to_crs(crs) if len(curr) else curr], ignore_index=True), crs=crs
    )
    if not len(both):
        return _empty(crs, CHANGE_COLUMNS, _CHANGE_DTYPES)
    geoms = np.asarray([polygonal(g) for g in both.geometry], dtype=object)
    side = np.r_[np.zeros(n_prev, dtype=np.int64), np.ones(len(both) - n_prev, dtype=np.int64)]
    area = _area(both)
    perim = _column(both, "perimeter_m", math.nan).astype(float).to_numpy()
    if np.isnan(perim).any():
        perim = measure_polygons(gpd.GeoSeries(geoms, crs=crs), VectorizeConfig.area_crs)[1]
    ids = _column(both, "rts_id", "").astype(str).to_numpy()
    row_years = _column(both, "year", -1).astype("int64").to_numpy()
    if years is not None:
        year_prev, year_curr = (int(y) for y in years)
    else:
        year_prev = int(row_years[:n_prev][0]) if n_prev else -1
        year_curr = int(row_years[n_prev:][0]) if len(both) > n_prev else -1

    groups = _overlap_groups(geoms, side, False, min_overlap)
    rows = []
    for idx in groups:
        p = idx[side[idx] == 0]
        c = idx[side[idx] == 1]
        a_prev = float(area[p].sum())
        a_curr = float(area[c].sum())
        thr = max(rel_threshold * a_prev, ring_px * pixel_size * float(perim[p].sum()))
        d = a_curr - a_prev
        if not len(p):
            change = "new"
        elif not len(c):
            change = "not_detected"
        elif d > thr:
            change = "grown"
        elif d < -thr:
            change = "shrunk"
        else:
            change = "stable"
        rows.append(
            {
                "geometry": polygonal(shapely.union_all(geoms[c if len(c) else p])),
                "change": change,
                "year_prev": year_prev,
                "year_curr": year_curr,
                "rts_ids_prev": ",".join(sorted(ids[p])),
                "rts_ids_curr": ",".join(sorted(ids[c])),
                "area_prev_m2": a_prev,
                "area_curr_m2": a_curr,
                "d_area_m2": d,
                "rel_change": d / a_prev if a_prev else math.nan,
                "threshold_m2": thr if len(p) else math.nan,
            }
        )
    out = gpd.GeoDataFrame(
        pd.DataFrame(rows).drop(columns="geometry"),
        geometry=[
            MultiPolygon([g]) if isinstance(g, Polygon) else g
            for g in (r["geometry"] for r in rows)
        ],
        crs=crs,
    )
    order = np.lexsort((out["rts_ids_prev"], out["rts_ids_curr"]))
    return out.iloc[order].reset_index(drop=True)[["geometry", *CHANGE_COLUMNS]]


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
        polygons: This year's slumps, :func:`merge_polygons` output (any CRS; reprojected to
            ``config.crs``, geometries made valid and MultiPolygon).
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
                    _write_layer(tmp, changes, f"changes_{y1}_{y2}", f"RTS change {y1}-{y2}")
            _replace_year_rows(tmp, "scenes", scene_frame, year, layers)
            _replace_year_rows(
                tmp, "runs", _run_row(run, year, layer, rts, scene_frame), None, layers
            )
            _before_replace(tmp, path)
    return path


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
# Exports


def export_geoparquet(
    path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
) -> Path:
    """Write every year's slumps (one table with the ``year`` column) as GeoParquet.

    Args:
        path: The inventory GeoPackage.
        out: Output file; by default beside the GeoPackage with the suffix ``.parquet``.
    """
    path = Path(path)
    target = Path(out) if out is not None else path.with_suffix(".parquet")
    frame = read_inventory(path)
    return atomic_write(target, lambda tmp: frame.to_parquet(tmp, index=False))


def summary_csv(
    path: str | os.PathLike[str],
    regions: gpd.GeoDataFrame | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    name_column: str = "name",
) -> Path:
    """Write a per-region, per-year summary CSV beside the GeoPackage.

    Each slump counts for the region that contains its representative point. Columns: region,
    year, n_slumps, total_area_m2, mean_area_m2, median_area_m2, max_area_m2, and the counts
    of each change class towards that year (``n_new``, ``n_grown``, ``n_shrunk``, ``n_stable``,
    ``n_not_detected``; empty when the previous year is absent).

    Args:
        path: The inventory GeoPackage.
        regions: Region polygons with a ``name_column``; None summarises everything as "all".
        out: Output file; by default ``<gpkg stem>_summary.csv`` beside the GeoPackage.
        name_column: Column of ``regions`` holding region names.
    """
    path = Path(path)
    target = Path(out) if out is not None else path.with_name(f"{path.stem}_summary.csv")
    if regions is not None and name_column not in regions.columns:
        raise ConfigError(f"regions need a {name_column!r} column naming each region.")
    layers = _layers(path)
    rows = []
    for y in inventory_years(path):
        frames = {"rts": _read_layer(path, f"rts_{y}")}
        if f"changes_{y - 1}_{y}" in layers:
            frames["chg"] = _read_layer(path, f"changes_{y - 1}_{y}")
        assigned = {k: _assign_regions(v, regions, name_column) for k, v in frames.items()}
        names = ["all"] if regions is None else [str(n) for n in regions[name_column]]
        for name in names:
            sub = assigned["rts"][assigned["rts"]["region"] == name]
            area = sub["area_m2"].astype(float)
            row: dict[str, Any] = {
                "region": name,
                "year": y,
                "n_slumps": len(sub),
                "total_area_m2": float(area.sum()),
                "mean_area_m2": float(area.mean()) if len(sub) else math.nan,
                "median_area_m2": float(area.median()) if len(sub) else math.nan,
                "max_area_m2": float(area.max()) if len(sub) else math.nan,
            }
            chg = assigned.get("chg")
            for cls in CHANGE_CLASSES:
                row[f"n_{cls}"] = (
                    int((chg[chg["region"] == name]["change"] == cls).sum())
                    if chg is not None
                    else None
                )
            rows.append(row)
    table = pd.DataFrame(
        rows,
        columns=[
            "region",
            "year",
            "n_slumps",
            "total_area_m2",
            "mean_area_m2",
            "median_area_m2",
            "max_area_m2",
            *(f"n_{c}" for c in CHANGE_CLASSES),
        ],
    )
    for cls in CHANGE_CLASSES:  # whole numbers, empty where there is no previous year
        table[f"n_{cls}"] = table[f"n_{cls}"].astype("Int64")
    return atomic_write(target, lambda tmp: table.to_csv(tmp, index=False))


def _assign_regions(
    frame: gpd.GeoDataFrame, regions: gpd.GeoDataFrame | None, name_column: str
) -> pd.DataFrame:
    out = pd.DataFrame(frame.drop(columns="geometry"))
    if regions is None:
        out["region"] = "all"
        return out
    pts = gpd.GeoDataFrame(geometry=frame.geometry.representative_point(), crs=frame.crs)
    pts = pts.to_crs(regions.crs) if regions.crs is not None else pts
    joined = gpd.sjoin(pts, regions[[name_column, "geometry"]], how="left", predicate="within")
    # A point inside two overlapping regions counts for the first one only.
    first = joined[~joined.index.duplicated(keep="first")]
    out["region"] = (
        first[name_column].astype(object).where(first[name_column].notna(), None).to_numpy()
    )
    out["region"] = out["region"].map(lambda v: None if v is None else str(v))
    return out


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
    so it can never be stale. Re-entrant within one process (the pipeline may hold it around a
    whole run while ``write_inventory`` takes it again). Stale temporary files of a killed
    writer are removed once the lock is held.

    Raises:
        InventoryLockedError: Another process holds the lock.
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
    key.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise InventoryLockedError(
                f"{key} is being written by {holder}; wait until that run ends (the lock frees "
                "itself when its process exits) or write to another file."
            ) from None
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
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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
    cols = [c for c in RTS_COLUMNS if c in frame.columns]
    extra = [c for c in frame.columns if c not in cols and c != "geometry"]
    return gpd.GeoDataFrame(frame[["geometry", *cols, *extra]], crs=crs).reset_index(drop=True)


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


def _column(frame: pd.DataFrame, name: str, default: Any) -> pd.Series:
    if name in frame.columns:
        col = frame[name]
        return col.where(col.notna(), default) if default is not None else col
    return pd.Series([default] * len(frame), index=frame.index)


def _joined(frame: pd.DataFrame, name: str) -> str:
    if name not in frame.columns:
        return ""
    return ",".join(sorted({str(v) for v in frame[name] if v is not None and v == v}))


def _area(frame: gpd.GeoDataFrame) -> np.ndarray:
    if "area_m2" in frame.columns and frame["area_m2"].notna().all():
        return frame["area_m2"].astype(float).to_numpy()
    return measure_polygons(frame.geometry, VectorizeConfig.area_crs)[0]


def _empty(crs: str, columns: Sequence[str], dtypes: Mapping[str, str]) -> gpd.GeoDataFrame:
    data = {c: pd.Series([], dtype=dtypes.get(c, "object")) for c in columns}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs), crs=crs)[
        ["geometry", *columns]
    ]
