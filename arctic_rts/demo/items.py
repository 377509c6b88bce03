"""The files of a catalog: COGs, STAC items as Earth Search v1 writes them, truth and DEM."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from numpy.typing import NDArray
from rasterio.transform import Affine
from rasterio.warp import Resampling, reproject
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from arctic_rts.bands import L2A_BANDS, RESOLUTION_M
from arctic_rts.config import DEMO_SOFTWARE
from arctic_rts.demo.grid import (
    _F32,
    _Acq,
    _block_mean,
    _dem_grid,
    _Grid,
    _Tile,
    _transform_geom,
)
from arctic_rts.demo.landscape import _Landscape
from arctic_rts.demo.manifest import GENERATOR_VERSION
from arctic_rts.demo.radiometry import (
    _OFFSET,
    _SCALE,
    _scene_reflectance,
    _scl,
    _to_dn,
    _valid_mask,
)
from arctic_rts.demo.slumps import _slump_state, _slumps_in_year

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
_PROCESSING_BASELINE = "05.00"


def _write_cog(path: Path, data: NDArray[Any], grid: _Grid, nodata: float | None) -> None:
    """One single-band, DEFLATE-compressed COG of ``data`` on ``grid``."""
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


def _write_scene(
    out: Path,
    acq: _Acq,
    rng: np.random.Generator,
    wts: _F32,
    snow_depth: _F32,
    slope: _F32,
    aspect: _F32,
) -> dict[str, Any]:
    """Render one acquisition, write its band COGs, SCL and item JSON; return the item."""
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
    """One asset of an item, with its projection and ``raster:bands`` fields."""
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
    """The STAC item of one scene, as Earth Search v1 writes it."""
    tile = acq.tile
    footprint = _transform_geom(tile.valid, tile.grid.epsg, 4326)
    footprint = shapely.set_precision(footprint, 1e-9)
    props = _item_properties(acq, scl, elev, az, footprint.centroid)
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


def _item_properties(
    acq: _Acq, scl: NDArray[np.uint8], elev: float, az: float, centroid: Point
) -> dict[str, Any]:
    """An item's properties: platform, MGRS tile, sun and view angles, SCL class shares, ids."""
    tile = acq.tile
    g = tile.grid
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
        "processing:software": {DEMO_SOFTWARE: GENERATOR_VERSION},
        "updated": now,
    }
    return props


def _write_truth(path: Path, land: _Landscape, years: Sequence[int]) -> str:
    """The true slumps of every year as a GeoPackage in EPSG:4326; returns the file name."""
    rows: list[dict[str, Any]] = []
    geoms: list[BaseGeometry] = []
    for yi, year in enumerate(years):
        for s, change in _slumps_in_year(land.slumps, yi):
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
