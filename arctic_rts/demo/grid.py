"""Where and when: the two MGRS tiles and their grids, transforms, and the acquisition plan.

The landscape sits on the Yukon coastal plain at the UTM zone 7/8 boundary (138 W, 69 N) and is
seen by two overlapping MGRS tiles in different UTM zones, on several summer dates and on
out-of-season snow dates. One "master" grid in the western tile's UTM zone holds the ground truth
of everything; each tile samples it onto its own grid (:func:`_master_coords`, :func:`_sample`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.transform import Affine
from scipy import ndimage
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

_F32 = NDArray[np.float32]
_F64 = NDArray[np.float64]

#: Ground centre of the demo: the Yukon coastal plain at the UTM zone 7/8 boundary (138 W).
_CENTER_LONLAT = (-138.0, 69.05)
#: The two tiles' scene centres lie this share of the scene width west/east of the ground
#: centre, so the scenes overlap by about 70 % of their width.
_TILE_SHIFT = 0.15
_TILES: tuple[tuple[int, float, str, int], ...] = (
    # (EPSG, east shift sign, UTC time of the overpass, relative orbit)
    (32607, -1.0, "20:49:19", 100),
    (32608, +1.0, "21:09:29", 57),
)
#: Per tile: (month, day, target cloud fraction) of each acquisition in a year. The second
#: summer date of tile 1 and the third of tile 2 are the clearly least cloudy summer scenes;
#: the May/October snow scenes are clearer still, so a search without a season filter picks them.
_DATES: tuple[tuple[tuple[int, int, float], ...], ...] = (
    ((5, 19, 0.01), (6, 23, 0.38), (7, 13, 0.04), (7, 28, 0.45), (8, 12, 0.24), (10, 6, 0.015)),
    ((5, 22, 0.01), (6, 26, 0.55), (7, 16, 0.22), (8, 5, 0.035), (10, 9, 0.02)),
)
#: MGRS letters: latitude bands, 100 km square rows and column sets by zone.
_LAT_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
_COL_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")


@dataclass(frozen=True)
class _Grid:
    """A north-up pixel grid: ``epsg``, top-left corner ``x0, y0``, pixel size, shape."""

    epsg: int
    x0: float
    y0: float
    res: float
    height: int
    width: int

    @property
    def transform(self) -> Affine:
        return Affine(self.res, 0.0, self.x0, 0.0, -self.res, self.y0)

    def coarsen(self, factor: int) -> _Grid:
        return _Grid(
            self.epsg, self.x0, self.y0, self.res * factor, self.height // factor,
            self.width // factor,
        )  # fmt: skip

    def bounds(self) -> tuple[float, float, float, float]:
        return (
            self.x0, self.y0 - self.height * self.res, self.x0 + self.width * self.res, self.y0,
        )  # fmt: skip


def _mgrs_tile(epsg: int, x: float, y: float) -> tuple[int, str, str]:
    """MGRS grid zone, latitude band and 100 km square of a Sentinel-2 tile holding (x, y).

    A Sentinel-2 tile starts at the 100 km square's west edge minus 20 m and spans 109.8 km, its
    top at the square's north edge; the square is the one whose north edge lies above ``y``.
    """
    zone = epsg - 32600
    _, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
    band = _LAT_BANDS[min(int((lat + 80) // 8), len(_LAT_BANDS) - 1)]
    col = _COL_SETS[(zone - 1) % 3][int(x // 100_000) - 1]
    row_index = int(y // 100_000) + (5 if zone % 2 == 0 else 0)
    row = _ROW_LETTERS[row_index % 20]
    return zone, band, col + row


@dataclass(frozen=True)
class _Tile:
    """One MGRS tile's demo scene grid (10 m) and its valid (not nodata) area."""

    name: str  # e.g. "7WFS"
    zone: int
    lat_band: str
    square: str
    grid: _Grid
    utc_time: str
    orbit: int
    valid: Polygon  # in the tile's CRS
    nodata_cut: Polygon | None  # the part of the scene outside the swath


