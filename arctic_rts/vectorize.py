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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from affine import Affine
from pyproj import Geod
from rasterio.features import shapes
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon, shape

from arctic_rts.config import DEFAULT_MIN_AREA_M2, VectorizeConfig
from arctic_rts.errors import ConfigError

if TYPE_CHECKING:
    from dask.delayed import Delayed

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
    cut = _check(prob, threshold, config)
    values = np.asarray(prob.compute().values, dtype=np.float32)
    parts = _window_parts(values, (0, 0, 0, 0), (0, 0), values.shape, cut, config)
    return _join(
        [parts], values.shape, *_grid_of(prob), config, _attribute_columns(prob.attrs, attrs)
    )


def vectorize_windows(
    prob: xr.DataArray,
    *,
    threshold: float | None,
    config: VectorizeConfig = VectorizeConfig(),  # noqa: B008 - frozen, so sharing is safe
    attrs: Mapping[str, Any] | None = None,
    optimize_graph: bool = True,
) -> Delayed:
    """:func:`vectorize` of a dask-backed probability map, lazily and one block at a time.

    Every dask block of ``prob``, moved on by the few pixels of context that hysteresis, the
    opening and the ``touches_invalid`` flag need (:func:`~arctic_rts.tiling.trailing_windows`),
    becomes one window task that returns its objects' pieces and the pixels along its borders;
    one last task joins the pieces cut by window seams and measures the objects. A window's
    task receives the whole blocks its window and context overlap (up to 4: its own block and
    those after it) and cuts them, so what a task holds depends on the block size, not on the
    scene's; each block is made sparse as soon as the model has written it (:class:`_Sparse`:
    the pixels objects can be made of, and where it is NaN), and let go once the window that
    starts in it has run (about one row of blocks held while the model goes on), and the
    result is the same GeoDataFrame that
    :func:`vectorize` gives for the whole array. ``optimize_graph=False`` keeps the model
    tasks' ``GPU`` resource annotation (see :func:`arctic_rts.cluster.as_delayed`).

    Returns:
        A dask ``Delayed`` of the GeoDataFrame.
    """
    import dask
    import dask.array as dsa
    from dask.base import tokenize

    from arctic_rts.tiling import axis_pieces, trailing_windows

    cut = _check(prob, threshold, config)
    if not isinstance(prob.data, dsa.Array):
        return dask.delayed(vectorize, pure=True)(  # type: ignore[no-any-return]
            prob, threshold=cut, config=config, attrs=attrs
        )
    arr = prob.data
    shape = (int(arr.shape[0]), int(arr.shape[1]))
    blocks = arr.to_delayed(optimize_graph=optimize_graph)
    # context: 2 * opening radius (erosion, then dilation), at least 1 px (seams, NaN flags)
    halo = max(1, 2 * (config.opening_px or 0))
    ywins, xwins = (
        trailing_windows(shape[0], arr.chunks[0], halo),
        trailing_windows(shape[1], arr.chunks[1], halo),
    )
    # each block as the windows read it, so that the blocks waiting for their windows (about
    # a row of them) hold little more than the pixels objects can be made of
    floor = _hysteresis_low(cut, config) or cut
    name = f"rts-sparse-{tokenize(arr.name, floor)}"
    sparse = np.empty(blocks.shape, dtype=object)
    for ky, kx in np.ndindex(*blocks.shape):
        sparse[ky, kx] = dask.delayed(_Sparse)(blocks[ky, kx], floor, dask_key_name=(name, ky, kx))
    window = dask.delayed(_window_task, pure=True)
    parts = []
    for y0, y1, top, bottom in ywins:
        for x0, x1, left, right in xwins:
            pieces = [
                [(sparse[ky, kx], rows, cols) for kx, cols, _ in axis_pieces(arr.chunks[1], x0, x1)]
                for ky, rows, _ in axis_pieces(arr.chunks[0], y0, y1)
            ]
            parts.append(window(pieces, (top, bottom, left, right), (y0, x0), shape, cut, config))
    columns = _attribute_columns(prob.attrs, attrs)
    return dask.delayed(_join, pure=True)(  # type: ignore[no-any-return]
        parts, shape, *_grid_of(prob), config, columns
    )


