"""Inventory: merge across UTM zones, atomic GeoPackage writes under a lock, changes, exports."""

from __future__ import annotations

import hashlib
import logging
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rioxarray  # noqa: F401 - registers the .rio accessor
import shapely
import xarray as xr
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.transform import from_origin
from shapely.geometry import Point, box

from arctic_rts.changes import CHANGE_COLUMNS, change_layer
from arctic_rts.errors import InventoryError, InventoryLockedError
from arctic_rts.exports import export_geoparquet, summary_csv
from arctic_rts.inventory import (
    DATE_COLUMNS,
    RUN_COLUMNS,
    SCENE_COLUMNS,
    change_counts,
    inventory_years,
    last_write_info,
    lock_inventory,
    read_inventory,
    write_inventory,
)
from arctic_rts.merge import RTS_COLUMNS, merge_polygons
from arctic_rts.vectorize import vectorize

# Near Herschel Island, on the boundary of UTM zones 7 and 8 (138 W).
LON, LAT = -138.0, 69.5
# Slumps as (dx, dy, radius) in metres of UTM zone 7 around (LON, LAT).
SLUMPS = {
    "both": (0, 0, 150),
    "cut_by_B_edge": (-700, -300, 150),
    "cloud_in_B": (500, 450, 120),
    "only_B": (1900, 0, 120),
    "only_A": (-1200, 0, 120),
    "cut_by_A_edge": (1500, -500, 150),
}


def _truth() -> gpd.GeoSeries:
    to7 = Transformer.from_crs("EPSG:4326", "EPSG:32607", always_xy=True)
    cx, cy = to7.transform(LON, LAT)
    geoms = [Point(cx + dx, cy + dy).buffer(r, 64) for dx, dy, r in SLUMPS.values()]
    return gpd.GeoSeries(geoms, index=list(SLUMPS), crs="EPSG:32607")


def _scene(epsg: int, dx: tuple[float, float], nan_box: tuple | None = None) -> xr.DataArray:
    """A 10 m probability grid in ``epsg`` around (LON, LAT): 0.9 inside slumps, 0.05 outside."""
    to = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    cx, cy = to.transform(LON, LAT)
    x0 = np.floor((cx + dx[0]) / 10) * 10
    y1 = np.floor((cy + 1000) / 10) * 10
    w, h = int((dx[1] - dx[0]) / 10), 200
    transform = from_origin(x0, y1, 10, 10)
    truth = _truth().to_crs(epsg)
    mask = rasterize([(g, 1) for g in truth], out_shape=(h, w), transform=transform)
    prob = np.where(mask > 0, 0.9, 0.05).astype(np.float32)
    if nan_box is not None:  # (dx0, dy0, dx1, dy1) around the centre, in this grid's metres
        cols = (np.arange(w) + 0.5) * 10 + x0 - cx
        rows = y1 - (np.arange(h) + 0.5) * 10 - cy
        inside = (
            (cols[None, :] >= nan_box[0])
            & (cols[None, :] <= nan_box[2])
            & (rows[:, None] >= nan_box[1])
            & (rows[:, None] <= nan_box[3])
        )
        prob[inside] = np.nan
    return xr.DataArray(
        prob,
        dims=("y", "x"),
        coords={"y": y1 - 10 * (np.arange(h) + 0.5), "x": x0 + 10 * (np.arange(w) + 0.5)},
    ).rio.write_crs(epsg)


def _attrs(scene: str, tile: str, year: int = 2021) -> dict:
    return {
        "scene_id": scene,
        "mgrs_tile": tile,
        "date": f"{year}-07-15",
        "year": year,
        "model": "demo-unet",
        "weights_sha256": "ab" * 32,
        "run_id": "run-1",
    }


def _two_zone_frames(year: int = 2021) -> list[gpd.GeoDataFrame]:
    a = _scene(32607, (-1500, 1500))
    # Zone 8 grid: starts at -700 m (cuts that slump), clouded over the right half of another.
    b = _scene(32608, (-700, 2300), nan_box=(500, 300, 700, 700))
    return [
        vectorize(a, threshold=0.5, attrs=_attrs(f"S2A_07WEU_{year}", "07WEU", year)),
        vectorize(b, threshold=0.5, attrs=_attrs(f"S2A_08WMC_{year}", "08WMC", year)),
    ]