def _plan_tiles(size_px: int) -> list[_Tile]:
    """Place the two tile scenes around the ground centre on their native 60 m aligned grids."""
    tiles: list[_Tile] = []
    extent = size_px * 10.0
    to7 = Transformer.from_crs(4326, 32607, always_xy=True)
    cx7, cy7 = to7.transform(*_CENTER_LONLAT)
    for k, (epsg, sign, utc, orbit) in enumerate(_TILES):
        lon, lat = Transformer.from_crs(32607, 4326, always_xy=True).transform(
            cx7 + sign * _TILE_SHIFT * extent, cy7
        )
        x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
        x0 = math.floor((x - extent / 2) / 60.0) * 60.0
        y0 = math.ceil((y + extent / 2) / 60.0) * 60.0
        grid = _Grid(epsg, x0, y0, 10.0, size_px, size_px)
        zone, band, square = _mgrs_tile(epsg, x, y)
        scene = box(*grid.bounds())
        cut: Polygon | None = None
        if k == 1:
            # The swath edge of this orbit clips the scene's south-east corner, as on real
            # tiles at the side of a swath.
            xmin, ymin, xmax, _ = grid.bounds()
            w = xmax - xmin
            cut = Polygon([(xmax - 0.30 * w, ymin), (xmax, ymin), (xmax, ymin + 0.22 * w)])
        valid = scene.difference(cut) if cut is not None else scene
        tiles.append(
            _Tile(f"{zone}{band}{square}", zone, band, square, grid, utc, orbit, valid, cut)
        )
    return tiles


def _transform_geom(geom: BaseGeometry, src: int, dst: int) -> BaseGeometry:
    if src == dst:
        return geom
    tr = Transformer.from_crs(src, dst, always_xy=True)

    def fn(coords: NDArray[np.float64]) -> NDArray[np.float64]:
        x, y = tr.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, fn)


def _block_mean(a: NDArray[Any], f: int) -> _F32:
    if f == 1:
        return a.astype(np.float32, copy=False)
    h, w = a.shape[-2] // f, a.shape[-1] // f
    out = np.zeros((*a.shape[:-2], h, w), np.float32)
    for i in range(f):  # strided sums: much faster than a mean over reshaped axes
        for j in range(f):
            out += a[..., i : h * f : f, j : w * f : f]
    out *= np.float32(1.0 / (f * f))
    return out


def _rasterize_frac(
    geoms: list[BaseGeometry],
    grid: _Grid,
    supersample: int = 2,
    values: list[float] | None = None,
) -> _F32:
    """Area fraction (0..1, times the shape's value) of each pixel covered by ``geoms``."""
    if not geoms:
        return np.zeros((grid.height, grid.width), np.float32)
    vals = values if values is not None else [1.0] * len(geoms)
    fine = rasterize(
        [(g, v) for g, v in zip(geoms, vals, strict=True) if not g.is_empty],
        out_shape=(grid.height * supersample, grid.width * supersample),
        transform=grid.transform @ Affine.scale(1.0 / supersample),
        fill=0,
        dtype="float32",
    )
    return _block_mean(fine, supersample)