def _check(prob: xr.DataArray, threshold: float | None, config: VectorizeConfig) -> float:
    """The threshold to cut at, after the checks both entry points share."""
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
    _hysteresis_low(cut, config)
    return float(cut)


def _grid_of(prob: xr.DataArray) -> tuple[Any, Any]:
    """(transform, CRS) of a probability map."""
    epsg = prob.rio.crs.to_epsg()
    return prob.rio.transform(), f"EPSG:{epsg}" if epsg else prob.rio.crs.to_wkt()


@dataclass
class _Parts:
    """What one window of a scene yields: the pieces of objects inside its core (their pixels
    in the scene's raster order) and what the join needs to put pieces cut by seams together.

    Pixel positions are flat indices into the whole scene (``row * width + col``).
    """

    #: Pieces traced in the scene's pixel coordinates (column, row).
    geoms: list[Any]
    n_pixels: np.ndarray
    sum_prob: np.ndarray
    max_prob: np.ndarray
    touches: np.ndarray
    #: Each piece's first pixel in raster order.
    first: np.ndarray
    #: Hysteresis: the window's weak fragment each piece lies in (all 0 without hysteresis),
    #: whether each fragment holds a pixel at or above the threshold, and the fragments' pixels
    #: along the core's border, inside and just outside (where neighbouring windows overlap).
    fragment: np.ndarray
    seeded: np.ndarray
    ring_pixels: np.ndarray
    ring_fragment: np.ndarray
    #: The pieces' pixels on the core's own border (index of the piece in this window).
    edge_pixels: np.ndarray
    edge_piece: np.ndarray

    def __sizeof__(self) -> int:
        """Bytes the parts hold (what Dask's memory accounting reads through
        ``sys.getsizeof``; the default counts only the Python object): the arrays, and 16 bytes
        per vertex of the traced pieces."""
        arrays = (v for v in vars(self).values() if isinstance(v, np.ndarray))
        vertices = int(shapely.get_num_coordinates(np.asarray(self.geoms, dtype=object)).sum())
        return sum(a.nbytes for a in arrays) + 16 * vertices + 64 * len(self.geoms)


