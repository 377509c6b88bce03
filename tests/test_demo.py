"""The synthetic demo catalog: deterministic, Earth Search v1 shaped, honest for a threshold.

Small scenes (240 px = 2.4 km) keep generation to seconds; the properties checked here do not
depend on the size.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.warp import Resampling, reproject

from arctic_rts.bands import ASSET_ALIASES, L2A_BANDS, RESOLUTION_M, SCL_MASKED
from arctic_rts.demo import GENERATOR_VERSION, DemoCatalog, generate_demo
from arctic_rts.errors import ConfigError

SIZE_PX = 240
YEARS = (2021, 2022)
SUMMER = (6, 7, 8)
#: Earth Search v1 asset key of each canonical band.
ES_KEYS = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B11": "swir16", "B12": "swir22",
}  # fmt: skip
BAND_KEYS = {ES_KEYS[b] for b in L2A_BANDS}


def _props(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())["properties"]


def _item(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _tile(props: dict[str, Any]) -> str:
    return f"{props['mgrs:utm_zone']}{props['mgrs:latitude_band']}{props['mgrs:grid_square']}"


def _least_cloudy_summer(catalog: DemoCatalog, year: int) -> dict[str, Path]:
    best: dict[str, tuple[float, Path]] = {}
    for path in catalog.item_paths:
        p = _props(path)
        if int(p["datetime"][:4]) != year or int(p["datetime"][5:7]) not in SUMMER:
            continue
        if _tile(p) not in best or p["eo:cloud_cover"] < best[_tile(p)][0]:
            best[_tile(p)] = (p["eo:cloud_cover"], path)
    return {t: path for t, (_, path) in best.items()}


def _read_scene(item_path: Path) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """All 12 bands as reflectance on the 10 m grid (nearest), the SCL at 10 m, transform, CRS."""
    item = _item(item_path)
    out = []
    with rasterio.open(item_path.parent / item["assets"]["red"]["href"]) as src:
        shape, transform, crs = src.shape, src.transform, src.crs
    for band in L2A_BANDS:
        asset = item["assets"][ES_KEYS[band]]
        rb = asset["raster:bands"][0]
        with rasterio.open(item_path.parent / asset["href"]) as src:
            dn = src.read(1)
        f = shape[0] // dn.shape[0]
        out.append(np.kron(dn, np.ones((f, f), np.uint16)) * rb["scale"] + rb["offset"])
    with rasterio.open(item_path.parent / item["assets"]["scl"]["href"]) as src:
        scl = np.kron(src.read(1), np.ones((2, 2), np.uint8))
    return np.stack(out).astype(np.float32), scl, transform, crs


def _truth_mask(catalog: DemoCatalog, year: int, shape: tuple[int, int], transform, crs) -> Any:
    truth = gpd.read_file(catalog.truth_path)
    truth = truth[truth["year"] == year].to_crs(crs)
    return rasterize(
        [(g, 1) for g in truth.geometry], out_shape=shape, transform=transform, dtype="uint8"
    ).astype(bool)


def _best_single_band_iou(x: np.ndarray, label: np.ndarray) -> float:
    """Best pixel IoU of any one band with any threshold in either direction (fitted here)."""
    best = 0.0
    npos = int(label.sum())
    for values in x:
        order = np.argsort(values, kind="stable")
        sorted_label = label[order]
        for seq in (sorted_label, sorted_label[::-1]):
            tp = np.cumsum(seq)
            k = np.arange(1, len(seq) + 1)
            best = max(best, float((tp / (npos + k - tp)).max()))
    return best


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo(
        tmp_path_factory.mktemp("demo") / "catalog", seed=5, years=YEARS, size_px=SIZE_PX
    )


def _digest(catalog: DemoCatalog) -> dict[str, str]:
    """Hash of every raster's pixels (not file bytes: GDAL may stamp metadata) and the truth."""
    out = {}
    for path in sorted(catalog.root.rglob("*.tif")):
        with rasterio.open(path) as src:
            out[str(path.relative_to(catalog.root))] = hashlib.sha256(
                src.read().tobytes()
            ).hexdigest()
    truth = gpd.read_file(catalog.truth_path)
    out["truth"] = hashlib.sha256(shapely.to_wkb(truth.geometry.values).sum()).hexdigest()
    return out


