"""From ground to sensor: spectra, sun and phenology, illumination, haze, clouds, SCL and DN.

Illumination (sun elevation, terrain shading, haze) and phenology (greenness) vary by date; thin
cloud edges and shadow edges are left unflagged in the SCL, as Sen2Cor leaves them.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
from numpy.typing import NDArray
from rasterio.features import rasterize
from scipy import ndimage

from arctic_rts.bands import L2A_BANDS
from arctic_rts.demo.grid import _CENTER_LONLAT, _F32, _Acq, _Tile
from arctic_rts.demo.landscape import _CI, _CLASSES, _VEG, _noise, _smoothstep

#: Baseline >= 04.00: L2A DN carry a +1000 offset, i.e. reflectance = DN * 1e-4 - 0.1.
_SCALE, _OFFSET = 0.0001, -0.1

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
#: Greenness by day of year (0: senescent, 1: peak green), piecewise linear.
_PHENOLOGY = ((150, 0.0), (170, 0.45), (195, 1.0), (215, 0.9), (235, 0.6), (260, 0.2))


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
    """Reflectance plus sensor noise as L2A DN (offset +1000), 0 (nodata) outside ``valid``."""
    noise = rng.standard_normal(refl.shape, dtype=np.float32) * (0.003 + 0.015 * refl)
    dn = np.rint((refl + noise - _OFFSET) / _SCALE)
    dn = np.clip(dn, 1, 65535).astype(np.uint16)
    dn[~valid] = 0
    return dn