class _Sparse:
    """A probability block as the vectorise windows read it: NaN where invalid, the values at
    or above ``floor`` (the lowest cut an object's pixel passes: the hysteresis low, else the
    threshold), 0 elsewhere. Thresholding, hysteresis, opening, labelling and the attributes
    give the same result on :meth:`dense` as on the block (every object pixel is a stored
    value), while a block waits for its windows in a fraction of its 4 bytes per pixel where
    few pixels pass, and in about as much where all do."""

    def __init__(self, block: np.ndarray, floor: float) -> None:
        block = np.asarray(block, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            kept = block >= floor
        self.shape = block.shape
        self.nan = np.packbits(np.isnan(block), axis=None)
        self.kept = np.packbits(kept, axis=None)
        self.values = block[kept]

    def dense(self) -> np.ndarray:
        """The block as float32, values below the floor as 0."""
        size = int(np.prod(self.shape))
        out = np.zeros(size, dtype=np.float32)
        out[np.unpackbits(self.nan, count=size).view(bool)] = np.nan
        out[np.unpackbits(self.kept, count=size).view(bool)] = self.values
        return out.reshape(self.shape)

    def __sizeof__(self) -> int:
        """Bytes held (what Dask's memory accounting reads through ``sys.getsizeof``)."""
        return self.nan.nbytes + self.kept.nbytes + self.values.nbytes + 64


def _window_task(
    pieces: list[list[tuple[_Sparse, slice, slice]]],
    core: tuple[int, int, int, int],
    origin: tuple[int, int],
    shape: tuple[int, int],
    cut: float,
    config: VectorizeConfig,
) -> _Parts:
    """:func:`_window_parts` of the window made of the given parts of dask blocks."""
    values = np.block([[b.dense()[rows, cols] for b, rows, cols in row] for row in pieces])
    return _window_parts(values, core, origin, shape, cut, config)


def _window_parts(
    values: np.ndarray,
    core: tuple[int, int, int, int],
    origin: tuple[int, int],
    shape: tuple[int, int],
    cut: float,
    config: VectorizeConfig,
) -> _Parts:
    """The pieces of objects in one window's core.

    Args:
        values: Probabilities of the window: the core and ``core`` = (top, bottom, left,
            right) pixels of context around it (0 where the scene ends).
        origin: Row and column of the window's first pixel in the scene.
        shape: The whole scene's (height, width).
    """
    h, w = values.shape
    top, bottom, left, right = core
    inner = (origin[0] > 0, origin[0] + h < shape[0], origin[1] > 0, origin[1] + w < shape[1])
    rows, cols = slice(top, h - bottom), slice(left, w - right)
    labels, n, weak, seeded = _label_objects(values, cut, config, inner, (rows, cols))
    row0, col0 = origin[0] + top, origin[1] + left
    width = shape[1]
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    vals = values[rows, cols][ys, xs].astype(np.float64)
    n_pixels = np.bincount(lab, minlength=n + 1)[1:].astype(np.int64)
    sum_prob = np.bincount(lab, weights=vals, minlength=n + 1)[1:]
    # bincount and maximum.at over object pixels only: ndimage.maximum sorts the whole array
    max_prob = np.full(n + 1, -np.inf)
    np.maximum.at(max_prob, lab, vals)
    near = _near_invalid(values, inner)[rows, cols][ys, xs]
    touches = np.bincount(lab, weights=near, minlength=n + 1)[1:] > 0
    # np.nonzero walks in raster order: an object's first index is its first pixel
    _, first_at = np.unique(lab, return_index=True)
    first = (ys[first_at] + row0).astype(np.int64) * width + xs[first_at] + col0
    fragment = weak[rows, cols][ys[first_at], xs[first_at]] if weak is not None else np.zeros(n)
    ring_pixels, ring_fragment = _ring(weak, (rows, cols), origin, width)
    border = np.zeros(labels.shape, dtype=bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    by, bx = np.nonzero(border & (labels > 0))
    grid = Affine.translation(col0, row0)
    return _Parts(
        geoms=_polygons(labels, n, grid, config.connectivity),
        n_pixels=n_pixels,
        sum_prob=sum_prob,
        max_prob=max_prob[1:],
        touches=touches,
        first=first,
        fragment=fragment.astype(np.int64),
        seeded=seeded,
        ring_pixels=ring_pixels,
        ring_fragment=ring_fragment,
        edge_pixels=(by + row0).astype(np.int64) * width + bx + col0,
        edge_piece=(labels[by, bx] - 1).astype(np.int64),
    )


def _ring(
    weak: np.ndarray | None, core: tuple[slice, slice], origin: tuple[int, int], width: int
) -> tuple[np.ndarray, np.ndarray]:
    """The weak fragments' pixels on the core's border and on the ring just outside it: where
    the window overlaps its neighbours' windows, so the join can tell which fragments of
    neighbouring windows are one."""
    empty = np.zeros(0, dtype=np.int64)
    if weak is None:
        return empty, empty
    rows, cols = core
    h, w = weak.shape
    ring = np.zeros(weak.shape, dtype=bool)
    r0, r1 = max(rows.start - 1, 0), min(rows.stop + 1, h)
    c0, c1 = max(cols.start - 1, 0), min(cols.stop + 1, w)
    ring[r0:r1, c0:c1] = True
    ring[r0 + 2 : r1 - 2, c0 + 2 : c1 - 2] = False
    ring &= weak > 0
    ys, xs = np.nonzero(ring)
    pixels = (ys + origin[0]).astype(np.int64) * width + xs + origin[1]
    return pixels, weak[ys, xs].astype(np.int64)


def _join(
    parts: list[_Parts],
    shape: tuple[int, int],
    transform: Any,
    crs: Any,
    config: VectorizeConfig,
    columns: dict[str, Any],
) -> gpd.GeoDataFrame:
    """The scene's objects from its windows' pieces: pieces whose fragments hold no seed in
    any window are dropped (hysteresis), pieces that touch across a seam become one object;
    then geometry in the scene's CRS, measures, the minimum-area filter and the columns."""
    keep = _seeded_pieces(parts)
    obj = _objects(parts, keep, shape, config.connectivity)
    ids = np.flatnonzero(keep)
    if not len(ids):
        return _empty_frame(crs, columns)
    _, obj = np.unique(obj[ids], return_inverse=True)
    n = int(obj.max()) + 1

    def gather(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])[ids]

    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, obj, gather("first"))
    n_pixels = np.bincount(obj, weights=gather("n_pixels"), minlength=n).astype(np.int64)
    mean_prob = np.bincount(obj, weights=gather("sum_prob"), minlength=n) / n_pixels
    max_prob = np.full(n, -np.inf)
    np.maximum.at(max_prob, obj, gather("max_prob"))
    touches = np.bincount(obj, weights=gather("touches"), minlength=n) > 0
    pieces = np.array([g for p in parts for g in p.geoms], dtype=object)[ids]
    geoms = np.empty(n, dtype=object)
    counts = np.bincount(obj, minlength=n)
    single = counts[obj] == 1
    geoms[obj[single]] = pieces[single]
    for k in np.flatnonzero(counts > 1):  # objects cut by seams: few
        geoms[k] = polygonal(shapely.simplify(shapely.union_all(pieces[obj == k]), 0.0))
    # objects in the order of their first pixel, as one labelling of the whole scene numbers them
    order = np.argsort(first, kind="stable")
    a, b, c, d, e, f = transform[:6]
    world = shapely.transform(
        geoms[order],
        lambda px: np.column_stack(
            [c + px[:, 0] * a + px[:, 1] * b, f + px[:, 0] * d + px[:, 1] * e]
        ),
    )
    # normalised: pieces joined across seams then have the same vertices as one trace
    geo = gpd.GeoSeries(shapely.normalize(world), crs=crs)
    area, perimeter = measure_polygons(geo, config.area_crs)
    min_area = config.min_area_m2 if config.min_area_m2 is not None else DEFAULT_MIN_AREA_M2
    kept = area >= min_area
    order = order[kept]
    data: dict[str, Any] = {
        "area_m2": area[kept],
        "perimeter_m": perimeter[kept],
        "mean_prob": mean_prob[order],
        "max_prob": max_prob[order],
        "n_pixels": n_pixels[order],
        "touches_invalid": touches[order],
    }
    for key, value in columns.items():
        data[key] = [value] * len(order)
    # One constructor call: per-column assignment on a GeoDataFrame costs milliseconds each.
    return gpd.GeoDataFrame(data, geometry=geo[kept].reset_index(drop=True))[
        ["geometry", *VECTOR_COLUMNS, *columns]
    ]


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected component of each of ``n`` nodes, given the links ``a[i]`` - ``b[i]``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]  # type: ignore[no-any-return]


