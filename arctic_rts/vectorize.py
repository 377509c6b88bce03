"""Probability rasters to slump polygons with per-object attributes.

``vectorize`` thresholds one scene's probability map, labels connected objects, turns each into
one polygon in the scene's own (UTM) CRS and measures it. The geometry helpers at the bottom
(``polygonal``, ``measure_polygons``) are the one copy used by the inventory as well.

Choices (documented in the README's inventory schema):

* connectivity 8 by default: pixels that touch at a corner belong to the same object, so a slump
  with a one-pixel-wide diagonal neck stays one object (``VectorizeConfig.connectivity``);
* a pixel is foreground when ``prob >= threshold``; NaN is never foreground;
* ``touches_invalid`` flags an object that touches, within one pixel (8-neighbourhood), a NaN
  (cloud, nodata) pixel or the array edge: its true extent is unknown. It is kept, not dropped,
  so the inventory can prefer another scene's complete view;
* ``area_m2`` is planar area in the equal-area ``VectorizeConfig.area_crs`` (EPSG:6931);
  ``perimeter_m`` is geodesic length on the WGS84 ellipsoid (equal-area projections stretch
  lengths by several percent at 60-70 degrees N);
* the minimum-area filter uses ``area_m2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from pyproj import Geod
from rasterio.features import shapes
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon, shape

from arctic_rts.config import DEFAULT_MIN_AREA_M2, VectorizeConfig
from arctic_rts.errors import ConfigError

#: Attribute columns every ``vectorize`` result carries, in this order, before ``attrs`` keys.
VECTOR_COLUMNS: tuple[str, ...] = (
    "area_m2",
    "perimeter_m",
    "mean_prob",
    "max_prob",
    "n_pixels",
    "touches_invalid",
)

_DTYPES: dict[str, str] = {
    "area_m2": "float64",
    "perimeter_m": "float64",
    "mean_prob": "float64",
    "max_prob": "float64",
    "n_pixels": "int64",
    "touches_invalid": "bool",
}

_GEOD = Geod(ellps="WGS84")


def vectorize(
    prob: xr.DataArray,
    *,
    threshold: float | None,
    config: VectorizeConfig = VectorizeConfig(),  # noqa: B008 - frozen, so sharing is safe
    attrs: Mapping[str, Any] | None = None,
) -> gpd.GeoDataFrame:
    """Turn a probability map into one polygon per connected slump object.

    The array is computed once (dask-backed input is fine); everything after that is numpy.

    Args:
        prob: 2-D probability ``(y, x)`` in [0, 1], NaN where the scene is invalid, with a CRS and
            affine transform readable by rioxarray (``prob.rio.crs``, ``prob.rio.transform()``).
        threshold: The default cut, normally the model card's ``threshold``. ``config.threshold``,
            when set, is the user's override and wins. One of the two must be given.
        config: Threshold override, minimum area, opening, connectivity, area CRS.
        attrs: Constant columns added to every row (scene_id, mgrs_tile, date, year, model,
            weights_sha256, run_id...). Without it, ``scene_id``, ``mgrs_tile``, ``date`` and
            ``year`` are taken from ``prob.attrs`` (``item_id``, ``mgrs_tile``, ``datetime``)
            when present; keys of ``attrs`` override those.

    Returns:
        GeoDataFrame in ``prob``'s CRS with ``geometry`` (Polygon or MultiPolygon, valid), the
        columns of :data:`VECTOR_COLUMNS` and one column per attribute. An empty scene gives an
        empty frame with the same columns and CRS.

    Raises:
        ConfigError: No threshold at all, or a threshold outside (0, 1).
        ValueError: ``prob`` is not 2-D or carries no CRS.
    """
    cut = config.threshold if config.threshold is not None else threshold
    if cut is None or not 0 < cut < 1:
        raise ConfigError(
            f"vectorize needs a threshold strictly between 0 and 1 (got {cut}); pass the model "
            "card's threshold or set VectorizeConfig.threshold."
        )
    if prob.ndim != 2:
        raise ValueError(
            f"vectorize expects a 2-D (y, x) probability array, got dims {prob.dims}; "
            "select the band first."
        )
    if prob.rio.crs is None:
        raise ValueError(
            "the probability array has no CRS; write it with prob.rio.write_crs(epsg) first."
        )
    epsg = prob.rio.crs.to_epsg()
    crs = f"EPSG:{epsg}" if epsg else prob.rio.crs.to_wkt()
    transform = prob.rio.transform()
    values = np.asarray(prob.compute().values, dtype=np.float32)
    columns = _attribute_columns(prob.attrs, attrs)

    labels, n = _label_objects(values, cut, config)
    if n == 0:
        return _empty_frame(crs, columns)

    # Per-object statistics over foreground pixels only, with bincount: ndimage.maximum sorts
    # the whole scene (seconds per 4k x 4k array); slumps cover a tiny share of it.
    fg = labels > 0
    lab = labels[fg]
    vals = values[fg].astype(np.float64)
    n_pixels = np.bincount(lab, minlength=n + 1)[1:].astype(np.int64)
    mean_prob = np.bincount(lab, weights=vals, minlength=n + 1)[1:] / n_pixels
    max_prob = np.full(n + 1, -np.inf)
    np.maximum.at(max_prob, lab, vals)
    max_prob = max_prob[1:]
    touches = np.bincount(lab, weights=_near_invalid(values)[fg], minlength=n + 1)[1:] > 0

    geoms = gpd.GeoSeries(_polygons(labels, n, transform, config.connectivity), crs=crs)
    area, perimeter = measure_polygons(geoms, config.area_crs)
    min_area = config.min_area_m2 if config.min_area_m2 is not None else DEFAULT_MIN_AREA_M2
    keep = area >= min_area
    data: dict[str, Any] = {
        "area_m2": area[keep],
        "perimeter_m": perimeter[keep],
        "mean_prob": mean_prob[keep],
        "max_prob": max_prob[keep],
        "n_pixels": n_pixels[keep],
        "touches_invalid": touches[keep],
    }
    n_kept = int(keep.sum())
    for key, value in columns.items():
        data[key] = [value] * n_kept
    # One constructor call: per-column assignment on a GeoDataFrame costs milliseconds each.
    return gpd.GeoDataFrame(data, geometry=geoms[keep].reset_index(drop=True))[
        ["geometry", *VECTOR_COLUMNS, *columns]
    ]


def _attribute_columns(
    prob_attrs: Mapping[str, Any], attrs: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Constant columns: what the loader recorded on the array, overridden by ``attrs``."""
    derived: dict[str, Any] = {}
    if "item_id" in prob_attrs:
        derived["scene_id"] = str(prob_attrs["item_id"])
    if "mgrs_tile" in prob_attrs:
        derived["mgrs_tile"] = str(prob_attrs["mgrs_tile"])
    when = prob_attrs.get("datetime")
    if when:
        derived["date"] = str(when)[:10]
        derived["year"] = int(str(when)[:4])
    derived.update(attrs or {})
    return derived