def test_merge_two_utm_zones_each_slump_once() -> None:
    frames = _two_zone_frames()
    assert frames[0].crs.to_epsg() == 32607 and frames[1].crs.to_epsg() == 32608
    # The setting works as designed: B cuts one slump at its edge and one at a cloud.
    assert frames[1]["touches_invalid"].sum() == 2 and frames[0]["touches_invalid"].sum() == 1

    merged = merge_polygons(frames)
    assert merged.crs.to_epsg() == 3413
    assert list(merged.columns) == ["geometry", *RTS_COLUMNS]
    assert len(merged) == len(SLUMPS)
    assert merged.geometry.is_valid.all()
    assert set(merged.geometry.geom_type) == {"MultiPolygon"}

    truth = _truth().to_crs(3413)
    for name, geom in truth.items():
        hits = merged[merged.intersects(geom)]
        assert len(hits) == 1, name
        row = hits.iloc[0]
        u = row.geometry
        assert u.intersection(geom).area / u.union(geom).area > 0.85, name
        # A slump cut in one scene and whole in the other is flagged complete.
        assert not row["touches_invalid"], name
        expect = 1 if name.startswith("only") else 2
        assert row["n_scenes"] == expect, name
        assert len(row["scene_ids"].split(",")) == expect
        assert row["n_scenes_complete"] == 1 if name.startswith(("cut", "cloud", "only")) else 2
        true_area = gpd.GeoSeries([geom], crs=3413).to_crs(6931).area.iloc[0]
        assert row["area_m2"] == pytest.approx(true_area, rel=0.1), name
    assert merged["mean_prob"].to_numpy() == pytest.approx(0.9)
    assert set(merged["year"]) == {2021}


def test_merge_is_deterministic_and_keeps_years_apart() -> None:
    frames = _two_zone_frames()
    one = merge_polygons(frames)
    two = merge_polygons(frames[::-1])
    assert list(one["rts_id"]) == list(two["rts_id"])
    assert one["rts_id"].is_unique and one["rts_id"].str.match(r"RTS2021_[+-]\d{7}_[+-]\d{7}").all()
    assert all(a.equals_exact(b, 1e-6) for a, b in zip(one.geometry, two.geometry, strict=True))
    # The same polygons in another year are not merged with 2021's.
    both = merge_polygons([*frames, *_two_zone_frames(2022)])
    assert len(both) == 2 * len(SLUMPS)
    assert merge_polygons([frames[0].iloc[:0]]).columns.tolist() == ["geometry", *RTS_COLUMNS]


def test_merge_prefers_the_complete_view() -> None:
    crs = "EPSG:32608"
    whole = box(0, 0, 200, 200)
    cut = box(0, 0, 120, 200)
    seen = gpd.GeoDataFrame(
        {
            "scene_id": ["cloudy", "clear"],
            "touches_invalid": [True, False],
            "mean_prob": [0.6, 0.8],
            "max_prob": [0.7, 0.95],
            "n_pixels": [240, 400],
            "year": [2021, 2021],
        },
        geometry=[cut.buffer(0), whole],
        crs=crs,
    )
    m = merge_polygons([seen.iloc[[0]], seen.iloc[[1]]], crs=crs)
    assert len(m) == 1
    r = m.iloc[0]
    assert r.geometry.area == pytest.approx(whole.area)
    assert r["mean_prob"] == pytest.approx(0.8) and r["max_prob"] == pytest.approx(0.95)
    assert r["scene_ids"] == "clear,cloudy" and r["scene_mean_probs"] == "0.800,0.600"
    assert not r["touches_invalid"] and r["n_scenes_complete"] == 1
    # Only cut views: their union is kept and the slump stays flagged.
    only_cut = seen.iloc[[0]].assign(touches_invalid=True)
    other_cut = only_cut.assign(scene_id="other").set_geometry([box(80, 0, 200, 200)], crs=crs)
    m = merge_polygons([only_cut, other_cut], crs=crs)
    assert len(m) == 1 and m.iloc[0]["touches_invalid"]
    assert m.iloc[0].geometry.area == pytest.approx(whole.area)
    # drop_cut drops a slump no scene saw whole, and keeps one seen whole elsewhere
    assert len(merge_polygons([only_cut, other_cut], crs=crs, drop_cut=True)) == 0
    kept = merge_polygons([seen.iloc[[0]], seen.iloc[[1]]], crs=crs, drop_cut=True)
    assert len(kept) == 1 and kept.iloc[0]["scene_ids"] == "clear,cloudy"