def _seeded_pieces(parts: list[_Parts]) -> np.ndarray:
    """Per piece of every window: whether its weak fragment, joined with the fragments of
    other windows where the windows overlap, holds a pixel at or above the threshold."""
    offsets = np.cumsum([0] + [len(p.seeded) for p in parts])
    ring_px = np.concatenate([p.ring_pixels for p in parts])
    ring_node = np.concatenate([p.ring_fragment + o for p, o in zip(parts, offsets, strict=False)])
    order = np.argsort(ring_px, kind="stable")
    same = ring_px[order][1:] == ring_px[order][:-1]
    frag = _components(int(offsets[-1]), ring_node[order][1:][same], ring_node[order][:-1][same])
    seeded = np.bincount(frag, weights=np.concatenate([p.seeded for p in parts]))
    return np.concatenate(
        [seeded[frag[p.fragment + o]] > 0 for p, o in zip(parts, offsets, strict=False)]
    )


def _objects(
    parts: list[_Parts], keep: np.ndarray, shape: tuple[int, int], connectivity: int
) -> np.ndarray:
    """Per piece of every window, the object it belongs to: kept pieces whose border pixels
    touch across a seam (under ``connectivity``) are one object."""
    offsets = np.cumsum([0] + [len(p.first) for p in parts])
    edge_px = np.concatenate([p.edge_pixels for p in parts])
    edge_node = np.concatenate([p.edge_piece + o for p, o in zip(parts, offsets, strict=False)])
    alive = keep[edge_node] if len(edge_node) else np.zeros(0, dtype=bool)
    order = np.argsort(edge_px[alive])
    edge_px, edge_node = edge_px[alive][order], edge_node[alive][order]
    height, width = shape
    a_list, b_list = [], []
    steps = [(0, 1), (1, 0)] + ([(1, -1), (1, 1)] if connectivity == 8 else [])
    for dy, dx in steps:
        col = edge_px % width + dx
        target = edge_px + dy * width + dx
        ok = (col >= 0) & (col < width) & (target < height * width)
        at = np.searchsorted(edge_px, target[ok])
        hit = at < len(edge_px)
        at, src = at[hit], edge_node[ok][hit]
        hit = edge_px[at] == target[ok][hit]
        a_list.append(src[hit])
        b_list.append(edge_node[at[hit]])
    return _components(int(offsets[-1]), np.concatenate(a_list), np.concatenate(b_list))


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
    values: np.ndarray,
    cut: float,
    config: VectorizeConfig,
    inner: tuple[bool, bool, bool, bool] = (False, False, False, False),
    core: tuple[slice, slice] = (slice(None), slice(None)),
) -> tuple[np.ndarray, int, np.ndarray | None, np.ndarray]:
    """Threshold (NaN is background), grow by hysteresis, open, and label connected objects.

    ``values`` may be a window of a larger scene: ``inner`` says which of its sides (top,
    bottom, left, right) lie inside the scene, and only the ``core`` is labelled (its context
    must reach twice the opening radius). With hysteresis, a weak fragment that reaches an
    inner side may meet a pixel at or above the threshold outside the window: it is kept, and
    the join (:func:`_join`) decides.

    Returns:
        The core's object labels (int32), their number, and with hysteresis the window's weak
        fragment labels (else None) and whether each fragment holds a pixel at or above the
        threshold (without hysteresis: ``[True]``, the one fragment 0 every object lies in).
    """
    structure = ndimage.generate_binary_structure(2, 2 if config.connectivity == 8 else 1)
    low = _hysteresis_low(cut, config)
    weak, seeded = None, np.ones(1, dtype=bool)
    with np.errstate(invalid="ignore"):
        mask = values >= cut
        if low > 0:
            weak, m = ndimage.label(values >= low, structure=structure)
            seeded = np.zeros(m + 1, dtype=bool)
            seeded[weak[mask]] = True
            seeded[0] = False
            maybe = seeded.copy()
            for side, edge in zip(inner, (weak[0], weak[-1], weak[:, 0], weak[:, -1]), strict=True):
                if side:
                    maybe[edge] = True
            maybe[0] = False
            mask = maybe[weak]
    if config.opening_px:
        r = config.opening_px
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        mask = ndimage.binary_opening(mask, structure=(xx * xx + yy * yy) <= r * r)
    labels, n = ndimage.label(mask[core], structure=structure)
    return labels.astype(np.int32, copy=False), int(n), weak, seeded