def _label_objects(
    values: np.ndarray, cut: float, config: VectorizeConfig
) -> tuple[np.ndarray, int]:
    """Threshold (NaN is background), grow by hysteresis, open, and label connected objects."""
    structure = ndimage.generate_binary_structure(2, 2 if config.connectivity == 8 else 1)
    with np.errstate(invalid="ignore"):
        mask = values >= cut
        low = config.hysteresis_low or 0.0
        if low > 0:
            if low >= cut:
                raise ConfigError(
                    f"hysteresis_low ({low}) must lie below the threshold ({cut}); 0 turns it off."
                )
            weak, _ = ndimage.label(values >= low, structure=structure)
            seeds = np.unique(weak[mask])
            mask = np.isin(weak, seeds[seeds > 0])
    if config.opening_px:
        r = config.opening_px
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        mask = ndimage.binary_opening(mask, structure=(xx * xx + yy * yy) <= r * r)
    labels, n = ndimage.label(mask, structure=structure)
    return labels.astype(np.int32, copy=False), int(n)


def object_mask(
    values: np.ndarray, cut: float, config: VectorizeConfig, pixel_area_m2: float
) -> np.ndarray:
    """The pixels of the objects :func:`vectorize` keeps, as a boolean ``(y, x)`` array.

    What pixel scores of a post-processed map need. An object's area is its pixel count times
    ``pixel_area_m2`` (its area on the image's own grid, within a fraction of a percent of the
    equal-area measure ``vectorize`` uses).
    """
    labels, n = _label_objects(values, cut, config)
    min_area = config.min_area_m2 if config.min_area_m2 is not None else DEFAULT_MIN_AREA_M2
    keep = np.bincount(labels.ravel(), minlength=n + 1) * pixel_area_m2 >= min_area
    keep[0] = False
    return keep[labels]