def _square(cx: float, cy: float, side: float) -> shapely.Polygon:
    return box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def _inventory(geoms: list, year: int, crs: str = "EPSG:3413") -> gpd.GeoDataFrame:
    frame = gpd.GeoDataFrame(
        {"year": [year] * len(geoms), "scene_id": [f"s{year}"] * len(geoms)},
        geometry=geoms,
        crs=crs,
    )
    return merge_polygons([frame], crs=crs)


def test_change_layer_classes() -> None:
    # 200 m squares: area 40000 m2, perimeter 800 m, ring 8000 m2 > 10 % (4000 m2).
    prev = _inventory(
        [
            _square(0, 0, 200),  # stable: 210 m -> +4100 m2 < 8000
            _square(1000, 0, 200),  # grown: 250 m -> +22500 m2
            _square(2000, 0, 200),  # shrunk: 150 m -> -17500 m2
            _square(3000, 0, 200),  # not detected
            _square(4000, 0, 100),  # two that coalesce into one grown slump
            _square(4100, 0, 80),
        ],
        2021,
    )
    curr = _inventory(
        [
            _square(0, 0, 210),
            _square(1000, 0, 250),
            _square(2000, 0, 150),
            _square(4050, 0, 260),
            _square(6000, 0, 100),  # new
        ],
        2022,
    )
    ch = change_layer(prev, curr)
    assert list(ch.columns) == ["geometry", *CHANGE_COLUMNS]
    got = sorted(zip(ch["change"], ch["rts_ids_prev"].str.count(",") + 1, strict=True))
    assert got == sorted(
        [("stable", 1), ("grown", 1), ("shrunk", 1), ("not_detected", 1), ("grown", 2), ("new", 1)]
    )
    assert set(ch["year_prev"]) == {2021} and set(ch["year_curr"]) == {2022}
    # The ring threshold, not 10 %, decides for the stable one: a 0.1 ring would call it grown.
    stable = ch[ch["change"] == "stable"].iloc[0]
    assert stable["d_area_m2"] > 0.10 * stable["area_prev_m2"]
    assert change_layer(prev, curr, ring_px=0.1).query("change == 'stable'").empty
    assert ch.geometry.is_valid.all()
    # A year without slumps before: everything is new, and the years still say which.
    first = change_layer(prev.iloc[:0], curr, years=(2021, 2022))
    assert set(first["change"]) == {"new"} and len(first) == len(curr)
    assert set(first["year_prev"]) == {2021}
    none = change_layer(prev.iloc[:0], curr.iloc[:0], years=(2021, 2022))
    assert len(none) == 0 and list(none.columns) == ["geometry", *CHANGE_COLUMNS]


# --- GeoPackage -------------------------------------------------------------------------------


def _scenes(year: int) -> list[dict]:
    return [
        {
            "scene_id": f"S2A_07WEU_{year}",
            "mgrs_tile": "07WEU",
            "datetime": f"{year}-07-15T20:00:00Z",
            "epsg": 32607,
            "status": "done",
            "n_polygons": 5,
            "geometry": box(LON - 0.1, LAT - 0.05, LON + 0.02, LAT + 0.05),
            "bands": ["B04", "B08"],  # not a fixed column: kept in `extra`
        },
        {
            "item_id": f"S2A_08WMC_{year}",  # the pipeline's records name it as STAC does
            "mgrs_tile": "08WMC",
            "status": "failed",
            "error": "HTTP 500 while reading B04",
            "geometry": None,
        },
    ]


def _run(year: int) -> dict:
    return {
        "run_id": f"run-{year}",
        "stac_url": "http://127.0.0.1:9999",
        "config": {"threshold": 0.5},
        "timings": {"predict_s": 1.5},
    }


