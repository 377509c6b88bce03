"""The ground on the master grid: terrain, rivers, lakes, land cover and look-alikes.

:func:`_build_landscape` draws every static field from one generator, step by step, then places
the slumps. The order of the steps and of the draws inside them is part of the output: any change
to it changes every raster of every seed. :func:`_ground_weights` mixes the fields and one year's
slump fields into endmember weights on a tile's grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft
import shapely
from numpy.typing import NDArray
from rasterio.features import rasterize
from scipy import ndimage
from shapely.geometry import LineString, Polygon, box
from shapely.geometry.base import BaseGeometry

from arctic_rts.demo.grid import (
    _F32,
    _F64,
    _dem_grid,
    _Grid,
    _rasterize_frac,
    _sample,
    _slope_aspect,
    _Tile,
    _transform_geom,
    _window,
)
from arctic_rts.demo.slumps import _place_slumps, _Slump

#: Ground endmembers in the order of the weight stack; vegetation classes appear once and take
#: their date's green/brown mixture.
_CLASSES: tuple[str, ...] = (
    "tundra", "shrub", "heath", "sedge", "lake", "river", "mud", "headwall", "lobe",
    "bare_dry", "gravel", "bank_mud", "snow",
)  # fmt: skip
_CI = {name: i for i, name in enumerate(_CLASSES)}
_VEG = ("tundra", "shrub", "heath", "sedge")


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


@dataclass
class _Landscape:
    grid: _Grid
    fields: dict[str, _F32]  # static per-pixel fields on the master grid
    slumps: list[_Slump]
    snow_depth: _F32


def _build_landscape(
    rng: np.random.Generator, tiles: list[_Tile], n_years: int, size_px: int
) -> _Landscape:
    """Terrain, rivers, lakes, land cover, look-alikes and slumps on the master grid.

    Every step draws from ``rng`` in turn, so the order of the steps below is the order of the
    draws: reordering them (or adding a draw to one) changes the scenes of every seed.
    """
    grid = _master_grid(tiles)
    shape = (grid.height, grid.width)
    res = grid.res
    ys = grid.y0 - (np.arange(grid.height) + 0.5) * res
    xs = grid.x0 + (np.arange(grid.width) + 0.5) * res
    d_river = _river_distance(rng, grid, ys)
    z, valley, floor_w = _terrain(rng, grid, ys, d_river)

    # --- water: channel (turbid) and thermokarst lakes on flat uplands (clear)
    river_hw = 10.0 + 6.0 * (_noise(rng, shape, 500) > 0.5)
    river = _smoothstep((river_hw - d_river) / 10.0 + 0.5)
    lakes = _lakes(rng, grid, xs, ys, z, valley, d_river)
    lake_frac = _rasterize_frac(lakes, grid)
    _level_lakes(z, lakes, grid)
    lake_shore = np.clip(_rasterize_frac([lk.buffer(25) for lk in lakes], grid) - lake_frac, 0, 1)

    dem_s = ndimage.gaussian_filter(z, 2).astype(np.float32)
    slope, aspect = _slope_aspect(dem_s, res)
    vegetation = _vegetation(rng, z, valley, slope)
    bank, gravel = _river_lookalikes(rng, d_river, river_hw, floor_w)
    bare_dry = _bare_patches(rng, grid, xs, ys, slope, lake_frac, d_river)
    snow_depth = _snow_banks(rng, grid, slope, aspect)

    fields = {
        "dem": z.astype(np.float32),
        "dem_s": dem_s,
        "slope": slope,
        **vegetation,
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


def _master_grid(tiles: list[_Tile]) -> _Grid:
    """The 10 m master grid in the western tile's UTM zone.

    It covers both tile scenes plus margin, aligned with tile 1's pixels so that tile 1 samples
    it exactly.
    """
    master_epsg = tiles[0].grid.epsg
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
    return _Grid(master_epsg, g1.x0 - left * 10.0, g1.y0 + top * 10.0, 10.0, height, width)


def _river_distance(rng: np.random.Generator, grid: _Grid, ys: NDArray[np.floating[Any]]) -> _F32:
    """Meandering channels flowing north; returns each pixel's distance (m) to the nearest one."""
    width, res = grid.width, grid.res
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
        [(ln, 1) for ln in lines], out_shape=(grid.height, width), transform=grid.transform,
        all_touched=True, dtype="uint8",
    )  # fmt: skip
    return (ndimage.distance_transform_edt(centre == 0) * res).astype(np.float32)