def _near_invalid(values: np.ndarray) -> np.ndarray:
    """Pixels within one pixel (8-neighbourhood) of a NaN pixel, plus the array's outer ring."""
    near = ndimage.binary_dilation(np.isnan(values), structure=np.ones((3, 3), dtype=bool))
    near[0, :] = near[-1, :] = near[:, 0] = near[:, -1] = True
    return near


def _polygons(labels: np.ndarray, n: int, transform: Any, connectivity: int) -> list[Any]:
    """One valid polygonal geometry per label 1..n, traced on pixel edges."""
    parts: list[list[Polygon]] = [[] for _ in range(n)]
    for geojson, value in shapes(
        labels, mask=labels > 0, connectivity=connectivity, transform=transform
    ):
        parts[int(value) - 1].append(shape(geojson))
    # 8-connected traces touch themselves at pixel corners (invalid rings); make_valid fixes
    # that without moving any vertex.
    return [polygonal(p[0] if len(p) == 1 else MultiPolygon(p)) for p in parts]


def polygonal(geom: Any) -> Polygon | MultiPolygon:
    """Return a valid Polygon or MultiPolygon: ``make_valid``, keeping only the areal parts.

    Lines and points that ``make_valid`` can produce from collapsed rings are dropped; an input
    without area gives an empty MultiPolygon.
    """
    if geom is None:
        return MultiPolygon()
    if not shapely.is_valid(geom):
        geom = shapely.make_valid(geom)
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    polys: list[Polygon] = []
    for part in getattr(geom, "geoms", []):
        if isinstance(part, Polygon):
            polys.append(part)
        elif isinstance(part, MultiPolygon):
            polys.extend(part.geoms)
    if len(polys) == 1:
        return polys[0]
    return MultiPolygon(polys)


def measure_polygons(geoms: gpd.GeoSeries, area_crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Area (m2, planar in the equal-area ``area_crs``) and geodesic perimeter (m) per geometry.

    Args:
        geoms: Polygons with a CRS.
        area_crs: An equal-area CRS, EPSG:6931 for the Arctic.

    Returns:
        ``(area_m2, perimeter_m)`` as float64 arrays aligned with ``geoms``.
    """
    if geoms.crs is None:
        raise ValueError("measure_polygons needs geometries with a CRS (set it with set_crs).")
    if len(geoms) == 0:
        return np.zeros(0), np.zeros(0)
    area = np.asarray(geoms.to_crs(area_crs).area, dtype=np.float64)
    # Geodesic length of every ring edge in one vectorised call (per-geometry pyproj calls
    # cost seconds for a scene's thousands of polygons), summed back per geometry.
    lonlat = np.asarray(geoms.to_crs("EPSG:4326").values, dtype=object)
    parts, part_of = shapely.get_parts(lonlat, return_index=True)
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    xy, vertex_of = shapely.get_coordinates(rings, return_index=True)
    same = vertex_of[:-1] == vertex_of[1:]
    _, _, dist = _GEOD.inv(xy[:-1, 0][same], xy[:-1, 1][same], xy[1:, 0][same], xy[1:, 1][same])
    per_ring = np.bincount(vertex_of[:-1][same], weights=dist, minlength=len(rings))
    perimeter = np.bincount(part_of[ring_of], weights=per_ring, minlength=len(lonlat))
    return area, perimeter.astype(np.float64)


def _empty_frame(crs: Any, columns: Mapping[str, Any]) -> gpd.GeoDataFrame:
    """An empty result that still carries the schema (columns, dtypes) and the CRS."""
    data: dict[str, Any] = {c: pd.Series([], dtype=_DTYPES[c]) for c in VECTOR_COLUMNS}
    for key, value in columns.items():
        data[key] = pd.Series([], dtype=pd.Series([value]).dtype)
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs))[
        ["geometry", *VECTOR_COLUMNS, *columns]
    ]