def _window(geom: BaseGeometry, grid: _Grid) -> tuple[tuple[int, int, int, int], _Grid] | None:
    """Pixel window (r0, r1, c0, c1) of ``grid`` around ``geom`` and its sub-grid."""
    xmin, ymin, xmax, ymax = geom.bounds
    c0 = max(0, int((xmin - grid.x0) // grid.res))
    c1 = min(grid.width, int((xmax - grid.x0) // grid.res) + 1)
    r0 = max(0, int((grid.y0 - ymax) // grid.res))
    r1 = min(grid.height, int((grid.y0 - ymin) // grid.res) + 1)
    if c1 <= c0 or r1 <= r0:
        return None
    sub = _Grid(
        grid.epsg, grid.x0 + c0 * grid.res, grid.y0 - r0 * grid.res, grid.res, r1 - r0, c1 - c0
    )
    return (r0, r1, c0, c1), sub


def _slope_aspect(dem: _F32, res: float) -> tuple[_F32, _F32]:
    """Slope (degrees) and downslope azimuth (radians clockwise from north) of a north-up DEM."""
    gy, gx = np.gradient(dem.astype(np.float64), res)
    dzdx, dzdy = gx, -gy  # rows run south
    slope = np.degrees(np.arctan(np.hypot(dzdx, dzdy)))
    aspect = np.arctan2(-dzdx, -dzdy)  # direction of steepest descent
    return slope.astype(np.float32), aspect.astype(np.float32)


def _master_coords(tile: _Tile, master: _Grid) -> tuple[_F64, _F64] | tuple[slice, slice]:
    """Fractional master row/col of each tile pixel centre, or slices when grids coincide."""
    g = tile.grid
    if g.epsg == master.epsg:
        r0 = round((master.y0 - g.y0) / master.res)
        c0 = round((g.x0 - master.x0) / master.res)
        return slice(r0, r0 + g.height), slice(c0, c0 + g.width)
    # Exact transform on a coarse lattice, bilinear in between (the map is smooth at 10 km).
    step = 8
    rr = np.arange(0, g.height + step, step, dtype=np.float64)
    cc = np.arange(0, g.width + step, step, dtype=np.float64)
    cx, cy = np.meshgrid(g.x0 + (cc + 0.5) * g.res, g.y0 - (rr + 0.5) * g.res)
    mx, my = Transformer.from_crs(g.epsg, master.epsg, always_xy=True).transform(cx, cy)
    mcol = (mx - master.x0) / master.res - 0.5
    mrow = (master.y0 - my) / master.res - 0.5
    fr = np.arange(g.height, dtype=np.float64) / step
    fc = np.arange(g.width, dtype=np.float64) / step
    pr, pc = np.meshgrid(fr, fc, indexing="ij")
    rows = ndimage.map_coordinates(mrow, [pr, pc], order=1)
    cols = ndimage.map_coordinates(mcol, [pr, pc], order=1)
    return rows, cols


def _sample(field_: _F32, where: tuple[Any, Any]) -> _F32:
    if isinstance(where[0], slice):
        return np.ascontiguousarray(field_[where[0], where[1]], dtype=np.float32)
    return ndimage.map_coordinates(field_, [where[0], where[1]], order=1, mode="nearest").astype(
        np.float32
    )


@dataclass(frozen=True)
class _Acq:
    tile: _Tile
    when: dt.datetime
    cloud: float
    platform: str
    summer: bool


def _acquisitions(tiles: list[_Tile], years: Sequence[int], rng: np.random.Generator) -> list[_Acq]:
    acqs = []
    for ti, tile in enumerate(tiles):
        for yi, year in enumerate(years):
            for k, (month, day, cloud) in enumerate(_DATES[ti]):
                shift = 0 if yi == 0 else int(rng.integers(-3, 4))
                date = dt.date(year, month, day) + dt.timedelta(days=shift)
                hh, mm, ss = (int(v) for v in tile.utc_time.split(":"))
                when = dt.datetime(date.year, date.month, date.day, hh, mm, ss, tzinfo=dt.UTC)
                c = cloud if yi == 0 else float(np.clip(cloud * rng.uniform(0.8, 1.25), 0.01, 0.9))
                platform = "sentinel-2a" if (k + yi + ti) % 2 == 0 else "sentinel-2b"
                acqs.append(_Acq(tile, when, c, platform, 6 <= month <= 8))
    return acqs


def _dem_grid(tiles: list[_Tile]) -> tuple[tuple[float, float, float, float], _Grid]:
    """The demo bbox (both footprints) and a GLO-30-like lon/lat grid over it.

    Copernicus GLO-30 at 60-70 N has 1 arc-second rows and 2 arc-second columns. ``_Grid``
    has square pixels, so the returned grid carries the row spacing; ``_write_dem`` uses
    the real 2:1 transform.
    """
    footprints = [_transform_geom(t.valid, t.grid.epsg, 4326) for t in tiles]
    w, s, e, n = shapely.union_all(footprints).bounds
    bbox = (
        math.floor(w * 1e5) / 1e5, math.floor(s * 1e5) / 1e5,
        math.ceil(e * 1e5) / 1e5, math.ceil(n * 1e5) / 1e5,
    )  # fmt: skip
    dy, dx = 1 / 3600, 2 / 3600
    x0 = math.floor(bbox[0] / dx) * dx
    y0 = math.ceil(bbox[3] / dy) * dy
    width = math.ceil((bbox[2] - x0) / dx)
    height = math.ceil((y0 - bbox[1]) / dy)
    # a square-pixel grid with the same bounds: 2 * width columns of dy
    return bbox, _Grid(4326, x0, y0, dy, height, 2 * width)
