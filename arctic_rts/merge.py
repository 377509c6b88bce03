"""Merge per-scene polygons into one polygon per slump, and the same-slump matching it shares.

Polygons of one year that overlap enough are views of one slump (see :func:`merge_polygons`);
the same overlap graph (:func:`overlap_groups`) matches the slumps of two years in
:mod:`arctic_rts.changes`. The inventory GeoPackage that stores the result is
:mod:`arctic_rts.inventory`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import MultiPolygon

from arctic_rts.config import InventoryConfig, VectorizeConfig
from arctic_rts.errors import ConfigError
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


def merge_polygons(
    frames: Iterable[gpd.GeoDataFrame],
    crs: str = InventoryConfig.crs,
    *,
    min_overlap: float = InventoryConfig.min_overlap,
    area_crs: str = VectorizeConfig.area_crs,
    drop_cut: bool = InventoryConfig.drop_cut,
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
        drop_cut: Drop the slumps that no scene saw whole (``touches_invalid`` after merging).

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
    label = overlap_labels(np.asarray(allp.geometry.values), years, True, min_overlap, cut)
    out = _merge_views(allp, label, crs)
    out["area_m2"], out["perimeter_m"] = measure_polygons(out.geometry, area_crs)
    out["rts_id"] = _rts_ids(out.geometry, out["year"].to_numpy(), out["area_m2"].to_numpy())
    if drop_cut:
        out = out[~out["touches_invalid"].astype(bool)]
    out = out.sort_values("rts_id", kind="stable").reset_index(drop=True)
    return out[["geometry", *RTS_COLUMNS]].astype(_RTS_DTYPES)


def overlap_groups(
    geoms: np.ndarray,
    keys: np.ndarray,
    same: bool,
    min_overlap: float,
    cut: np.ndarray | None = None,
) -> list[np.ndarray]:
    """:func:`overlap_labels` as one array of row positions per component, in label order."""
    label = overlap_labels(geoms, keys, same, min_overlap, cut)
    order = np.argsort(label, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(label[order])) + 1)


def overlap_labels(
    geoms: np.ndarray,
    keys: np.ndarray,
    same: bool,
    min_overlap: float,
    cut: np.ndarray | None = None,
) -> np.ndarray:
    """Connected components of the 'is the same slump' graph: a component label per row.

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
    return np.asarray(label, dtype=np.int64)


def _merge_views(views: gpd.GeoDataFrame, label: np.ndarray, crs: str) -> gpd.GeoDataFrame:
    """One inventory row per component ``label`` (rows in label order) from its views.

    Column by column over all views at once (bincount and group-by on the labels); only the
    geometry union runs once per slump. The geometry is the union of the slump's *complete*
    views when it has one, else of all its views; ``mean_prob`` is their pixel-weighted mean.
    """
    n = int(label.max()) + 1
    complete = ~_column(views, "touches_invalid", False).astype(bool).to_numpy()
    any_complete = np.bincount(label, weights=complete, minlength=n) > 0
    chosen = complete | ~any_complete[label]
    w = _column(views, "n_pixels", 1).astype(float).to_numpy()
    p = _column(views, "mean_prob", math.nan).astype(float).to_numpy()
    w_sum = np.bincount(label, weights=np.where(chosen, w, 0.0), minlength=n)
    pw_sum = np.bincount(label, weights=np.where(chosen, p * w, 0.0), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.where(w_sum != 0, pw_sum / w_sum, math.nan)
    per_scene = (
        pd.DataFrame(
            {
                "label": label,
                "scene": _column(views, "scene_id", "").astype(str).to_numpy(),
                "pw": p * w,
                "w": w,
                "complete": complete,
            }
        )
        .groupby(["label", "scene"], sort=True)
        .agg(pw=("pw", "sum"), w=("w", "sum"), complete=("complete", "any"))
        .reset_index()
    )
    scene_label = per_scene["label"].to_numpy()
    scenes = per_scene.groupby("label", sort=True)
    texts = [f"{v:.3f}" for v in per_scene.pw / per_scene.w]
    # the chosen views of each slump, in row order, as one slice per label
    rows = np.flatnonzero(chosen)
    rows = rows[np.argsort(label[rows], kind="stable")]
    bounds = np.searchsorted(label[rows], np.arange(n + 1))
    geoms = np.asarray(views.geometry.values)
    unions = [polygonal(shapely.union_all(geoms[rows[a:b]])) for a, b in pairwise(bounds)]
    data = {
        "year": _column(views, "year", -1).astype("int64").groupby(label).first(),
        "mean_prob": mean_prob,
        "max_prob": _column(views, "max_prob", math.nan).astype(float).groupby(label).max(),
        "n_scenes": scenes.size().to_numpy(),
        "n_scenes_complete": scenes["complete"].sum().astype("int64").to_numpy(),
        "touches_invalid": ~any_complete,
        "scene_ids": _join_runs(scene_label, per_scene["scene"].tolist(), n),
        "scene_mean_probs": _join_runs(scene_label, texts, n),
    }
    for name in ("mgrs_tiles", "dates", "model", "weights_sha256", "run_id"):
        column = {"mgrs_tiles": "mgrs_tile", "dates": "date"}.get(name, name)
        data[name] = _joined_by(views, column, label, n)
    frame = pd.DataFrame({k: np.asarray(v) for k, v in data.items()})
    multi = [g if isinstance(g, MultiPolygon) else MultiPolygon([g]) for g in unions]
    return gpd.GeoDataFrame(frame, geometry=multi, crs=crs)


def _joined_by(frame: pd.DataFrame, name: str, label: np.ndarray, n: int) -> np.ndarray:
    """Per label, the distinct non-missing values of ``frame[name]`` as text, sorted, joined
    with commas ("" where there are none or the column is absent)."""
    if name not in frame.columns:
        return np.full(n, "", dtype=object)
    values = frame[name]
    present = values.notna().to_numpy()
    pairs = pd.DataFrame({"label": label[present], "v": values[present].astype(str).to_numpy()})
    pairs = pairs.drop_duplicates().sort_values(["label", "v"], kind="stable")
    return _join_runs(pairs["label"].to_numpy(), pairs["v"].tolist(), n)


def _join_runs(labels: np.ndarray, texts: list[str], n: int) -> np.ndarray:
    """``texts`` joined with commas per run of equal ``labels`` (sorted), "" for absent labels.

    A plain loop over slices: pandas' per-group ``agg(",".join)`` builds a Series per group.
    """
    out = np.full(n, "", dtype=object)
    cuts = [0, *(np.flatnonzero(np.diff(labels)) + 1).tolist(), len(texts)]
    for a, b in pairwise(cuts):
        if b > a:
            out[labels[a]] = ",".join(texts[a:b])
    return out


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
# Frame helpers (also used by the change layer and the GeoPackage writer)


def _column(frame: pd.DataFrame, name: str, default: Any) -> pd.Series:
    if name in frame.columns:
        col = frame[name]
        return col.where(col.notna(), default) if default is not None else col
    return pd.Series([default] * len(frame), index=frame.index)


def _empty(crs: str, columns: Sequence[str], dtypes: Mapping[str, str]) -> gpd.GeoDataFrame:
    data = {c: pd.Series([], dtype=dtypes.get(c, "object")) for c in columns}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs), crs=crs)[
        ["geometry", *columns]
    ]