def _check_gpkg(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What `ogrinfo` would check: readable without warnings, CRS, index, valid geometries."""
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layers = dict(pyogrio.list_layers(path))
        for layer, gtype in layers.items():
            info = pyogrio.read_info(path, layer=layer, force_feature_count=True)
            frame = pyogrio.read_dataframe(path, layer=layer)
            if layer.startswith(("rts_", "changes_", "scenes")):
                assert gtype == "MultiPolygon" and info["crs"] == "EPSG:3413", layer
                assert frame.geometry.dropna().is_valid.all(), layer
            else:
                assert gtype is None, layer
    gdal_warnings = [w for w in caught if "pyogrio" in w.filename or "GDAL" in str(w.message)]
    assert not gdal_warnings, [str(w.message) for w in gdal_warnings]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        srs = dict(db.execute("SELECT table_name, srs_id FROM gpkg_geometry_columns").fetchall())
    for layer, gtype in layers.items():
        if gtype is not None:
            assert f"rtree_{layer}_geom" in tables, layer
            assert srs[layer] == 3413, layer
    assert not list(path.parent.glob(f".{path.name}.tmp-*"))
    with sqlite3.connect(path) as db:
        # GeoPackage 1.2: older GDAL/QGIS read it without a version warning.
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
    ogrinfo = shutil.which("ogrinfo")
    if ogrinfo:  # the GDAL command line, when installed, must not warn either
        done = subprocess.run(
            [ogrinfo, "-so", "-al", str(path)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def _layer_digest(path: Path, layer: str) -> str:
    with sqlite3.connect(path) as db:
        rows = db.execute(f'SELECT * FROM "{layer}" ORDER BY fid').fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


@pytest.mark.filterwarnings("error::RuntimeWarning")  # GDAL's warnings reach Python as these
def test_write_read_append_overwrite(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gpkg = tmp_path / "inventory.gpkg"
    m21 = merge_polygons(_two_zone_frames(2021))
    write_inventory(gpkg, m21, year=2021, run=_run(2021), scenes=_scenes(2021))
    _check_gpkg(gpkg, caplog)
    layers = sorted(name for name, _ in pyogrio.list_layers(gpkg))
    assert layers == ["layer_styles", "rts_2021", "runs", "scenes"]
    back = read_inventory(gpkg, 2021)
    assert list(back.columns) == [*RTS_COLUMNS, *DATE_COLUMNS, "geometry"]
    assert back["touches_invalid"].dtype == bool
    assert list(back["rts_id"]) == list(m21["rts_id"])
    assert back.geometry.area.to_numpy() == pytest.approx(m21.geometry.area.to_numpy())
    scenes = pyogrio.read_dataframe(gpkg, layer="scenes")
    assert list(scenes.columns) == [*SCENE_COLUMNS, "geometry"]
    assert scenes.set_index("scene_id").loc["S2A_08WMC_2021", "error"].startswith("HTTP 500")
    assert "B08" in scenes["extra"].iloc[0] and scenes["geometry"].iloc[1] is None

    # A second year: rts_2021 stays byte-for-byte the same rows; a change layer appears.
    before = _layer_digest(gpkg, "rts_2021")
    gone = _truth()[["both", "only_A"]]  # these two are not seen in 2022
    frames22 = [f[~f.intersects(gone.to_crs(f.crs).union_all())] for f in _two_zone_frames(2022)]
    write_inventory(gpkg, merge_polygons(frames22), year=2022, run=_run(2022), scenes=_scenes(2022))
    _check_gpkg(gpkg, caplog)
    assert _layer_digest(gpkg, "rts_2021") == before
    assert inventory_years(gpkg) == [2021, 2022]
    changes = pyogrio.read_dataframe(gpkg, layer="changes_2021_2022")
    assert (changes["change"] == "not_detected").sum() == 2
    assert (changes["change"] == "stable").sum() == len(SLUMPS) - 2
    assert len(read_inventory(gpkg)) == 2 * len(SLUMPS) - 2

    with pytest.raises(InventoryError, match="overwrite"):
        write_inventory(gpkg, m21, year=2021, run=_run(2021), scenes=_scenes(2021))
    write_inventory(
        gpkg, m21.iloc[:2], year=2021, run=_run(2021), scenes=_scenes(2021)[:1], overwrite=True
    )
    _check_gpkg(gpkg, caplog)
    assert len(read_inventory(gpkg, 2021)) == 2
    runs = pyogrio.read_dataframe(gpkg, layer="runs")
    assert list(runs.columns) == list(RUN_COLUMNS) and len(runs) == 3
    assert '"predict_s": 1.5' in runs["info"].iloc[0]
    assert '"gdal": "3.' in runs["versions"].iloc[0] and '"torch"' in runs["versions"].iloc[0]
    scenes = pyogrio.read_dataframe(gpkg, layer="scenes")
    assert sorted(scenes["year"]) == [2021, 2022, 2022]  # 2021's rows replaced, not added
    with pytest.raises(InventoryError, match="2023"):
        read_inventory(gpkg, 2023)


def test_last_write_info_and_change_counts(tmp_path: Path) -> None:
    gpkg = tmp_path / "inventory.gpkg"
    assert last_write_info(gpkg, 2021) is None and change_counts(gpkg, 2022) is None
    write_inventory(
        gpkg, merge_polygons(_two_zone_frames(2021)), year=2021, run=_run(2021), scenes=[]
    )
    first = {**_run(2021), "fingerprint": "a"}
    write_inventory(
        gpkg,
        merge_polygons(_two_zone_frames(2021)),
        year=2021,
        run=first,
        scenes=[],
        overwrite=True,
    )
    assert last_write_info(gpkg, 2021)["fingerprint"] == "a"  # the last write of that year
    assert last_write_info(gpkg, 2022) is None and change_counts(gpkg, 2022) is None
    gone = _truth()[["both"]]
    frames22 = [f[~f.intersects(gone.to_crs(f.crs).union_all())] for f in _two_zone_frames(2022)]
    write_inventory(gpkg, merge_polygons(frames22), year=2022, run=_run(2022), scenes=[])
    assert last_write_info(gpkg, 2021)["fingerprint"] == "a"
    assert "fingerprint" not in last_write_info(gpkg, 2022)
    counts = change_counts(gpkg, 2022)
    assert list(counts) == ["new", "grown", "shrunk", "stable", "not_detected"]
    assert counts["not_detected"] == 1 and counts["stable"] == len(SLUMPS) - 1
    assert change_counts(gpkg, 2021) is None


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_empty_year_is_a_layer_with_the_schema(tmp_path: Path, caplog) -> None:
    gpkg = tmp_path / "empty.gpkg"
    # Scenes as a GeoDataFrame, shaped like the pipeline's records (item_id, footprint).
    scenes = gpd.GeoDataFrame(
        {"item_id": ["S2B_X"], "status": ["done"], "cloud_cover": [12.5], "n_polygons": [0]},
        geometry=[box(LON - 0.1, LAT - 0.05, LON + 0.02, LAT + 0.05)],
        crs="EPSG:4326",
    )
    write_inventory(gpkg, merge_polygons([]), year=2020, run={"run_id": "r"}, scenes=scenes)
    _check_gpkg(gpkg, caplog)
    info = pyogrio.read_info(gpkg, layer="rts_2020")
    assert info["features"] == 0 and list(info["fields"]) == [*RTS_COLUMNS, *DATE_COLUMNS]
    back = pyogrio.read_dataframe(gpkg, layer="scenes")
    assert back["scene_id"].tolist() == ["S2B_X"] and back["run_id"].tolist() == ["r"]
    assert back["cloud_cover"].tolist() == [12.5] and back["year"].tolist() == [2020]
    assert back.crs.to_epsg() == 3413 and back.geometry.iloc[0].area > 1e7


_WRITER = textwrap.dedent(
    """
    import sys
    import time
    import geopandas as gpd
    from shapely.geometry import box
    import arctic_rts.inventory
    from arctic_rts.inventory import write_inventory
    from arctic_rts.merge import merge_polygons
    if len(sys.argv) > 2:  # hold the write once the new file is complete, before the rename
        def pause(tmp, path):
            print(f"test pause in write of {path}", file=sys.stderr, flush=True)
            time.sleep(float(sys.argv[2]))
        arctic_rts.inventory._before_replace = pause
    frame = gpd.GeoDataFrame({"year": [2022], "scene_id": ["s"]},
                             geometry=[box(0, 0, 500, 500)], crs="EPSG:3413")
    write_inventory(sys.argv[1], merge_polygons([frame]), year=2022, run={"run_id": "child"},
                    scenes=[])
    print("done", flush=True)
    """
)


def test_lock_refuses_second_writer_and_a_kill_leaves_the_old_file(tmp_path: Path) -> None:
    gpkg = tmp_path / "inv.gpkg"
    write_inventory(gpkg, _inventory([_square(0, 0, 300)], 2021), year=2021, run={}, scenes=[])
    digest = hashlib.sha256(gpkg.read_bytes()).hexdigest()

    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(gpkg), "60"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stderr is not None
        line = child.stderr.readline()  # printed once the new file is complete, before rename
        assert "test pause in write" in line, line
        assert list(tmp_path.glob(".inv.gpkg.tmp-*")), "the child writes into a temporary copy"
        with pytest.raises(InventoryLockedError, match=str(child.pid)):
            write_inventory(gpkg, _inventory([], 2023), year=2023, run={}, scenes=[])
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    # Killed inside the write: the old file is untouched and the lock died with the process.
    assert hashlib.sha256(gpkg.read_bytes()).hexdigest() == digest
    assert inventory_years(gpkg) == [2021]
    with lock_inventory(gpkg):
        pass
    # The next writer succeeds and removes the killed writer's temporary file.
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, str(gpkg)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert inventory_years(gpkg) == [2021, 2022]
    assert not list(tmp_path.glob(".inv.gpkg.tmp-*"))


def test_lock_is_reentrant_in_one_thread(tmp_path: Path) -> None:
    gpkg = tmp_path / "inv.gpkg"
    with lock_inventory(gpkg):
        write_inventory(gpkg, _inventory([_square(0, 0, 300)], 2021), year=2021, run={}, scenes=[])
    assert inventory_years(gpkg) == [2021]


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_exports(tmp_path: Path) -> None:
    gpkg = tmp_path / "inv.gpkg"
    write_inventory(
        gpkg,
        _inventory([_square(0, 0, 300), _square(5000, 0, 200)], 2021),
        year=2021,
        run={},
        scenes=[],
    )
    write_inventory(
        gpkg,
        _inventory([_square(0, 0, 400), _square(9000, 0, 200)], 2022),
        year=2022,
        run={},
        scenes=[],
    )
    pq = export_geoparquet(gpkg)
    assert pq == tmp_path / "inv.parquet"
    table = gpd.read_parquet(pq)
    assert table.crs.to_epsg() == 3413 and sorted(table["year"]) == [2021, 2021, 2022, 2022]

    regions = gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[box(-1000, -1000, 1000, 1000), box(4000, -1000, 10000, 1000)],
        crs="EPSG:3413",
    ).to_crs(6931)  # another CRS than the inventory's (these squares lie near the pole)
    csv = summary_csv(gpkg, regions)
    assert csv == tmp_path / "inv_summary.csv"
    s = pd.read_csv(csv).set_index(["region", "year"])
    assert s.loc[("west", 2021), "n_slumps"] == 1
    # Areas are true (equal-area) areas: EPSG:3413 shrinks lengths ~3% near the pole.
    true_area = gpd.GeoSeries([_square(0, 0, 400)], crs=3413).to_crs(6931).area.iloc[0]
    assert true_area > 165000
    assert s.loc[("west", 2022), "total_area_m2"] == pytest.approx(true_area, rel=1e-6)
    assert s.loc[("west", 2022), "n_grown"] == 1
    assert s.loc[("east", 2022), "n_new"] == 1 and s.loc[("east", 2022), "n_not_detected"] == 1
    assert np.isnan(s.loc[("east", 2021), "n_new"])
    # Counts are written as whole numbers ("1", not "1.0"), empty without a previous year.
    raw = pd.read_csv(csv, dtype=str, keep_default_na=False).set_index(["region", "year"])
    assert raw.loc[("east", "2022"), "n_new"] == "1" and raw.loc[("east", "2021"), "n_new"] == ""
    total = pd.read_csv(summary_csv(gpkg, out=tmp_path / "all.csv"))
    assert list(total["n_slumps"]) == [2, 2]