def test_same_seed_gives_identical_arrays_other_seed_differs(tmp_path: Path) -> None:
    a = generate_demo(tmp_path / "a", seed=3, size_px=120)
    b = generate_demo(tmp_path / "b", seed=3, size_px=120)
    c = generate_demo(tmp_path / "c", seed=4, size_px=120)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert len(da) == 2 * 0 + len(a.item_paths) * 13 + 2  # 12 bands + SCL per item, DEM, truth
    assert da == db
    assert da.keys() == dc.keys()
    differing = [k for k in da if da[k] != dc[k]]
    assert "truth" in differing and "dem.tif" in differing
    assert len(differing) == len(da)  # terrain, slumps and clouds all change with the seed


def test_items_parse_with_pystac_and_carry_the_earth_search_schema(catalog: DemoCatalog) -> None:
    assert catalog.items_dir == catalog.root / "items"
    assert sorted(catalog.items_dir.glob("*.json")) == sorted(catalog.item_paths)
    for path in catalog.item_paths:
        raw = _item(path)
        item = pystac.Item.from_file(str(path))
        assert item.id == path.stem
        assert raw["collection"] == "sentinel-2-l2a"
        assert raw["stac_version"] == "1.0.0"
        assert any("sentinel-2" in e for e in raw["stac_extensions"])
        p = raw["properties"]
        assert p["constellation"] == "sentinel-2"
        assert p["platform"] in ("sentinel-2a", "sentinel-2b")
        assert 0 < p["eo:cloud_cover"] < 100
        assert p["proj:epsg"] in (32607, 32608)
        assert p["mgrs:utm_zone"] == p["proj:epsg"] - 32600
        assert p["mgrs:latitude_band"] == "W"  # 64-72 N
        assert len(p["mgrs:grid_square"]) == 2
        assert p["grid:code"] == f"MGRS-{_tile(p)}"
        assert p["s2:processing_baseline"] >= "04.00"
        assert item.id.startswith(f"S{p['platform'][-2:].upper()}_{_tile(p)}_")
        assert set(raw["assets"]) == BAND_KEYS | {"scl"}
        for key, asset in raw["assets"].items():
            assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
            assert not Path(asset["href"]).is_absolute()  # relative: the folder can move
            assert Path(item.assets[key].get_absolute_href() or "").is_file()
            rb = asset["raster:bands"][0]
            assert rb["nodata"] == 0
            if key == "scl":
                assert rb["data_type"] == "uint8" and asset["roles"] == ["data"]
                continue
            band = ASSET_ALIASES[key]
            assert asset["eo:bands"][0]["name"] == band
            assert asset["gsd"] == RESOLUTION_M[band]
            assert (rb["data_type"], rb["scale"], rb["offset"]) == ("uint16", 0.0001, -0.1)
            assert asset["roles"] == ["data", "reflectance"]
        footprint = shapely.geometry.shape(raw["geometry"])
        assert footprint.is_valid
        assert np.allclose(footprint.bounds, raw["bbox"], atol=1e-5)
        w, s, e, n = catalog.bbox
        assert shapely.box(w, s, e, n).buffer(1e-5).contains(footprint)


def test_same_fields_as_a_real_earth_search_item(catalog: DemoCatalog, shared_data: Path) -> None:
    real = json.loads(
        (shared_data / "stac_items" / "items_earth-search_sentinel-2-l2a.geojson").read_text()
    )["features"][0]
    ours = _item(catalog.item_paths[0])
    assert set(ours["stac_extensions"]) == set(real["stac_extensions"])
    missing = set(real["properties"]) - set(ours["properties"])
    assert missing <= {"earthsearch:s3_path", "earthsearch:payload_id", "s2:granule_id",
                       "earthsearch:boa_offset_applied"}  # fmt: skip
    for key in ours["assets"]:
        assert set(ours["assets"][key]) == set(real["assets"][key]), key
        assert set(ours["assets"][key]["raster:bands"][0]) == set(
            real["assets"][key]["raster:bands"][0]
        )


