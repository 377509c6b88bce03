"""Synthetic Sentinel-2 L2A scenes of Arctic tundra with thaw slumps, for the offline demo.

``generate_demo`` writes a small, self-contained catalog that looks to the pipeline like Earth
Search v1 ``sentinel-2-l2a``: per scene the 12 L2A bands at their native 10/20/60 m grids plus SCL
as Cloud-Optimized GeoTIFFs (uint16 DN, reflectance = DN * 0.0001 - 0.1), one STAC item JSON per
scene, a DEM and the ground-truth slump polygons.

The landscape sits on the Yukon coastal plain at the UTM zone 7/8 boundary (138 W, 69 N), a real
thaw-slump region, and is seen by two overlapping MGRS tiles in different UTM zones, on several
summer dates (one clearly least cloudy, never perfectly clear) and on out-of-season snow dates
that a season filter must reject.

Why it is built the way it is (so a demo score means something):

* Slumps are horseshoe scars of wet bare mud on valley slopes, opening downslope, with a bright
  headwall rim and a darker flow lobe; 0.3-40 ha, most of them a few hectares.
* Every single band is ambiguous: wet riverbanks share the slump spectrum, gravel bars and flat
  bare soil patches are drier variants, lichen heath is as red as a slump, water is as dark in NIR,
  melting snow patches on the same slopes leave wet soil fringes, and thin cloud edges and shadow
  edges (not flagged in SCL, as with Sen2Cor) shift every band. Only spectrum *and* shape and
  context together single slumps out.
* Illumination (sun elevation, terrain shading, haze) and phenology (greenness) vary by date.

Independent scenes for training come from another ``seed``: the same two tiles and dates, but
new terrain, slump layout, look-alikes and clouds. The bundled demo weights must be trained on
seeds other than :data:`DEMO_SEED`.

All randomness flows from one ``numpy`` generator per component, so the same seed gives
byte-identical rasters.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import itertools
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import scipy.fft
import shapely
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.transform import Affine
from rasterio.warp import Resampling, reproject
from scipy import ndimage
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from arctic_rts.bands import L2A_BANDS, RESOLUTION_M
from arctic_rts.errors import ConfigError

__all__ = [
    "DEFAULT_SIZE_PX",
    "DEMO_SEED",
    "GENERATOR_VERSION",
    "DemoCatalog",
    "generate_demo",
]

#: Bumped whenever the generated scenes change; a catalog of another version is regenerated.
GENERATOR_VERSION = "1.0.2"
#: The seed of the demo's own scenes. Train demo weights on other seeds.
DEMO_SEED = 2021
#: Scene edge in 10 m pixels (a multiple of 6 so the 60 m bands tile it exactly).
DEFAULT_SIZE_PX = 1008

_MANIFEST = "demo_manifest.json"
_F32 = NDArray[np.float32]
_F64 = NDArray[np.float64]

# ---------------------------------------------------------------------------------------------
# Sentinel-2 metadata as Earth Search v1 writes it
# ---------------------------------------------------------------------------------------------

#: Canonical band -> (Earth Search v1 asset key, title, common name, centre um, FWHM um).
_BAND_META: dict[str, tuple[str, str, str, float, float]] = {
    "B01": ("coastal", "Coastal - 60m", "coastal", 0.443, 0.027),
    "B02": ("blue", "Blue - 10m", "blue", 0.49, 0.098),
    "B03": ("green", "Green - 10m", "green", 0.56, 0.045),
    "B04": ("red", "Red - 10m", "red", 0.665, 0.038),
    "B05": ("rededge1", "Red Edge 1 - 20m", "rededge", 0.704, 0.019),
    "B06": ("rededge2", "Red Edge 2 - 20m", "rededge", 0.74, 0.018),
    "B07": ("rededge3", "Red Edge 3 - 20m", "rededge", 0.783, 0.028),
    "B08": ("nir", "NIR 1 - 10m", "nir", 0.842, 0.145),
    "B8A": ("nir08", "NIR 2 - 20m", "nir08", 0.865, 0.033),
    "B09": ("nir09", "NIR 3 - 60m", "nir09", 0.945, 0.026),
    "B11": ("swir16", "SWIR 1.6\u03bcm - 20m", "swir16", 1.61, 0.143),
    "B12": ("swir22", "SWIR 2.2\u03bcm - 20m", "swir22", 2.19, 0.242),
}
_STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/sentinel-2/v1.0.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
]
_COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
#: Baseline >= 04.00: L2A DN carry a +1000 offset, i.e. reflectance = DN * 1e-4 - 0.1.
_SCALE, _OFFSET = 0.0001, -0.1
_PROCESSING_BASELINE = "05.00"

# ---------------------------------------------------------------------------------------------
# Spectral library: surface reflectance x 1000 per endmember, bands in L2A_BANDS order
# (B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12). Slump and background values follow the
# medians measured on real labelled chips (shared/data/README.md): slump B4 0.083, B8 0.13,
# B11 0.159; background B4 0.049, B8 0.21, B11 0.20; NDVI 0.17 vs 0.59.
# ---------------------------------------------------------------------------------------------

_SPECTRA_PERMILLE: dict[str, tuple[int, ...]] = {
    # vegetation at peak green and senescent (phenology mixes the pair)
    "tundra_g": ( 30,  32,  58,  45, 100, 200, 235, 250, 262, 262, 205, 105),
    "tundra_b": ( 45,  50,  70,  80, 110, 150, 170, 185, 192, 192, 235, 150),
    "shrub_g":  ( 22,  24,  50,  30,  90, 230, 290, 310, 322, 322, 180,  80),
    "shrub_b":  ( 35,  40,  60,  60, 100, 170, 200, 215, 222, 222, 215, 125),
    "heath_g":  ( 60,  65,  85,  90, 125, 165, 185, 195, 200, 200, 245, 165),
    "heath_b":  ( 65,  70,  88, 100, 130, 155, 170, 178, 183, 183, 255, 180),
    "sedge_g":  ( 25,  28,  50,  38,  75, 130, 150, 158, 165, 160, 120,  60),
    "sedge_b":  ( 33,  38,  55,  55,  80, 110, 122, 130, 135, 132, 150,  90),
    # water
    "lake":     ( 45,  40,  40,  28,  22,  18,  16,  14,  12,  10,   8,   6),
    "river":    ( 70,  70,  90,  80,  75,  55,  45,  40,  35,  25,  12,   8),
    # thaw slump parts
    "mud":      ( 58,  60,  74,  83,  98, 112, 122, 128, 133, 133, 150, 118),
    "headwall": ( 85,  90, 108, 122, 138, 152, 162, 168, 173, 170, 215, 175),
    "lobe":     ( 50,  50,  62,  68,  80,  92, 100, 104, 107, 105, 118,  90),
    # look-alikes
    "bare_dry": ( 75,  78,  95, 108, 125, 140, 150, 158, 163, 160, 245, 205),
    "gravel":   ( 90,  95, 112, 125, 140, 152, 160, 165, 170, 165, 230, 195),
    "bank_mud": ( 55,  58,  72,  80,  95, 108, 118, 124, 128, 126, 142, 110),
    "snow":     (850, 870, 860, 830, 810, 790, 770, 750, 730, 640,  90,  70),
    "cloud":    (600, 580, 570, 560, 560, 560, 560, 560, 555, 500, 420, 320),
}  # fmt: skip
_SPECTRA: dict[str, tuple[float, ...]] = {
    k: tuple(v / 1000 for v in vals) for k, vals in _SPECTRA_PERMILLE.items()
}
#: Ground endmembers in the order of the weight stack; vegetation classes appear once and take
#: their date's green/brown mixture.
_CLASSES: tuple[str, ...] = (
    "tundra", "shrub", "heath", "sedge", "lake", "river", "mud", "headwall", "lobe",
    "bare_dry", "gravel", "bank_mud", "snow",
)  # fmt: skip
_CI = {name: i for i, name in enumerate(_CLASSES)}
_VEG = ("tundra", "shrub", "heath", "sedge")
_BI = {b: i for i, b in enumerate(L2A_BANDS)}

# ---------------------------------------------------------------------------------------------
# Geography and acquisition plan
# ---------------------------------------------------------------------------------------------

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
#: Greenness by day of year (0: senescent, 1: peak green), piecewise linear.
_PHENOLOGY = ((150, 0.0), (170, 0.45), (195, 1.0), (215, 0.9), (235, 0.6), (260, 0.2))

_LAT_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
_COL_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")


@dataclass(frozen=True)
class DemoCatalog:
    """A generated demo catalog on disk.

    Attributes:
        root: The catalog folder (owned by the generator: regenerating replaces it).
        item_paths: One STAC item JSON per scene, all in ``root / "items"``; asset hrefs are
            relative to the item file, so the folder can move.
        truth_path: GeoPackage (EPSG:4326) of the true slumps of every year, columns
            ``slump_id``, ``year``, ``area_m2`` (EPSG:6931), ``change`` (``initial``,
            ``stable``, ``grown`` or ``new``; a slump that vanished has no row that year),
            ``geometry``.
        dem_path: Float32 DEM COG in EPSG:4326 (Copernicus GLO-30-like spacing) over ``bbox``.
        bbox: ``(west, south, east, north)`` covering both tiles: the default map area.
        years: The years that have scenes and truth.
    """

    root: Path
    item_paths: list[Path]
    truth_path: Path
    dem_path: Path
    bbox: tuple[float, float, float, float]
    years: tuple[int, ...]
    seed: int = DEMO_SEED
    size_px: int = DEFAULT_SIZE_PX
    tiles: tuple[str, ...] = field(default=())

    @property
    def items_dir(self) -> Path:
        """The folder of item JSON files (what ``catalog.serve_catalog`` takes)."""
        return self.root / "items"


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------


def generate_demo(
    root: Path | str,
    *,
    seed: int = DEMO_SEED,
    years: Sequence[int] = (2021,),
    size_px: int = DEFAULT_SIZE_PX,
) -> DemoCatalog:
    """Generate (or reuse) a synthetic Sentinel-2 L2A demo catalog in ``root``.

    If ``root`` already holds a complete catalog made with the same parameters and generator
    version, it is returned as is, without rewriting a file. Otherwise the catalog is written to
    a temporary sibling folder and renamed into place, so a crash never leaves half a catalog.

    Another ``seed`` gives independent scenes (terrain, slumps, look-alikes, clouds) over the
    same tiles and dates: use seeds other than :data:`DEMO_SEED` to train demo weights.

    Args:
        root: Folder for the catalog. It must be absent, empty or an earlier demo catalog.
        seed: Seed of every random choice; the same seed gives byte-identical rasters.
        years: Increasing years (2017 or later) with scenes; slumps grow, appear and vanish
            from one year to the next.
        size_px: Scene edge in 10 m pixels, a multiple of 6 from 120 (tests) to 3000.

    Returns:
        The catalog's paths, default bbox and years.

    Raises:
        ConfigError: Invalid parameters, or ``root`` holds files that are no demo catalog.
    """
    root = Path(root)
    params = _check_params(seed, years, size_px)
    existing = _read_manifest(root)
    if existing is not None and existing.get("params") == params:
        catalog = _catalog_from_manifest(root, existing)
        if catalog is not None:
            return catalog
    if root.exists() and any(root.iterdir()) and existing is None:
        raise ConfigError(
            f"{root} is not empty and holds no demo catalog ({_MANIFEST} missing); "
            "pass an empty or new folder, or delete it."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        manifest = _write_catalog(tmp, params)
        with _folder_lock(root.parent):
            # Another process may have put the same catalog in place while this one wrote:
            # readers may already use it, so keep theirs and never swap it away.
            theirs = _read_manifest(root)
            if (
                theirs is not None
                and theirs.get("params") == params
                and _catalog_from_manifest(root, theirs) is not None
            ):
                manifest = theirs
            elif root.exists() and any(root.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
                os.replace(root, old / "catalog")
                os.replace(tmp, root)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, root)  # replaces an empty folder
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    catalog = _catalog_from_manifest(root, manifest)
    if catalog is None:  # pragma: no cover - only if the disk changed under us
        raise ConfigError(f"the demo catalog in {root} vanished while it was written; run again.")
    return catalog


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` itself (no lock file is left behind).

    It serialises the swap of finished catalogs between processes sharing one parent folder; the
    operating system releases it when the holder dies.
    """
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _check_params(seed: int, years: Sequence[int], size_px: int) -> dict[str, Any]:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    ys = tuple(int(y) for y in years)
    if not ys:
        raise ConfigError("years must name at least one year, e.g. (2021,).")
    if any(b <= a for a, b in itertools.pairwise(ys)):
        raise ConfigError(f"years must be strictly increasing, got {list(ys)}.")
    if ys[0] < 2017 or ys[-1] > 2100:
        raise ConfigError(f"years must lie in 2017-2100 (Sentinel-2 L2A), got {list(ys)}.")
    if isinstance(size_px, bool) or not isinstance(size_px, int | np.integer):
        raise ConfigError(f"size_px must be an integer, got {size_px!r}.")
    if size_px < 120 or size_px > 3000 or size_px % 6:
        raise ConfigError(
            f"size_px must be a multiple of 6 between 120 and 3000 (60 m bands tile the scene "
            f"exactly), got {size_px}; the default is {DEFAULT_SIZE_PX}."
        )
    return {
        "seed": int(seed),
        "years": list(ys),
        "size_px": int(size_px),
        "generator_version": GENERATOR_VERSION,
    }


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / _MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _catalog_from_manifest(root: Path, manifest: dict[str, Any]) -> DemoCatalog | None:
    """Build the catalog object, or None when a listed file is missing (then regenerate)."""
    try:
        files = [root / f for f in manifest["files"]]
        if not all(f.is_file() for f in files):
            return None
        params = manifest["params"]
        return DemoCatalog(
            root=root,
            item_paths=[root / p for p in manifest["items"]],
            truth_path=root / manifest["truth"],
            dem_path=root / manifest["dem"],
            bbox=tuple(manifest["bbox"]),  # type: ignore[arg-type]
            years=tuple(params["years"]),
            seed=params["seed"],
            size_px=params["size_px"],
            tiles=tuple(manifest["tiles"]),
        )
    except (KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Noise and small numeric helpers
# ---------------------------------------------------------------------------------------------


def _noise(
    rng: np.random.Generator, shape: tuple[int, int], scale_px: float, beta: float = 3.0
) -> _F32:
    """Zero-mean, unit-variance fractal noise whose largest structures span ``scale_px``."""
    ny, nx = shape
    white = rng.standard_normal(shape, dtype=np.float32)
    spec = scipy.fft.rfft2(white, workers=1)
    ky = np.fft.fftfreq(ny).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(nx).astype(np.float32)[None, :]
    k0 = np.float32(1.0 / max(scale_px, 2.0))
    spec *= (kx * kx + ky * ky + k0 * k0) ** np.float32(-beta / 4.0)
    out = scipy.fft.irfft2(spec, s=shape, workers=1)
    out -= out.mean()
    std = out.std()
    return (out / (std if std > 0 else 1.0)).astype(np.float32)


def _smoothstep(x: NDArray[Any]) -> _F32:
    t = np.clip(x, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


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


def _sun_position(when: dt.datetime, lon: float, lat: float) -> tuple[float, float]:
    """Approximate solar (elevation, azimuth) in degrees; good to a degree or two."""
    doy = when.timetuple().tm_yday
    hours = when.hour + when.minute / 60 + when.second / 3600
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365)
    hour_angle = math.radians(15 * (hours + lon / 15 - 12))
    phi = math.radians(lat)
    sin_e = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    elev = math.asin(sin_e)
    az = math.atan2(
        -math.sin(hour_angle),
        math.tan(decl) * math.cos(phi) - math.sin(phi) * math.cos(hour_angle),
    )
    return math.degrees(elev), (math.degrees(az) + 360) % 360


def _greenness(doy: int) -> float:
    xs, ys = zip(*_PHENOLOGY, strict=True)
    return float(np.interp(doy, xs, ys))


# ---------------------------------------------------------------------------------------------
# The landscape (one "master" grid in the western tile's UTM zone holds the ground truth of
# everything; each tile samples it onto its own grid)
# ---------------------------------------------------------------------------------------------


@dataclass
class _Slump:
    slump_id: int
    shape: Polygon  # outline in the master CRS, year of appearance
    rim: BaseGeometry  # the bright headwall band
    lobe: BaseGeometry  # the flow lobe beyond the mouth
    tip: tuple[float, float]  # downslope end, the anchor of growth
    veg: float  # share of vegetation left inside the scar
    wet: float  # 0..1: how much of the floor is dark, wet mud
    gain: float  # overall brightness of this scar's sediments
    first_year_index: int = 0
    vanish_year_index: int | None = None
    growth: list[float] = field(default_factory=list)  # area factor per later year


@dataclass
class _Landscape:
    grid: _Grid
    fields: dict[str, _F32]  # static per-pixel fields on the master grid
    slumps: list[_Slump]
    snow_depth: _F32


def _build_landscape(
    rng: np.random.Generator, tiles: list[_Tile], n_years: int, size_px: int
) -> _Landscape:
    """Terrain, rivers, lakes, land cover, look-alikes and slumps on the master grid."""
    master_epsg = tiles[0].grid.epsg
    # The master grid covers both tile scenes plus margin, aligned with tile 1's pixels so that
    # tile 1 samples it exactly.
    polys = [_transform_geom(box(*t.grid.bounds()), t.grid.epsg, master_epsg) for t in tiles]
    # ... and the DEM's lon/lat box, which overhangs the rotated footprints at its corners
    dem_box = box(*_dem_grid(tiles)[1].bounds()).segmentize(1e-3)
    polys.append(_transform_geom(dem_box, 4326, master_epsg))
    xmin, ymin, xmax, ymax = shapely.union_all(polys).buffer(300.0).bounds
    g1 = tiles[0].grid
    left = math.ceil((g1.x0 - xmin) / 10.0)
    top = math.ceil((ymax - g1.y0) / 10.0)
    width = left + math.ceil((xmax - g1.x0) / 10.0)
    height = top + math.ceil((g1.y0 - ymin) / 10.0)
    grid = _Grid(master_epsg, g1.x0 - left * 10.0, g1.y0 + top * 10.0, 10.0, height, width)
    shape = (height, width)
    res = grid.res
    ys = grid.y0 - (np.arange(height) + 0.5) * res
    xs = grid.x0 + (np.arange(width) + 0.5) * res

    # --- rivers: meandering channels flowing north, valleys carved around them
    n_rivers = max(1, round(width * res / 4500.0))
    lines = []
    for i in range(n_rivers):
        x_start = grid.x0 + (i + 0.5) / n_rivers * width * res + rng.normal(0, 400)
        a1, l1, p1 = rng.uniform(250, 550), rng.uniform(3000, 6000), rng.uniform(0, 2 * np.pi)
        a2, l2, p2 = rng.uniform(60, 140), rng.uniform(700, 1300), rng.uniform(0, 2 * np.pi)
        drift = rng.uniform(-0.12, 0.12)
        yy = np.linspace(ys[-1] - 500, ys[0] + 500, 400)
        t = yy - yy[0]
        xx = (
            x_start
            + drift * t
            + a1 * np.sin(2 * np.pi * t / l1 + p1)
            + a2 * np.sin(2 * np.pi * t / l2 + p2)
        )
        lines.append(LineString(np.column_stack([xx, yy])))
    centre = rasterize(
        [(ln, 1) for ln in lines], out_shape=shape, transform=grid.transform, all_touched=True,
        dtype="uint8",
    )  # fmt: skip
    d_river = (ndimage.distance_transform_edt(centre == 0) * res).astype(np.float32)

    # --- terrain: low rolling plain rising inland, valleys with flat floors and 4-12 deg sides
    n_relief = _noise(rng, shape, 1500, beta=3.6)  # gentle: uplands stay below ~2 deg
    n_rough = _noise(rng, shape, 30, beta=2.0)
    z = 55.0 + 6.0 * n_relief + 0.003 * (ys[:, None] - ys.mean()) * -1.0 + 0.4 * n_rough
    n_floor = _noise(rng, shape, 300, beta=3.0)
    n_side = _noise(rng, shape, 400, beta=3.0)
    floor_w = 90.0 + 40.0 * n_floor
    side_w = np.clip(330.0 + 80.0 * n_side, 200.0, 480.0)
    depth = 32.0 + 5.0 * _noise(rng, shape, 800, beta=3.0)
    prof = np.where(
        d_river <= floor_w,
        1.0,
        0.5 * (1 + np.cos(np.pi * np.clip((d_river - floor_w) / side_w, 0.0, 1.0))),
    )
    z = np.maximum(z - depth * prof, 1.0 + 0.3 * n_rough)  # rivers near sea level, not below
    valley = (prof > 0.02).astype(np.float32)

    # --- water: channel (turbid) and thermokarst lakes on flat uplands (clear)
    river_hw = 10.0 + 6.0 * (_noise(rng, shape, 500) > 0.5)
    river = _smoothstep((river_hw - d_river) / 10.0 + 0.5)
    slope0, _ = _slope_aspect(ndimage.gaussian_filter(z, 3).astype(np.float32), res)
    upland_flat = (slope0 < 1.5) & (valley < 0.01)
    lakes: list[BaseGeometry] = []
    n_lakes = max(1, round(width * height * res * res / 1e6 / 12.0))
    for _ in range(n_lakes * 20):
        if len(lakes) >= n_lakes:
            break
        r, c = int(rng.integers(0, height)), int(rng.integers(0, width))
        if not upland_flat[r, c] or d_river[r, c] < 700:
            continue
        a = rng.uniform(80, 330)
        lake = _blob(rng, xs[c], ys[r], a, a * rng.uniform(0.5, 0.9), rng.uniform(0, 180))
        if any(lake.distance(o) < 150 for o in lakes):
            continue
        lakes.append(lake)
    lake_frac = _rasterize_frac(lakes, grid)
    # Lakes sit in flat basins: level the DEM under each lake.
    for lake in lakes:
        win = _window(lake.buffer(20), grid)
        if win is None:
            continue
        (r0, r1, c0, c1), sub = win
        m = _rasterize_frac([lake.buffer(20)], sub) > 0
        if m.any():
            zz = z[r0:r1, c0:c1]
            zz[m] = np.percentile(zz[m], 20) - 1.0
    lake_shore = np.clip(_rasterize_frac([lk.buffer(25) for lk in lakes], grid) - lake_frac, 0, 1)

    # --- land cover: spatially structured mixtures of four vegetation types
    dem_s = ndimage.gaussian_filter(z, 2).astype(np.float32)
    slope, aspect = _slope_aspect(dem_s, res)
    n1, n2, n3 = (_noise(rng, shape, s, beta=2.6) for s in (250, 180, 350))
    wet = ndimage.gaussian_filter(-z, 8)  # low ground is wetter
    wet = (wet - wet.mean()) / (wet.std() + 1e-6)
    shrub = _smoothstep(0.5 + 0.4 * n1 + 0.8 * valley - 0.3)
    heath = _smoothstep(0.5 + 0.45 * n2 - 0.35 * wet - 0.6 * valley)
    sedge = _smoothstep(0.5 + 0.5 * n3 + 0.5 * wet - 0.35) * (slope < 3)
    tundra = np.full(shape, 0.6, np.float32)

    # --- look-alikes along rivers: wet mud banks next to the channel, gravel bars on the floor
    n_bank = _noise(rng, shape, 40, beta=2.2)
    n_gravel = _noise(rng, shape, 60, beta=2.4)
    near = (d_river > river_hw - 4) & (d_river < river_hw + 28)
    bank = _smoothstep(1.2 * n_bank + 0.2) * near
    floor_zone = _smoothstep((floor_w + 30 - d_river) / 40.0)
    gravel = _smoothstep(1.4 * (n_gravel - 0.55)) * floor_zone * (d_river > river_hw)

    # --- flat bare soil patches (frost boils, disturbance): round, on flat uplands, drier
    patches: list[BaseGeometry] = []
    patch_vals: list[float] = []
    area_km2 = width * height * res * res / 1e6
    n_patches = max(3, round(area_km2 * 0.22))
    for _ in range(n_patches * 30):
        if len(patches) >= n_patches:
            break
        r, c = rng.integers(0, height), rng.integers(0, width)
        if slope[r, c] > 2.0 or lake_frac[r, c] > 0 or d_river[r, c] < 250:
            continue
        rad = math.exp(rng.uniform(math.log(28), math.log(120)))
        p = _blob(rng, xs[c], ys[r], rad, rad * rng.uniform(0.7, 1.0), rng.uniform(0, 180))
        if any(p.distance(o) < 60 for o in patches):
            continue
        patches.append(p)
        patch_vals.append(float(rng.uniform(0.65, 1.0)))
    bare_dry = _rasterize_frac(patches, grid, values=patch_vals)

    # --- late-lying snow banks: on the same valley slopes as slumps, in the lee (north-facing)
    snow_depth = np.zeros(shape, np.float32)
    n_snow = max(2, round(area_km2 * 0.22))
    placed = 0
    for _ in range(n_snow * 40):
        if placed >= n_snow:
            break
        r, c = rng.integers(0, height), rng.integers(0, width)
        if not 3.0 <= slope[r, c] <= 15.0 or abs(_wrap(aspect[r, c])) > 1.6:
            continue
        a = rng.uniform(35, 140)
        b = a * rng.uniform(0.3, 0.6)
        theta = aspect[r, c]  # long axis along the contour
        r0, r1 = max(0, r - 20), min(height, r + 21)
        c0, c1 = max(0, c - 20), min(width, c + 21)
        yy, xx = np.mgrid[r0:r1, c0:c1]
        dx = (xx - c) * res
        dy = -(yy - r) * res
        along = dx * math.cos(theta) - dy * math.sin(theta)
        across = dx * math.sin(theta) + dy * math.cos(theta)
        rr = (along / a) ** 2 + (across / b) ** 2
        depth_patch = np.clip(1 - rr, 0, 1) ** 0.7
        snow_depth[r0:r1, c0:c1] = np.maximum(snow_depth[r0:r1, c0:c1], depth_patch)
        placed += 1
    snow_depth *= 1.0 + 0.15 * _noise(rng, shape, 20, beta=2.0)

    fields = {
        "dem": z.astype(np.float32),
        "dem_s": dem_s,
        "slope": slope,
        "tundra": tundra,
        "shrub": shrub,
        "heath": heath,
        "sedge": sedge,
        "lake": lake_frac,
        "river": river.astype(np.float32),
        "bank": (np.maximum(bank, 0.6 * lake_shore)).astype(np.float32),
        # the floodplain (channel, banks, bars), where slumps do not reach
        "floodplain": (d_river < river_hw + 60).astype(np.float32),
        "gravel": gravel.astype(np.float32),
        "bare_dry": bare_dry,
        "texture": _noise(rng, shape, 6, beta=1.6),
        "moisture": _noise(rng, shape, 150, beta=2.4),
        "mud_mix": _noise(rng, shape, 15, beta=2.0),
    }
    slumps = _place_slumps(rng, grid, fields, tiles, n_years, size_px)
    return _Landscape(grid, fields, slumps, snow_depth)


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _blob(
    rng: np.random.Generator, x: float, y: float, a: float, b: float, rot_deg: float
) -> Polygon:
    """An irregular ellipse: radius modulated by a few random harmonics."""
    phi = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    rad = np.ones_like(phi)
    for k in (2, 3, 5):
        rad += rng.uniform(0, 0.08) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    p = Polygon(np.column_stack([a * rad * np.cos(phi), b * rad * np.sin(phi)]))
    p = shapely.affinity.rotate(p, rot_deg, origin=(0, 0))
    return shapely.affinity.translate(p, x, y)


def _slump_area_m2(rng: np.random.Generator) -> float:
    """0.3-40 ha, log-triangular with mode 1.5 ha: most slumps are small, a few large."""
    lo, mode, hi = math.log10(0.3), math.log10(1.5), math.log10(40.0)
    return float(10 ** rng.triangular(lo, mode, hi) * 1e4)


def _slump_outline(rng: np.random.Generator) -> tuple[Polygon, float, float]:
    """Unit-radius horseshoe scar in local coordinates (x downslope, y across).

    Returns the outline, the x of the mouth (where the flow lobe begins) and the lobe tip x.
    """
    harm = [(k, rng.uniform(0, 0.06), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4, 6)]
    phi_max = rng.uniform(1.75, 2.0)  # the headwall wraps a bit beyond the half circle

    def radius(p: NDArray[np.float64]) -> NDArray[np.float64]:
        r = np.ones_like(p)
        for k, a, ph in harm:
            r += a * np.cos(k * p + ph)
        return r

    phi = np.linspace(-phi_max, phi_max, 41)
    rad = radius(phi)
    head = np.column_stack([-rad * np.cos(phi), rad * np.sin(phi)])  # x<0: upslope
    mouth_x = rng.uniform(0.55, 0.9)
    mouth_w = rng.uniform(0.45, 0.7)
    lobe_len = rng.uniform(0.5, 1.1)
    tip_x = mouth_x + lobe_len
    bulge = rng.uniform(0.9, 1.25)
    right = [
        (mouth_x, mouth_w),
        (mouth_x + 0.5 * lobe_len, mouth_w * bulge),
        (tip_x - 0.1 * lobe_len, 0.45 * mouth_w),
        (tip_x, rng.uniform(-0.1, 0.1)),
    ]
    left = [(x, -y * rng.uniform(0.85, 1.15)) for x, y in right[:-1][::-1]]
    # head runs from y<0 (phi<0) to y>0 (phi>0); continue down the right side, tip, left side
    coords = [*map(tuple, head), *right, *left]
    poly = Polygon(coords).buffer(0.08, 8).buffer(-0.08, 8)
    if not isinstance(poly, Polygon):  # pragma: no cover - smoothing split it: keep the largest
        poly = max(getattr(poly, "geoms", [poly]), key=lambda g: g.area)
    return poly, mouth_x, tip_x


def _place_slumps(
    rng: np.random.Generator,
    grid: _Grid,
    fields: dict[str, _F32],
    tiles: list[_Tile],
    n_years: int,
    size_px: int,
) -> list[_Slump]:
    """Put horseshoe scars on valley slopes, each fully inside the valid area of some tile.

    The first ``n_target`` slumps exist from the first year; reserve ones appear later. Each
    slump's growth over all years is drawn up front, so the grown scar also fits.
    """
    res = grid.res
    slope = fields["slope"]
    water = fields["lake"] + fields["river"] + fields["floodplain"]
    _, aspect_s = _slope_aspect(ndimage.gaussian_filter(fields["dem"], 6), res)
    valid_areas = [_transform_geom(t.valid, t.grid.epsg, grid.epsg).buffer(-40.0) for t in tiles]
    valid_union = shapely.union_all(valid_areas)
    scene_km2 = (size_px * 10 / 1000) ** 2
    n_target = max(4, round(scene_km2 * 0.30))
    # Small test scenes get small slumps, so slumps stay a small share of the scene.
    max_area = min(400_000.0, max(5000.0, 0.01 * scene_km2 * 1e6))
    n_new = [max(1, round(n_target * 0.12)) for _ in range(n_years - 1)]
    first_years = [0] * n_target + [yi + 1 for yi, n in enumerate(n_new) for _ in range(n)]
    areas = sorted((min(_slump_area_m2(rng), max_area) for _ in range(n_target)), reverse=True)
    areas += [min(_slump_area_m2(rng), max_area) for _ in first_years[n_target:]]

    cand = np.flatnonzero(((slope > 3.5) & (slope < 14.0) & (water < 0.01)).ravel())
    if cand.size == 0:
        raise ConfigError("the generated terrain has no slopes for slumps; try another seed.")
    order = rng.permutation(cand)
    slumps: list[_Slump] = []
    keepout: list[BaseGeometry] = []
    ai, tries = 0, 0
    for idx in order:
        if ai >= len(areas):
            break
        tries += 1
        if tries > 60:  # no room for this size here: try it smaller (never below 0.3 ha)
            areas[ai] = max(3000.0, areas[ai] * 0.8)
            tries = 0
        r, c = divmod(int(idx), grid.width)
        x = grid.x0 + (c + 0.5) * res
        y = grid.y0 - (r + 0.5) * res
        if not valid_union.contains(Point(x, y)):
            continue
        unit, mouth_x, tip_x = _slump_outline(rng)
        radius = math.sqrt(areas[ai] / unit.area)
        # local +x (downslope) must point along the azimuth of steepest descent
        rot = 90.0 - math.degrees(float(aspect_s[r, c]))
        # Every other slump grows fast (>15 % a year, headwall retreat), the rest barely.
        grows = (ai % 2 == 0) if ai < n_target else bool(rng.uniform() < 0.5)
        growth = [1.0] + [
            float(rng.uniform(1.15, 1.6) if grows else rng.uniform(1.0, 1.04))
            for _ in range(n_years - 1)
        ]
        lin = math.sqrt(math.prod(growth[first_years[ai] + 1 :]))

        def place(
            g: BaseGeometry, rad: float = radius, rt: float = rot, cx: float = x, cy: float = y
        ) -> BaseGeometry:
            g = shapely.affinity.scale(g, rad, rad, origin=(0, 0))
            return shapely.affinity.translate(shapely.affinity.rotate(g, rt, origin=(0, 0)), cx, cy)

        shape = place(unit)
        tip = _rotate_point(tip_x * radius, 0.0, rot, x, y)
        grown = shapely.affinity.scale(shape, lin, lin, origin=tip)
        if not any(v.contains(grown) for v in valid_areas):
            continue
        if any(grown.distance(k) < 60.0 for k in keepout):
            continue
        if _mean_on(water, grown, grid) > 0.01 or _mean_on(slope, shape, grid) < 2.5:
            continue
        rim_w = min(25.0, max(12.0, 0.18 * radius))
        rim = shape.difference(shape.buffer(-rim_w)).intersection(place(box(-3, -3, 0.15, 3)))
        lobe = shape.intersection(place(box(mouth_x, -3, 5, 3)))
        slumps.append(
            _Slump(
                slump_id=len(slumps) + 1, shape=shape, rim=rim, lobe=lobe, tip=tip,
                veg=float(rng.uniform(0.0, 0.25)), wet=float(rng.uniform(0.0, 1.0)),
                gain=float(rng.uniform(0.82, 1.18)), first_year_index=first_years[ai],
                growth=growth,
            )
        )  # fmt: skip
        keepout.append(grown)
        ai, tries = ai + 1, 0
    # A few of the first year's slumps stabilise and revegetate in each later year.
    initial = [s for s in slumps if s.first_year_index == 0]
    for yi in range(1, n_years):
        alive = [s for s in initial if s.vanish_year_index is None]
        n_vanish = max(1, round(len(alive) * 0.1)) if len(alive) > 2 else 0
        for i in rng.choice(len(alive), n_vanish, replace=False):
            alive[int(i)].vanish_year_index = yi
    return slumps


def _rotate_point(px: float, py: float, rot_deg: float, x: float, y: float) -> tuple[float, float]:
    a = math.radians(rot_deg)
    return (x + px * math.cos(a) - py * math.sin(a), y + px * math.sin(a) + py * math.cos(a))


def _mean_on(field_: _F32, geom: BaseGeometry, grid: _Grid) -> float:
    """Mean of ``field_`` over the pixels whose centres lie in ``geom``."""
    win = _window(geom, grid)
    if win is None:
        return 0.0
    (r0, r1, c0, c1), sub = win
    m = rasterize([(geom, 1)], out_shape=(sub.height, sub.width), transform=sub.transform,
                  dtype="uint8")  # fmt: skip
    if not m.any():
        return 0.0
    return float(field_[r0:r1, c0:c1][m > 0].mean())


def _slump_state(s: _Slump, year_index: int) -> tuple[BaseGeometry, BaseGeometry, BaseGeometry]:
    """Outline, rim and lobe of a slump in a year (grown about its lobe tip)."""
    f = 1.0
    for yi in range(1, year_index + 1):
        if yi > s.first_year_index:
            f *= s.growth[yi]
    if f == 1.0:
        return s.shape, s.rim, s.lobe
    lin = math.sqrt(f)
    return tuple(  # type: ignore[return-value]
        shapely.affinity.scale(g, lin, lin, origin=s.tip) for g in (s.shape, s.rim, s.lobe)
    )


def _slumps_in_year(land: _Landscape, yi: int) -> list[tuple[_Slump, str]]:
    out = []
    for s in land.slumps:
        if s.first_year_index > yi:
            continue
        if s.vanish_year_index is not None and s.vanish_year_index <= yi:
            continue
        if yi == 0:
            change = "initial"
        elif s.first_year_index == yi:
            change = "new"
        elif s.growth[yi] > 1.10:
            change = "grown"
        else:
            change = "stable"
        out.append((s, change))
    return out


def _slump_fields(land: _Landscape, yi: int) -> dict[str, _F32]:
    """Per-year fields on the master grid: scar parts and revegetated scars."""
    grid = land.grid
    alive = _slumps_in_year(land, yi)
    shapes, rims, lobes = [], [], []
    for s, _ in alive:
        shp, rim, lobe = _slump_state(s, yi)
        shapes.append(shp)
        rims.append(rim)
        lobes.append(lobe)
    full = _rasterize_frac(shapes, grid)
    rim_f = np.minimum(_rasterize_frac(rims, grid), full)
    lobe_f = np.minimum(_rasterize_frac(lobes, grid), full - rim_f)
    # Per-scar properties (vegetation left, wetness, brightness), so scars differ from each other.
    props = {}
    for key in ("veg", "wet", "gain"):
        props[key] = np.zeros_like(full)
        if shapes:
            props[key] = rasterize(
                [(g, getattr(s, key)) for g, (s, _) in zip(shapes, alive, strict=True)],
                out_shape=full.shape, transform=grid.transform, fill=0.0, dtype="float32",
                all_touched=True,
            )  # fmt: skip
    gone = [
        _slump_state(s, s.vanish_year_index - 1)[0]
        for s in land.slumps
        if s.vanish_year_index is not None and s.vanish_year_index <= yi
    ]
    return {
        "scar": full,
        "rim": rim_f,
        "lobe": lobe_f,
        "scar_veg": props["veg"],
        "scar_wet": props["wet"],
        "scar_gain": props["gain"],
        "reveg": _rasterize_frac(gone, grid),
    }


# ---------------------------------------------------------------------------------------------
# Tiles: sample the landscape onto each tile's grid
# ---------------------------------------------------------------------------------------------


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


def _ground_weights(
    land: _Landscape, yfields: dict[str, _F32], where: tuple[Any, Any]
) -> tuple[_F32, _F32]:
    """Endmember weights (n_classes, H, W) summing to 1 on a tile grid, and the snow depth."""
    skip = ("dem", "dem_s", "floodplain")
    f = {k: _sample(v, where) for k, v in land.fields.items() if k not in skip}
    y = {k: _sample(v, where) for k, v in yfields.items()}
    h, w = f["tundra"].shape
    wts = np.zeros((len(_CLASSES), h, w), np.float32)
    for name in _VEG:
        wts[_CI[name]] = f[name]
    veg_sum = wts.sum(axis=0)
    wts /= np.maximum(veg_sum, 1e-6)
    # Revegetated (vanished) scars: vegetation back, some bare mud and lichen still showing.
    reveg = y["reveg"]
    wts *= 1 - 0.35 * reveg
    wts[_CI["heath"]] += 0.2 * reveg
    wts[_CI["mud"]] += 0.15 * reveg

    for name, key in (("bare_dry", "bare_dry"), ("gravel", "gravel"), ("bank_mud", "bank")):
        _cover(wts, name, f[key])
    # The scar: mud floor with patches of wetter mud, bright headwall rim, dark lobe, and some
    # vegetation left on the floor (older slumps).
    scar, rim, lobe = y["scar"], y["rim"], y["lobe"]
    floor = np.clip(scar - rim - lobe, 0, 1)
    mixw = _smoothstep(0.5 + 0.5 * f["mud_mix"])
    keep = 1 - scar
    wts *= keep
    vegf = y["scar_veg"] * floor
    wetf = np.clip(mixw * (0.3 + 0.7 * y["scar_wet"]), 0, 1)
    gain = np.where(scar > 0, y["scar_gain"], 1.0)
    wts[_CI["tundra"]] += vegf
    wts[_CI["mud"]] += (floor - vegf) * (1 - wetf) * gain
    wts[_CI["lobe"]] += ((floor - vegf) * wetf + lobe) * gain
    wts[_CI["headwall"]] += rim * gain
    _cover(wts, "river", f["river"])
    _cover(wts, "lake", f["lake"])
    # Brightness texture in every class (soil moisture, microtopography).
    wts *= 1 + 0.09 * f["texture"][None] + 0.06 * f["moisture"][None]
    return wts, _sample(land.snow_depth, where)


def _cover(wts: _F32, name: str, frac: _F32) -> None:
    """Let class ``name`` cover ``frac`` of each pixel, shrinking the others (in place)."""
    frac = np.clip(frac, 0.0, 1.0)
    wts *= 1 - frac
    wts[_CI[name]] += frac


# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------


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


def _scene_reflectance(
    rng: np.random.Generator,
    acq: _Acq,
    wts: _F32,
    snow_depth: _F32,
    slope: _F32,
    aspect: _F32,
) -> tuple[_F32, _F32, _F32, float, float]:
    """Top-of-canopy reflectance (12, H, W) at 10 m with clouds, plus cloud and shadow alpha."""
    h, w = wts.shape[1:]
    lon, lat = _CENTER_LONLAT
    elev, az = _sun_position(acq.when, lon, lat)
    doy = acq.when.timetuple().tm_yday
    green = _greenness(doy)
    spectra = np.zeros((len(_CLASSES), len(L2A_BANDS)), np.float32)
    for name, i in _CI.items():
        if name in _VEG:
            spectra[i] = green * np.array(_SPECTRA[name + "_g"]) + (1 - green) * np.array(
                _SPECTRA[name + "_b"]
            )
        else:
            spectra[i] = _SPECTRA[name]
    # Snow: summer banks melt back through the season; out of season the land is snow-covered
    # except wind-blown ridges, and lakes are frozen.
    wts = wts.copy()
    if acq.summer:
        melt = float(np.interp(doy, [170, 195, 225], [0.25, 0.6, 0.85]))
        snow = _smoothstep((snow_depth - melt) / 0.12)
        fringe = np.clip((snow_depth - (melt - 0.3)) / 0.3, 0, 1) * (1 - snow)
        wts *= 1 - fringe[None] * 0.6
        wts[_CI["bank_mud"]] += 0.6 * fringe  # snowmelt-soaked soil below the bank
    else:
        exposed = _noise(rng, (h, w), 80, beta=2.6)
        snow = _smoothstep(1.4 - 0.6 * exposed - 0.5 * slope / 10.0)
        snow = np.maximum(snow, np.clip(wts[_CI["lake"]] + wts[_CI["river"]], 0, 1))
    wts *= 1 - snow[None]
    wts[_CI["snow"]] += snow
    refl = np.tensordot(spectra.T, wts, axes=1)  # (bands, H, W)
    # Terrain illumination: direct part follows the local incidence angle, diffuse part does not.
    zen = math.radians(90 - elev)
    s = np.radians(slope)
    cos_i = np.cos(zen) * np.cos(s) + np.sin(zen) * np.sin(s) * np.cos(math.radians(az) - aspect)
    illum = np.clip(0.35 + 0.65 * cos_i / math.cos(zen), 0.3, 1.6).astype(np.float32)
    gain = (1 + rng.normal(0, 0.025, len(L2A_BANDS))).astype(np.float32) * (
        0.92 + 0.16 * math.sin(math.radians(elev))
    )
    refl *= illum[None] * gain[:, None, None]
    haze_amp = float(rng.uniform(0.0, 0.025))
    haze = np.clip(0.6 + 0.4 * _noise(rng, (h, w), 400, beta=3.0), 0, None) * haze_amp
    haze_spec = np.array(
        [1.0, 0.9, 0.7, 0.55, 0.45, 0.4, 0.35, 0.3, 0.3, 0.3, 0.1, 0.05], np.float32
    )
    refl += haze_spec[:, None, None] * haze[None]
    # Clouds: a thresholded fractal field with soft, thin edges; shadows cast away from the sun.
    cloud_alpha, shadow_alpha = _clouds(rng, (h, w), acq.cloud, elev, az)
    cspec = np.array(_SPECTRA["cloud"], np.float32)[:, None, None]
    thick = 0.75 + 0.25 * np.clip(cloud_alpha, 0, 1)
    refl *= 1 - 0.72 * shadow_alpha[None] * np.linspace(0.85, 1.0, len(L2A_BANDS))[:, None, None]
    refl = refl * (1 - cloud_alpha[None]) + cloud_alpha[None] * cspec * thick[None]
    return refl.astype(np.float32), cloud_alpha, shadow_alpha, elev, az


def _clouds(
    rng: np.random.Generator, shape: tuple[int, int], cover: float, elev: float, az: float
) -> tuple[_F32, _F32]:
    """Cloud and shadow opacity (0..1) on a 10 m tile grid for a target cover fraction.

    Clouds are a thresholded fractal field (made at 20 m: they are smooth) with soft, thin
    edges; shadows are the same field displaced away from the sun.
    """
    h, w = shape[0] // 2, shape[1] // 2
    height_m = rng.uniform(1200, 2000)  # cloud-top height
    length_px = height_m / math.tan(math.radians(max(elev, 8))) / 20.0
    dx = -math.sin(math.radians(az)) * length_px
    dy = math.cos(math.radians(az)) * length_px  # rows run south; sun in the south -> shadow north
    pad_r, pad_c = int(abs(dy)) + 2, int(abs(dx)) + 2
    big = _noise(rng, (h + 2 * pad_r, w + 2 * pad_c), 90, beta=3.2)
    big += 0.35 * _noise(rng, big.shape, 12, beta=2.2)
    core = big[pad_r : pad_r + h, pad_c : pad_c + w]
    thr = float(np.quantile(core, 1 - min(max(cover, 1e-4), 0.99)))
    edge = 0.45  # width of the thin fringe, in noise units

    def alpha(a: _F32) -> _F32:
        return _smoothstep((a - thr) / edge + 0.55)

    cloud = alpha(core)
    sr, sc = pad_r + round(dy), pad_c + round(dx)
    shadow = alpha(big[sr : sr + h, sc : sc + w]) * (1 - cloud)
    return _upsample2(cloud, shape), _upsample2(shadow, shape)


def _upsample2(a: _F32, shape: tuple[int, int]) -> _F32:
    """Bilinear 2x upsampling of a 20 m field onto a 10 m grid of ``shape``."""
    out = ndimage.zoom(a, 2, order=1, grid_mode=True, mode="nearest")
    return np.ascontiguousarray(out[: shape[0], : shape[1]], dtype=np.float32)


def _scl(
    bands20: dict[str, _F32], cloud20: _F32, shadow20: _F32, valid20: NDArray[np.bool_]
) -> NDArray[np.uint8]:
    """A Sen2Cor-like scene classification at 20 m from the scene's own reflectance.

    Cloud and shadow flags only cover the opaque cores: their soft edges stay unflagged and
    classed as ground, as Sen2Cor's often are.
    """
    b3, b4, b8a, b11 = bands20["B03"], bands20["B04"], bands20["B8A"], bands20["B11"]
    ndvi = (b8a - b4) / np.maximum(b8a + b4, 1e-6)
    ndsi = (b3 - b11) / np.maximum(b3 + b11, 1e-6)
    ndwi = (b3 - b8a) / np.maximum(b3 + b8a, 1e-6)
    scl = np.where(ndvi >= 0.32, 4, 5).astype(np.uint8)
    scl[(ndwi > 0.1) & (b8a < 0.07)] = 6
    scl[(b8a < 0.04) & (scl != 6)] = 2
    scl[(ndsi > 0.42) & (b3 > 0.25)] = 11
    scl[(shadow20 > 0.5) & (cloud20 < 0.4)] = 3
    scl[cloud20 > 0.4] = 8
    scl[cloud20 > 0.75] = 9
    scl[~valid20] = 0
    return scl


def _valid_mask(tile: _Tile, res: int) -> NDArray[np.bool_]:
    """Valid pixels at ``res``: decided on the 60 m grid, so every band and SCL agree."""
    g60 = tile.grid.coarsen(6)
    if tile.nodata_cut is None:
        valid = np.ones((g60.height, g60.width), bool)
    else:
        cut = rasterize([(tile.nodata_cut, 1)], out_shape=(g60.height, g60.width),
                        transform=g60.transform, dtype="uint8")  # fmt: skip
        valid = cut == 0
    f = 60 // res
    return np.repeat(np.repeat(valid, f, axis=0), f, axis=1)


def _to_dn(refl: _F32, rng: np.random.Generator, valid: NDArray[np.bool_]) -> NDArray[np.uint16]:
    noise = rng.standard_normal(refl.shape, dtype=np.float32) * (0.003 + 0.015 * refl)
    dn = np.rint((refl + noise - _OFFSET) / _SCALE)
    dn = np.clip(dn, 1, 65535).astype(np.uint16)
    dn[~valid] = 0
    return dn


def _write_cog(path: Path, data: NDArray[Any], grid: _Grid, nodata: float | None) -> None:
    profile = {
        "driver": "COG",
        "height": data.shape[0],
        "width": data.shape[1],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": f"EPSG:{grid.epsg}",
        "transform": grid.transform,
        "nodata": nodata,
        "compress": "DEFLATE",
        "predictor": 2,
        "blocksize": 256,
        "overview_resampling": "nearest" if data.dtype == np.uint8 else "average",
        "num_threads": 1,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


# ---------------------------------------------------------------------------------------------
# Writing the catalog
# ---------------------------------------------------------------------------------------------


def _write_catalog(out: Path, params: dict[str, Any]) -> dict[str, Any]:
    seed, years, size_px = params["seed"], params["years"], params["size_px"]
    ss = np.random.SeedSequence([seed, 0x52_54_53])  # "RTS"
    land_seed, plan_seed, scene_seed = ss.spawn(3)
    tiles = _plan_tiles(size_px)
    land = _build_landscape(np.random.default_rng(land_seed), tiles, len(years), size_px)
    acqs = _acquisitions(tiles, years, np.random.default_rng(plan_seed))
    scene_seeds = scene_seed.spawn(len(acqs))
    (out / "items").mkdir(parents=True)
    (out / "cogs").mkdir()
    files: list[str] = []
    items: list[str] = []
    yfields = [_slump_fields(land, yi) for yi in range(len(years))]
    for tile in tiles:
        where = _master_coords(tile, land.grid)
        # Slope and aspect on the tile's own grid (its north differs from the master's).
        slope, aspect = _slope_aspect(_sample(land.fields["dem_s"], where), tile.grid.res)
        for yi, year in enumerate(years):
            wts, snow_depth = _ground_weights(land, yfields[yi], where)
            for ai, acq in enumerate(acqs):
                if acq.tile is not tile or acq.when.year != year:
                    continue
                rng = np.random.default_rng(scene_seeds[ai])
                item = _write_scene(out, acq, rng, wts, snow_depth, slope, aspect)
                items.append(f"items/{item['id']}.json")
                files.append(items[-1])
                files.extend(
                    f"cogs/{item['id']}/{Path(a['href']).name}" for a in item["assets"].values()
                )
    truth = _write_truth(out / "truth.gpkg", land, years)
    dem_rel, bbox = _write_dem(out, land, tiles)
    files += [truth, dem_rel]
    manifest = {
        "params": params,
        "items": sorted(items),
        "truth": truth,
        "dem": dem_rel,
        "bbox": list(bbox),
        "tiles": [t.name for t in tiles],
        "files": sorted(files),
        "synthetic": True,
        "note": "Synthetic Sentinel-2 L2A demo scenes generated by arctic_rts.demo.",
    }
    # The manifest is written last: its presence marks the catalog complete.
    (out / _MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _write_scene(
    out: Path,
    acq: _Acq,
    rng: np.random.Generator,
    wts: _F32,
    snow_depth: _F32,
    slope: _F32,
    aspect: _F32,
) -> dict[str, Any]:
    tile = acq.tile
    g10 = tile.grid
    refl, cloud, shadow, elev, az = _scene_reflectance(rng, acq, wts, snow_depth, slope, aspect)
    item_id = f"S{acq.platform[-2:].upper()}_{tile.name}_{acq.when:%Y%m%d}_0_L2A"
    folder = out / "cogs" / item_id
    folder.mkdir(parents=True)
    valid = {r: _valid_mask(tile, r) for r in (10, 20, 60)}
    bands20: dict[str, _F32] = {}
    assets: dict[str, Any] = {}
    for bi, band in enumerate(L2A_BANDS):
        res = RESOLUTION_M[band]
        f = res // 10
        data = _block_mean(refl[bi], f)
        if res == 20 or band in ("B03", "B04"):
            bands20[band] = _block_mean(refl[bi], 2)
        dn = _to_dn(data, rng, valid[res])
        grid = g10.coarsen(f)
        _write_cog(folder / f"{band}.tif", dn, grid, 0)
        key, title, common, centre, fwhm = _BAND_META[band]
        assets[key] = _asset(
            f"../cogs/{item_id}/{band}.tif", title, grid, res, "uint16", reflectance=True,
            eo=[{"name": band, "common_name": common, "center_wavelength": centre,
                 "full_width_half_max": fwhm}],
        )  # fmt: skip
    scl = _scl(bands20, _block_mean(cloud, 2), _block_mean(shadow, 2), valid[20])
    g20 = g10.coarsen(2)
    _write_cog(folder / "SCL.tif", scl, g20, 0)
    assets["scl"] = _asset(
        f"../cogs/{item_id}/SCL.tif", "Scene classification map (SCL)", g20, 20, "uint8",
        reflectance=False, eo=None,
    )  # fmt: skip
    item = _item_dict(acq, item_id, assets, scl, elev, az)
    (out / "items" / f"{item_id}.json").write_text(json.dumps(item, indent=1))
    return item


def _asset(
    href: str,
    title: str,
    grid: _Grid,
    res: int,
    dtype: str,
    *,
    reflectance: bool,
    eo: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    rb: dict[str, Any] = {"nodata": 0, "data_type": dtype, "spatial_resolution": res}
    if reflectance:
        rb.update({"scale": _SCALE, "offset": _OFFSET})
    asset: dict[str, Any] = {"href": href, "type": _COG_TYPE, "title": title}
    if eo is not None:
        asset["eo:bands"] = eo
    asset.update(
        {
            "gsd": res,
            "proj:shape": [grid.height, grid.width],
            "proj:transform": [grid.res, 0.0, grid.x0, 0.0, -grid.res, grid.y0],
            "raster:bands": [rb],
            "roles": ["data", "reflectance"] if reflectance else ["data"],
        }
    )
    return asset


def _item_dict(
    acq: _Acq,
    item_id: str,
    assets: dict[str, Any],
    scl: NDArray[np.uint8],
    elev: float,
    az: float,
) -> dict[str, Any]:
    tile = acq.tile
    g = tile.grid
    footprint = _transform_geom(tile.valid, g.epsg, 4326)
    footprint = shapely.set_precision(footprint, 1e-9)
    centroid = footprint.centroid
    valid = scl != 0
    n_valid = max(int(valid.sum()), 1)

    def pct(*classes: int) -> float:
        return round(100.0 * float(np.isin(scl[valid], classes).sum()) / n_valid, 6)

    when = acq.when
    stamp = f"{when:%Y%m%dT%H%M%S}"
    gen = when + dt.timedelta(hours=2, minutes=7)
    sat = "S" + acq.platform[-2:].upper()
    launch = dt.date(2015, 6, 23) if sat == "S2A" else dt.date(2017, 3, 7)
    absolute_orbit = round((when.date() - launch).days * 14.3)
    doy = when.timetuple().tm_yday
    rcf = 1.0 / (1.0 - 0.01673 * math.cos(0.0172 * (doy - 4))) ** 2
    baseline = _PROCESSING_BASELINE
    nbase = "N" + baseline.replace(".", "")
    tile_id = f"{tile.zone:02d}{tile.lat_band}{tile.square}"
    now = f"{gen:%Y-%m-%dT%H:%M:%S}.000Z"
    props: dict[str, Any] = {
        "created": now,
        "platform": acq.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": pct(8, 9, 10),
        "proj:epsg": g.epsg,
        "proj:centroid": {"lat": round(centroid.y, 5), "lon": round(centroid.x, 5)},
        "mgrs:utm_zone": tile.zone,
        "mgrs:latitude_band": tile.lat_band,
        "mgrs:grid_square": tile.square,
        "grid:code": f"MGRS-{tile.name}",
        "view:azimuth": 105.0 if tile.orbit % 2 else 285.0,
        "view:incidence_angle": 6.5 if tile.orbit % 2 else 4.2,
        "view:sun_azimuth": round(az, 6),
        "view:sun_elevation": round(elev, 6),
        "s2:tile_id": f"{sat}_OPER_MSI_L2A_TL_2APS_{gen:%Y%m%dT%H%M%S}_A{absolute_orbit:06d}"
        f"_T{tile_id}_{nbase}",
        "s2:degraded_msi_data_percentage": 0,
        "s2:nodata_pixel_percentage": round(100.0 * float((~valid).mean()), 6),
        "s2:saturated_defective_pixel_percentage": 0,
        "s2:dark_features_percentage": pct(2),
        "s2:cloud_shadow_percentage": pct(3),
        "s2:vegetation_percentage": pct(4),
        "s2:not_vegetated_percentage": pct(5),
        "s2:water_percentage": pct(6),
        "s2:unclassified_percentage": pct(7),
        "s2:medium_proba_clouds_percentage": pct(8),
        "s2:high_proba_clouds_percentage": pct(9),
        "s2:thin_cirrus_percentage": pct(10),
        "s2:snow_ice_percentage": pct(11),
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": baseline,
        "s2:product_uri": f"{sat}_MSIL2A_{stamp}_{nbase}_R{tile.orbit:03d}_T{tile_id}_"
        f"{gen:%Y%m%dT%H%M%S}.SAFE",
        "s2:generation_time": f"{gen:%Y-%m-%dT%H:%M:%S}.000000Z",
        "s2:datatake_id": f"G{sat}_{stamp}_{absolute_orbit:06d}_{nbase}",
        "s2:datatake_type": "INS-NOBS",
        "s2:datastrip_id": f"{sat}_OPER_MSI_L2A_DS_2APS_{gen:%Y%m%dT%H%M%S}_S{stamp}_{nbase}",
        "s2:reflectance_conversion_factor": round(rcf, 9),
        "datetime": f"{when:%Y-%m-%dT%H:%M:%S}.024000Z",
        "s2:sequence": "0",
        "processing:software": {"arctic-rts-demo": GENERATOR_VERSION},
        "updated": now,
    }
    bounds = footprint.bounds
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": list(_STAC_EXTENSIONS),
        "id": item_id,
        "geometry": shapely.geometry.mapping(footprint),
        "bbox": [round(b, 6) for b in bounds],
        "properties": props,
        "links": [],
        "assets": assets,
        "collection": "sentinel-2-l2a",
    }


def _write_truth(path: Path, land: _Landscape, years: Sequence[int]) -> str:
    rows: list[dict[str, Any]] = []
    geoms: list[BaseGeometry] = []
    for yi, year in enumerate(years):
        for s, change in _slumps_in_year(land, yi):
            shp = _slump_state(s, yi)[0]
            rows.append({"slump_id": s.slump_id, "year": int(year), "change": change})
            geoms.append(shp)
    frame = gpd.GeoDataFrame(rows, geometry=geoms, crs=f"EPSG:{land.grid.epsg}")
    if frame.empty:
        frame = gpd.GeoDataFrame(
            {"slump_id": [], "year": [], "change": []}, geometry=[], crs=f"EPSG:{land.grid.epsg}"
        )
    frame["area_m2"] = frame.geometry.to_crs("EPSG:6931").area.round(1)
    frame = frame.to_crs("EPSG:4326")[["slump_id", "year", "area_m2", "change", "geometry"]]
    frame["slump_id"] = frame["slump_id"].astype("int64")
    frame["year"] = frame["year"].astype("int64")
    frame.to_file(path, driver="GPKG", layer="slumps")
    return path.name


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


def _write_dem(out: Path, land: _Landscape, tiles: list[_Tile]) -> tuple[str, tuple[float, ...]]:
    """The DEM as Copernicus GLO-30 ships it at 69 N: EPSG:4326, 1 x 2 arc-seconds, float32."""
    bbox, g = _dem_grid(tiles)
    dy, dx = g.res, 2 * g.res
    x0, y0, width, height = g.x0, g.y0, g.width // 2, g.height
    dem = np.zeros((height, width), np.float32)
    reproject(
        land.fields["dem"], dem, src_transform=land.grid.transform,
        src_crs=f"EPSG:{land.grid.epsg}", dst_transform=Affine(dx, 0, x0, 0, -dy, y0),
        dst_crs="EPSG:4326", resampling=Resampling.bilinear, num_threads=1,
    )  # fmt: skip
    path = out / "dem.tif"
    profile = {
        "driver": "COG", "height": height, "width": width, "count": 1, "dtype": "float32",
        "crs": "EPSG:4326", "transform": Affine(dx, 0, x0, 0, -dy, y0), "nodata": None,
        "compress": "DEFLATE", "predictor": 3, "blocksize": 256, "num_threads": 1,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.round(dem, 2).astype(np.float32), 1)
    return path.name, bbox
