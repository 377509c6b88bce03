"""Change between two years of the inventory: new, grown, shrunk, stable, not_detected.

:func:`change_layer` classifies the slumps of consecutive years; the inventory writer stores
its output as the ``changes_<y1>_<y2>`` layers of the GeoPackage (:mod:`arctic_rts.inventory`).
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import MultiPolygon, Polygon

from arctic_rts.config import InventoryConfig, VectorizeConfig
from arctic_rts.merge import _column, _empty, overlap_groups
from arctic_rts.vectorize import measure_polygons, polygonal

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

    groups = overlap_groups(geoms, side, False, min_overlap)
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


def _area(frame: gpd.GeoDataFrame) -> np.ndarray:
    if "area_m2" in frame.columns and frame["area_m2"].notna().all():
        return frame["area_m2"].astype(float).to_numpy()
    return measure_polygons(frame.geometry, VectorizeConfig.area_crs)[0]