def test_cogs_lie_on_the_item_grid_at_native_resolution(catalog: DemoCatalog) -> None:
    for path in catalog.item_paths[:3]:
        item = _item(path)
        epsg = item["properties"]["proj:epsg"]
        for key, asset in item["assets"].items():
            with rasterio.open(path.parent / asset["href"]) as src:
                assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
                assert src.compression is not None and src.compression.name == "deflate"
                assert src.profile["tiled"]
                assert src.crs.to_epsg() == epsg
                assert src.nodata == 0
                assert list(src.shape) == asset["proj:shape"]
                assert list(src.transform)[:6] == asset["proj:transform"]
                res = 20 if key == "scl" else RESOLUTION_M[ASSET_ALIASES[key]]
                assert src.res == (res, res)
                assert src.shape == (SIZE_PX * 10 // res,) * 2
                # origins on the 60 m grid, so the 10, 20 and 60 m rasters nest exactly
                assert src.transform.c % 60 == 0 and src.transform.f % 60 == 0
                assert src.dtypes[0] == ("uint8" if key == "scl" else "uint16")


def test_reflectance_needs_the_offset(catalog: DemoCatalog) -> None:
    path = _least_cloudy_summer(catalog, YEARS[0])["7WFS"]
    x, scl, *_ = _read_scene(path)
    veg = scl == 4
    red = x[L2A_BANDS.index("B04")][veg]
    nir = x[L2A_BANDS.index("B08")][veg]
    assert 0.02 < np.median(red) < 0.09
    assert 0.15 < np.median(nir) < 0.35
    # forgetting the -0.1 offset makes vegetation brighter in red than most soils: visibly wrong
    assert np.median(red + 0.1) > 0.12


def test_scl_matches_the_scene(catalog: DemoCatalog) -> None:
    for path in catalog.item_paths:
        x, scl, *_ = _read_scene(path)
        p = _props(path)
        assert set(np.unique(scl)) <= {0, 2, 3, 4, 5, 6, 8, 9, 10, 11}
        blue = x[L2A_BANDS.index("B02")]
        nir = x[L2A_BANDS.index("B08")]
        if (scl == 9).sum() > 50:
            assert np.median(blue[scl == 9]) > 0.3  # opaque clouds are bright
        if (scl == 6).sum() > 50:
            assert np.median(nir[scl == 6]) < 0.07  # water is dark in NIR
        nodata = scl == 0
        assert np.allclose(x[:, nodata], -0.1)  # DN 0 in every band under SCL 0
        # cloud cover is what the SCL says
        valid = scl[::2, ::2] != 0
        cloudy = np.isin(scl[::2, ::2], (8, 9, 10)) & valid
        assert p["eo:cloud_cover"] == pytest.approx(100 * cloudy.sum() / valid.sum(), abs=0.01)
    # one tile is clipped by its swath edge
    tiles_with_nodata = {_tile(_props(p)) for p in catalog.item_paths if _props(p)[
        "s2:nodata_pixel_percentage"] > 1}  # fmt: skip
    assert len(tiles_with_nodata) == 1


def test_summer_dates_and_out_of_season_snow(catalog: DemoCatalog) -> None:
    by_tile: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for path in catalog.item_paths:
        p = _props(path)
        by_tile.setdefault((_tile(p), int(p["datetime"][:4])), []).append(p)
    assert {t for t, _ in by_tile} == set(catalog.tiles)
    assert {y for _, y in by_tile} == set(YEARS)
    for props in by_tile.values():
        summer = sorted(
            (p for p in props if int(p["datetime"][5:7]) in SUMMER),
            key=lambda p: p["eo:cloud_cover"],
        )
        other = [p for p in props if int(p["datetime"][5:7]) not in SUMMER]
        assert len(summer) >= 3
        assert len({p["datetime"][:10] for p in summer}) == len(summer)
        # one clearly least cloudy summer scene, with some cloud and shadow still in it
        assert 0.5 < summer[0]["eo:cloud_cover"] < 10
        assert summer[1]["eo:cloud_cover"] > summer[0]["eo:cloud_cover"] + 10
        assert summer[0]["s2:cloud_shadow_percentage"] > 0
        # out of season: May/October, snow-covered, clearer than any summer scene (a trap for
        # a search that forgets the season filter)
        assert {int(p["datetime"][5:7]) for p in other} == {5, 10}
        for p in other:
            assert p["s2:snow_ice_percentage"] > 50
            assert p["eo:cloud_cover"] < summer[0]["eo:cloud_cover"]
        elev = {p["datetime"][:10]: p["view:sun_elevation"] for p in props}
        assert len({round(e) for e in elev.values()}) >= 3  # illumination varies by date
        assert min(elev.values()) < 20  # October sun at 69 N


def test_two_tiles_in_two_utm_zones_overlap(catalog: DemoCatalog) -> None:
    footprints: dict[str, Any] = {}
    epsg: dict[str, int] = {}
    for path in catalog.item_paths:
        item = _item(path)
        tile = _tile(item["properties"])
        footprints[tile] = shapely.geometry.shape(item["geometry"])
        epsg[tile] = item["properties"]["proj:epsg"]
    assert sorted(epsg.values()) == [32607, 32608]
    a, b = (gpd.GeoSeries([footprints[t]], crs=4326).to_crs(3413).iloc[0] for t in sorted(epsg))
    assert a.intersection(b).area > 0.4 * min(a.area, b.area)
    # the ground centre lies at the zone boundary (138 W) on the Yukon coastal plain
    w, s, e, n = catalog.bbox
    assert w < -138 < e and 68.5 < s < n < 69.6
    truth = gpd.read_file(catalog.truth_path).to_crs(3413)
    both = truth.geometry.within(a) & truth.geometry.within(b)
    assert both.any()  # some slumps are seen by both tiles


def test_truth_polygons_are_valid_slumps_on_slopes(catalog: DemoCatalog) -> None:
    truth = gpd.read_file(catalog.truth_path)
    assert truth.crs.to_epsg() == 4326
    assert list(truth.columns) == ["slump_id", "year", "area_m2", "change", "geometry"]
    assert truth.geometry.is_valid.all()
    assert (truth.geom_type == "Polygon").all()
    assert truth["area_m2"].between(3000, 400_000).all()
    assert np.allclose(truth.to_crs(6931).area, truth["area_m2"], rtol=1e-3)
    # slope from the DEM, reprojected onto a 10 m UTM grid as the elevation path would
    with rasterio.open(catalog.dem_path) as src:
        assert src.crs.to_epsg() == 4326
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        dem = src.read(1)
        utm = truth.to_crs(32607)
        x0, y0, x1, y1 = utm.total_bounds
        transform = rasterio.Affine(10, 0, x0 - 300, 0, -10, y1 + 300)
        shape = (int((y1 - y0 + 600) / 10), int((x1 - x0 + 600) / 10))
        z = np.zeros(shape, np.float32)
        reproject(dem, z, src_transform=src.transform, src_crs=src.crs, dst_transform=transform,
                  dst_crs="EPSG:32607", resampling=Resampling.bilinear)  # fmt: skip
    gy, gx = np.gradient(z.astype(np.float64), 10.0)
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    inside = []
    for geom in utm.geometry:
        m = rasterize([(geom, 1)], out_shape=shape, transform=transform, dtype="uint8") > 0
        inside.append(slope[m].mean())
    assert min(inside) > 2.0
    # steeper than the land around them: slumps sit on valley sides, not on the flat plain
    assert np.median(inside) > 1.5 * np.median(slope[5:-5, 5:-5])


def test_best_single_band_threshold_is_modest(catalog: DemoCatalog) -> None:
    """No band and threshold, fitted on the scene itself, finds the slumps well (real chips:
    0.30-0.40; a UNet must do far better)."""
    for path in _least_cloudy_summer(catalog, YEARS[0]).values():
        x, scl, transform, crs = _read_scene(path)
        label = _truth_mask(catalog, YEARS[0], scl.shape, transform, crs)
        valid = ~np.isin(scl, SCL_MASKED)
        assert label[valid].sum() > 100
        assert _best_single_band_iou(x[:, valid], label[valid]) < 0.5


def test_reuse_does_not_rewrite(catalog: DemoCatalog, tmp_path: Path) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in catalog.root.rglob("*") if p.is_file()}
    again = generate_demo(catalog.root, seed=5, years=YEARS, size_px=SIZE_PX)
    assert again == catalog
    assert {p: p.stat().st_mtime_ns for p in catalog.root.rglob("*") if p.is_file()} == stamps
    manifest = json.loads((catalog.root / "demo_manifest.json").read_text())
    assert manifest["params"]["generator_version"] == GENERATOR_VERSION
    # a half-written catalog (no manifest) in a folder with other files is never overwritten
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="no demo catalog"):
        generate_demo(stray, size_px=120)
    assert (stray / "notes.txt").read_text() == "mine"


