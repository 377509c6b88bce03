"""Thaw slumps: horseshoe outlines, their placement on valley slopes, their state per year.

Slumps are horseshoe scars of wet bare mud on valley slopes, opening downslope, with a bright
headwall rim and a darker flow lobe; 0.3-40 ha, most of them a few hectares. Over the years some
grow (headwall retreat), some appear, and a few stabilise and revegetate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from numpy.typing import NDArray
from rasterio.features import rasterize
from scipy import ndimage
from shapely.geometry import Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from arctic_rts.demo.grid import (
    _F32,
    _Grid,
    _rasterize_frac,
    _slope_aspect,
    _Tile,
    _transform_geom,
    _window,
)
from arctic_rts.errors import ConfigError


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
    n_target, first_years, areas = _slump_plan(rng, n_years, size_px)

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
    _pick_vanishing(rng, slumps, n_years)
    return slumps


def _slump_plan(
    rng: np.random.Generator, n_years: int, size_px: int
) -> tuple[int, list[int], list[float]]:
    """How many slumps exist from the first year, each slump's first year, and its area (m2).

    The first year's slumps come largest first (placed while there is most room); the reserve
    ones that appear later follow in year order.
    """
    scene_km2 = (size_px * 10 / 1000) ** 2
    n_target = max(4, round(scene_km2 * 0.30))
    # Small test scenes get small slumps, so slumps stay a small share of the scene.
    max_area = min(400_000.0, max(5000.0, 0.01 * scene_km2 * 1e6))
    n_new = [max(1, round(n_target * 0.12)) for _ in range(n_years - 1)]
    first_years = [0] * n_target + [yi + 1 for yi, n in enumerate(n_new) for _ in range(n)]
    areas = sorted((min(_slump_area_m2(rng), max_area) for _ in range(n_target)), reverse=True)
    areas += [min(_slump_area_m2(rng), max_area) for _ in first_years[n_target:]]
    return n_target, first_years, areas


def _pick_vanishing(rng: np.random.Generator, slumps: list[_Slump], n_years: int) -> None:
    """A few of the first year's slumps stabilise and revegetate in each later year (in place)."""
    initial = [s for s in slumps if s.first_year_index == 0]
    for yi in range(1, n_years):
        alive = [s for s in initial if s.vanish_year_index is None]
        n_vanish = max(1, round(len(alive) * 0.1)) if len(alive) > 2 else 0
        for i in rng.choice(len(alive), n_vanish, replace=False):
            alive[int(i)].vanish_year_index = yi


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


def _slumps_in_year(slumps: Sequence[_Slump], yi: int) -> list[tuple[_Slump, str]]:
    """The slumps that exist in year ``yi`` and how each changed since the year before."""
    out = []
    for s in slumps:
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


def _slump_fields(slumps: Sequence[_Slump], grid: _Grid, yi: int) -> dict[str, _F32]:
    """Per-year fields on the master ``grid``: scar parts and revegetated scars."""
    alive = _slumps_in_year(slumps, yi)
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
        for s in slumps
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