def _hysteresis_low(cut: float, config: VectorizeConfig) -> float:
    """The lower cut of hysteresis (0: off), refused unless below ``cut``."""
    low = config.hysteresis_low or 0.0
    if low >= cut:
        raise ConfigError(
            f"hysteresis_low ({low}) must lie below the threshold ({cut}); 0 turns it off."
        )
    return float(low)


def object_mask(
    values: np.ndarray, cut: float, config: VectorizeConfig, pixel_area_m2: float
) -> np.ndarray:
    """The pixels of the objects :func:`vectorize` keeps, as a boolean ``(y, x)`` array.

    What pixel scores of a post-processed map need. An object's area is its pixel count times
    ``pixel_area_m2`` (its area on the image's own grid, within a fraction of a percent of the
    equal-area measure ``vectorize`` uses).
    """
    labels, n, _, _ = _label_objects(values, cut, config)
    min_area = config.min_area_m2 if config.min_area_m2 is not None else DEFAULT_MIN_AREA_M2
    keep = np.bincount(labels.ravel(), minlength=n + 1) * pixel_area_m2 >= min_area
    keep[0] = False
    return keep[labels]


def _near_invalid(
    values: np.ndarray, inner: tuple[bool, bool, bool, bool] = (False, False, False, False)
) -> np.ndarray:
    """Pixels within one pixel (8-neighbourhood) of a NaN pixel, plus the array's outer ring
    on the sides that are the scene's edge (not ``inner``: top, bottom, left, right)."""
    near = ndimage.binary_dilation(np.isnan(values), structure=np.ones((3, 3), dtype=bool))
    for side, edge in zip(inner, (near[0], near[-1], near[:, 0], near[:, -1]), strict=True):
        if not side:
            edge[...] = True
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