def test_other_parameters_replace_the_catalog(tmp_path: Path) -> None:
    first = generate_demo(tmp_path / "c", seed=1, size_px=120)
    second = generate_demo(tmp_path / "c", seed=2, size_px=120)
    assert second.seed == 2
    assert json.loads((tmp_path / "c" / "demo_manifest.json").read_text())["params"]["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temp folders left behind
    assert first.truth_path.is_file()


def test_multi_year_slumps_grow_appear_and_vanish(catalog: DemoCatalog) -> None:
    truth = gpd.read_file(catalog.truth_path)
    y1, y2 = (truth[truth["year"] == y].set_index("slump_id") for y in YEARS)
    assert set(y1["change"]) == {"initial"}
    both = y1.index.intersection(y2.index)
    growth = y2.loc[both, "area_m2"] / y1.loc[both, "area_m2"]
    assert (growth >= 1.0 - 1e-6).all()  # headwalls retreat; scars never shrink
    assert (growth > 1.10).any()
    assert (y2.loc[both, "change"] == np.where(growth > 1.10, "grown", "stable")).all()
    appeared = y2.index.difference(y1.index)
    vanished = y1.index.difference(y2.index)
    assert len(appeared) >= 1 and (y2.loc[appeared, "change"] == "new").all()
    assert len(vanished) >= 1
    # a grown scar still covers (nearly all of) last year's outline
    for sid in both:
        old, new = y1.loc[sid, "geometry"], y2.loc[sid, "geometry"]
        assert old.intersection(new).area > 0.97 * old.area


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size_px": 250}, "multiple of 6"),
        ({"size_px": 60}, "between 120"),
        ({"years": (2022, 2021)}, "increasing"),
        ({"years": ()}, "at least one"),
        ({"years": (2016,)}, "2017"),
        ({"years": (2014,)}, "2015"),
        ({"seed": -1}, "non-negative"),
    ],
)
def test_bad_parameters_are_refused(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        generate_demo(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_catalog_folder_can_move(catalog: DemoCatalog, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(catalog.root, moved)
    again = generate_demo(moved, seed=5, years=YEARS, size_px=SIZE_PX)
    assert again.root == moved
    item = pystac.Item.from_file(str(again.item_paths[0]))
    href = Path(item.assets["nir"].get_absolute_href() or "")
    assert moved in href.parents and href.is_file()
    assert math.isfinite(again.bbox[0])


def _generate_small(root: str) -> list[str]:
    catalog = generate_demo(root, seed=9, size_px=120)
    # Read every file at once: a catalog swapped away under this process fails here.
    for path in [*catalog.item_paths, catalog.truth_path, catalog.dem_path]:
        path.read_bytes()
    return [str(p) for p in catalog.item_paths]


def test_two_processes_generating_the_same_catalog_agree(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        a, b = pool.map(_generate_small, [str(root)] * 2)
    assert a == b
    assert all(Path(p).is_file() for p in a)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]  # no temp folders left


def test_the_library_below_the_demo_does_not_import_it() -> None:
    """Imports run one way: the demo uses the pipeline, never the other way round (the CLI and
    ``stac_endpoint("demo")`` import it lazily, when asked for the demo)."""
    code = (
        "import pathlib, sys, arctic_rts\n"
        "top = pathlib.Path(arctic_rts.__file__).parent\n"
        "for path in sorted(top.rglob('*.py')):\n"
        "    name = '.'.join(('arctic_rts', *path.relative_to(top).with_suffix('').parts))\n"
        "    name = name.removesuffix('.__init__')\n"
        "    if not name.startswith(('arctic_rts.demo', 'arctic_rts.cli')):\n"
        "        __import__(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('arctic_rts.demo')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_catalog_finished_first_is_kept_not_swapped_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race, made deterministic: another process puts the same catalog in place while this
    one still writes its copy; this one must keep theirs (readers may hold it) and drop its own."""
    from arctic_rts.demo import generate

    root = tmp_path / "shared"
    real_write = generate._write_catalog
    theirs: dict[str, int] = {}

    def write_while_another_finishes(out: Path, params: dict[str, Any]) -> dict[str, Any]:
        manifest = real_write(out, params)
        monkeypatch.setattr(generate, "_write_catalog", real_write)
        other = generate_demo(root, seed=9, size_px=120)  # the other process, done first
        theirs.update({str(p): p.stat().st_ino for p in other.item_paths})
        return manifest

    monkeypatch.setattr(generate, "_write_catalog", write_while_another_finishes)
    mine = generate_demo(root, seed=9, size_px=120)
    assert theirs and {str(p): p.stat().st_ino for p in mine.item_paths} == theirs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]