def _terrain(
    rng: np.random.Generator, grid: _Grid, ys: NDArray[np.floating[Any]], d_river: _F32
) -> tuple[_F64, _F32, _F32]:
    """Elevation: a low rolling plain rising inland, valleys with flat floors and 4-12 deg sides.

    Returns the elevation (m), the valley mask (1 inside a valley) and the floor half-width (m).
    """
    shape = (grid.height, grid.width)
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
    return z, valley, floor_w


def _lakes(
    rng: np.random.Generator,
    grid: _Grid,
    xs: NDArray[np.floating[Any]],
    ys: NDArray[np.floating[Any]],
    z: _F64,
    valley: _F32,
    d_river: _F32,
) -> list[BaseGeometry]:
    """Thermokarst lake outlines on flat uplands, away from the rivers and from each other."""
    height, width, res = grid.height, grid.width, grid.res
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
    return lakes


def _level_lakes(z: _F64, lakes: list[BaseGeometry], grid: _Grid) -> None:
    """Lakes sit in flat basins: level the DEM ``z`` under each lake (in place)."""
    for lake in lakes:
        win = _window(lake.buffer(20), grid)
        if win is None:
            continue
        (r0, r1, c0, c1), sub = win
        m = _rasterize_frac([lake.buffer(20)], sub) > 0
        if m.any():
            zz = z[r0:r1, c0:c1]
            zz[m] = np.percentile(zz[m], 20) - 1.0


def _vegetation(rng: np.random.Generator, z: _F64, valley: _F32, slope: _F32) -> dict[str, _F32]:
    """Spatially structured cover of the four vegetation types (unnormalized weights)."""
    shape = z.shape
    n1, n2, n3 = (_noise(rng, shape, s, beta=2.6) for s in (250, 180, 350))
    wet = ndimage.gaussian_filter(-z, 8)  # low ground is wetter
    wet = (wet - wet.mean()) / (wet.std() + 1e-6)
    shrub = _smoothstep(0.5 + 0.4 * n1 + 0.8 * valley - 0.3)
    heath = _smoothstep(0.5 + 0.45 * n2 - 0.35 * wet - 0.6 * valley)
    sedge = _smoothstep(0.5 + 0.5 * n3 + 0.5 * wet - 0.35) * (slope < 3)
    tundra = np.full(shape, 0.6, np.float32)
    return {"tundra": tundra, "shrub": shrub, "heath": heath, "sedge": sedge}


def _river_lookalikes(
    rng: np.random.Generator, d_river: _F32, river_hw: NDArray[np.floating[Any]], floor_w: _F32
) -> tuple[_F32, _F32]:
    """Look-alikes along rivers: wet mud banks next to the channel, gravel bars on the floor."""
    shape = d_river.shape
    n_bank = _noise(rng, shape, 40, beta=2.2)
    n_gravel = _noise(rng, shape, 60, beta=2.4)
    near = (d_river > river_hw - 4) & (d_river < river_hw + 28)
    bank = _smoothstep(1.2 * n_bank + 0.2) * near
    floor_zone = _smoothstep((floor_w + 30 - d_river) / 40.0)
    gravel = _smoothstep(1.4 * (n_gravel - 0.55)) * floor_zone * (d_river > river_hw)
    return bank, gravel


def _bare_patches(
    rng: np.random.Generator,
    grid: _Grid,
    xs: NDArray[np.floating[Any]],
    ys: NDArray[np.floating[Any]],
    slope: _F32,
    lake_frac: _F32,
    d_river: _F32,
) -> _F32:
    """Flat bare soil patches (frost boils, disturbance): round, on flat uplands, drier."""
    height, width, res = grid.height, grid.width, grid.res
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
    return _rasterize_frac(patches, grid, values=patch_vals)


def _snow_banks(rng: np.random.Generator, grid: _Grid, slope: _F32, aspect: _F32) -> _F32:
    """Late-lying snow banks: on the same valley slopes as slumps, in the lee (north-facing)."""
    height, width, res = grid.height, grid.width, grid.res
    shape = (height, width)
    area_km2 = width * height * res * res / 1e6
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
    return snow_depth


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
