"""vectorize: thresholding, objects, attributes, flags; a round trip on real slump outlines."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401 - registers the .rio accessor
import shapely
import xarray as xr
from rasterio.features import rasterize
from rasterio.transform import from_origin

from arctic_rts.config import DEFAULT_MIN_AREA_M2, VectorizeConfig
from arctic_rts.errors import ConfigError
from arctic_rts.vectorize import VECTOR_COLUMNS, vectorize

ATTRS = {
    "scene_id": "S2A_08WMB_20210715_0_L2A",
    "mgrs_tile": "08WMB",
    "date": "2021-07-15",
    "year": 2021,
    "model": "demo-unet",
    "weights_sha256": "ab" * 32,
    "run_id": "run-1",
}


def _grid(values: np.ndarray, epsg: int, x0: float, y1: float, res: float = 10.0) -> xr.DataArray:
    h, w = values.shape
    return xr.DataArray(
        values,
        dims=("y", "x"),
        coords={"y": y1 - res * (np.arange(h) + 0.5), "x": x0 + res * (np.arange(w) + 0.5)},
    ).rio.write_crs(epsg)


def _scene() -> np.ndarray:
    a = np.full((60, 80), 0.1, np.float32)
    a[10:20, 10:25] = 0.8  # 150 px, interior
    a[30:40, 0:10] = 0.9  # touches the left edge
    a[45:55, 40:60] = 0.7  # next to a NaN pixel
    a[50, 60] = np.nan
    a[3, 70] = 0.95  # one pixel
    # Two blocks joined only at a corner: one object with 8-connectivity, two with 4.
    a[25:28, 40:43] = 0.6
    a[28:31, 43:46] = 0.6
    return a


def test_vectorize_objects_attributes_and_flags() -> None:
    prob = _grid(_scene(), 32608, 500000.0, 7700000.0)
    g = vectorize(prob, threshold=0.5, config=VectorizeConfig(min_area_m2=0), attrs=ATTRS)
    assert list(g.columns) == ["geometry", *VECTOR_COLUMNS, *ATTRS]
    assert g.crs.to_epsg() == 32608
    assert len(g) == 5
    assert g.geometry.is_valid.all()
    by_px = g.set_index("n_pixels")
    assert sorted(by_px.index) == [1, 18, 100, 150, 200]
    interior = by_px.loc[150]
    assert not interior["touches_invalid"]
    assert interior["mean_prob"] == pytest.approx(0.8) and interior["max_prob"] == pytest.approx(
        0.8
    )
    # UTM shrinks lengths by 0.9996 near the central meridian: true area is slightly larger.
    assert interior["area_m2"] == pytest.approx(15000 / 0.9996**2, rel=2e-3)
    assert interior["perimeter_m"] == pytest.approx(500 / 0.9996, rel=2e-3)
    assert interior.geometry.area == pytest.approx(15000)
    assert by_px.loc[100, "touches_invalid"]  # array edge
    assert by_px.loc[200, "touches_invalid"]  # NaN neighbour
    assert not by_px.loc[18, "touches_invalid"]
    assert (g["run_id"] == "run-1").all() and (g["year"] == 2021).all()


def test_vectorize_min_area_threshold_override_connectivity_opening() -> None:
    prob = _grid(_scene(), 32608, 500000.0, 7700000.0)
    g = vectorize(prob, threshold=0.5)  # default min area 2000 m2 = 20 px
    assert sorted(g["n_pixels"]) == [100, 150, 200]
    # config.threshold overrides the card's default: 0.75 drops the 0.7 object.
    g = vectorize(prob, threshold=0.5, config=VectorizeConfig(threshold=0.75))
    assert sorted(g["n_pixels"]) == [100, 150]
    g = vectorize(prob, threshold=0.5, config=VectorizeConfig(min_area_m2=0, connectivity=4))
    assert sorted(g["n_pixels"]) == [1, 9, 9, 100, 150, 200]
    g = vectorize(prob, threshold=0.5, config=VectorizeConfig(min_area_m2=0, opening_px=1))
    # A radius-1 disk is a cross: it rounds corners off and cuts the diagonal neck.
    assert sorted(g["n_pixels"]) == [5, 5, 96, 146, 196]
    with pytest.raises(ConfigError, match="threshold"):
        vectorize(prob, threshold=None)
    with pytest.raises(ValueError, match="CRS"):
        vectorize(xr.DataArray(_scene(), dims=("y", "x")), threshold=0.5)


def test_vectorize_dask_input_attrs_from_array_and_empty_result() -> None:
    values = _scene()
    prob = _grid(values, 32608, 500000.0, 7700000.0)
    lazy = prob.copy(data=da.from_array(values, chunks=(25, 25)))
    lazy.attrs.update(item_id="S2B_X", mgrs_tile="08WMB", datetime="2021-07-15T20:11:09Z")
    g = vectorize(lazy, threshold=0.5)
    # An object crossing dask chunk borders is still one object.
    assert sorted(g["n_pixels"]) == [100, 150, 200]
    assert set(g["scene_id"]) == {"S2B_X"} and set(g["year"]) == {2021}
    assert set(g["date"]) == {"2021-07-15"}

    for empty_values in (np.zeros_like(values), np.full_like(values, np.nan)):
        e = vectorize(prob.copy(data=empty_values), threshold=0.5, attrs=ATTRS)
        assert len(e) == 0
        assert list(e.columns) == ["geometry", *VECTOR_COLUMNS, *ATTRS]
        assert e.crs.to_epsg() == 32608
        assert e["touches_invalid"].dtype == bool and e["n_pixels"].dtype == np.int64


def _utm_epsg(lon: float, lat: float) -> int:
    zone = min(int((lon + 180) // 6) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def _nitze_slumps(shared_data: Path) -> gpd.GeoDataFrame:
    """Valid slump polygons of every iteration (label 1 stored as int or text; nulls dropped)."""
    files = sorted(
        (shared_data / "rts_labels_nitze" / "retrogressive_thaw_slumps").glob(
            "*/TrainingLabel_*.gpkg"
        )
    )
    assert files, "no Nitze label files found"
    frames = []
    for f in files:
        g = gpd.read_file(f)
        label = pd.to_numeric(g["label"], errors="coerce")
        ok = (label == 1) & g.geometry.notna()
        g = g[ok]
        g = g[g.geometry.is_valid & ~g.geometry.is_empty]
        frames.append(g[["geometry"]].to_crs("EPSG:4326"))
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")


def _round_trip(slumps: gpd.GeoDataFrame) -> pd.DataFrame:
    """Rasterise each outline on a 10 m grid of its UTM zone, vectorise, compare."""
    pts = slumps.geometry.representative_point()
    epsg = np.array([_utm_epsg(p.x, p.y) for p in pts])
    rows = []
    for code in np.unique(epsg):
        for geom in slumps[epsg == code].to_crs(int(code)).geometry:
            minx, miny, maxx, maxy = geom.bounds
            x0 = np.floor(minx / 10) * 10 - 20
            y1 = np.ceil(maxy / 10) * 10 + 20
            w = int(np.ceil((maxx - x0) / 10)) + 2
            h = int(np.ceil((y1 - miny) / 10)) + 2
            mask = rasterize(
                [(geom, 1)], out_shape=(h, w), transform=from_origin(x0, y1, 10, 10), dtype="uint8"
            )
            prob = _grid(mask.astype(np.float32), int(code), x0, y1)
            out = vectorize(prob, threshold=0.5, config=VectorizeConfig(min_area_m2=0))
            assert out.geometry.is_valid.all()
            true_area = gpd.GeoSeries([geom], crs=int(code)).to_crs("EPSG:6931").area.iloc[0]
            if len(out):
                merged = shapely.union_all(out.geometry.values)
                iou = merged.intersection(geom).area / merged.union(geom).area
                area = float(out["area_m2"].sum())
            else:
                iou, area = 0.0, 0.0
            rows.append((true_area, area, iou))
    r = pd.DataFrame(rows, columns=["true_area", "area", "iou"])
    r["pixels"] = r["true_area"] / 100.0
    r["ok"] = ((r["area"] - r["true_area"]).abs() <= 0.1 * r["true_area"]) & (r["iou"] >= 0.8)
    return r


def _shares(r: pd.DataFrame) -> dict[int, tuple[int, float]]:
    return {
        n: (int((r.pixels >= n).sum()), float(r[r.pixels >= n].ok.mean())) for n in (20, 50, 100)
    }


@pytest.mark.realdata
def test_round_trip_real_slump_outlines_sample(shared_data: Path) -> None:
    slumps = _nitze_slumps(shared_data)
    assert len(slumps) > 3000
    # Every 15th outline of 20 px or more: a fast, fixed sample of all four iterations.
    big = slumps[slumps.to_crs("EPSG:6931").area >= 2000].iloc[::15]
    shares = _shares(_round_trip(big))
    print("round trip sample (n, share ok) at >=20/50/100 px:", shares)
    assert shares[50][0] >= 100
    assert shares[50][1] >= 0.95
    assert shares[100][1] >= 0.95


@pytest.mark.realdata
@pytest.mark.slow
def test_round_trip_real_slump_outlines_all(shared_data: Path) -> None:
    shares = _shares(_round_trip(_nitze_slumps(shared_data)))
    print("round trip all outlines (n, share ok) at >=20/50/100 px:", shares)
    assert shares[50][1] >= 0.95
    assert shares[100][1] >= 0.95


def test_measure_polygons_geodesic_perimeter_counts_holes_and_parts() -> None:
    from pyproj import Geod
    from shapely.geometry import MultiPolygon, Polygon, box

    from arctic_rts.vectorize import measure_polygons

    outer = box(0, 60, 0.01, 60.01)
    holed = Polygon(outer.exterior.coords, [box(0.002, 60.002, 0.004, 60.004).exterior.coords])
    multi = MultiPolygon([outer, box(1, 61, 1.02, 61.01)])
    geoms = gpd.GeoSeries([outer, holed, multi, Polygon()], crs=4326).to_crs(32631)
    area, perimeter = measure_polygons(geoms, "EPSG:6931")
    geod = Geod(ellps="WGS84")
    expected = [geod.geometry_length(g.boundary) for g in [outer, holed, multi]]
    assert perimeter[:3] == pytest.approx(expected, rel=1e-6)
    assert perimeter[1] > perimeter[0] and perimeter[3] == 0 and area[3] == 0
    geodesic_area = abs(geod.geometry_area_perimeter(outer)[0])
    assert area[0] == pytest.approx(geodesic_area, rel=1e-3)


def test_the_model_card_fills_what_the_user_leaves_open() -> None:
    open_config = VectorizeConfig()
    assert open_config.for_model(0.7, 5000.0, 1, 0.5) == VectorizeConfig(
        threshold=0.7, min_area_m2=5000.0, opening_px=1, hysteresis_low=0.5
    )
    bare = open_config.for_model(0.7, None)
    assert (bare.min_area_m2, bare.opening_px, bare.hysteresis_low) == (DEFAULT_MIN_AREA_M2, 0, 0)
    users = VectorizeConfig(threshold=0.4, min_area_m2=0.0, opening_px=0, hysteresis_low=0.0)
    assert users.for_model(0.7, 5000.0, 2, 0.5) == users


def test_hysteresis_grows_objects_from_confident_cores_only() -> None:
    """Pixels between the lower cut and the threshold join an object only through a pixel at
    or above the threshold; object_mask holds exactly the pixels of the kept polygons."""
    values = np.full((40, 40), 0.1, dtype=np.float32)
    values[2:12, 2:12] = 0.4  # a rim of 100 px ...
    values[5:7, 5:7] = 0.8  # ... around a confident core of 4 px
    values[20:30, 20:30] = 0.4  # as probable as the rim, but no core: never an object
    values[35, 35] = np.nan
    prob = _grid(values, 32608, 500000.0, 7700000.0)
    plain = vectorize(prob, threshold=0.5, config=VectorizeConfig(min_area_m2=0))
    assert sorted(plain["n_pixels"]) == [4]
    grown = vectorize(
        prob, threshold=0.5, config=VectorizeConfig(min_area_m2=0, hysteresis_low=0.3)
    )
    assert sorted(grown["n_pixels"]) == [100]
    from arctic_rts.vectorize import object_mask

    config = VectorizeConfig(min_area_m2=5000.0, hysteresis_low=0.3)
    mask = object_mask(values, 0.5, config, pixel_area_m2=100.0)
    assert mask.sum() == 100 and mask[2:12, 2:12].all()
    assert not object_mask(values, 0.5, VectorizeConfig(min_area_m2=5000.0), 100.0).any()
    with pytest.raises(ConfigError, match="below the threshold"):
        vectorize(prob, threshold=0.5, config=VectorizeConfig(hysteresis_low=0.6))
    with pytest.raises(ConfigError, match="hysteresis_low"):
        VectorizeConfig(hysteresis_low=1.2)


def _smooth_scene(seed: int, h: int = 150, w: int = 140) -> np.ndarray:
    """Blobs of every size and shape (smoothed noise), a few NaN pixels: objects that cross
    block seams along edges, at corners and through diagonal necks."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.random((h, w)), 2.5)
    a = ((a - a.min()) / (a.max() - a.min())).astype(np.float32)
    a[rng.random((h, w)) < 0.003] = np.nan
    return a


@pytest.mark.parametrize(
    "config",
    [
        VectorizeConfig(min_area_m2=0),
        VectorizeConfig(min_area_m2=0, connectivity=4),
        VectorizeConfig(min_area_m2=300, opening_px=1),
        VectorizeConfig(min_area_m2=0, opening_px=2, hysteresis_low=0.45),
        VectorizeConfig(min_area_m2=0, hysteresis_low=0.4, connectivity=4),
    ],
    ids=["plain", "4-connected", "opening", "opening+hysteresis", "hysteresis-4"],
)
def test_windowed_vectorize_gives_the_whole_scene_polygons(config: VectorizeConfig) -> None:
    """Block by block, with pieces joined across seams (hysteresis decided across windows, the
    opening given its context), the result is the whole-array one: same rows, same order,
    same vertices, same numbers."""
    from arctic_rts.vectorize import vectorize_windows

    for seed in range(3):
        values = _smooth_scene(seed)
        prob = _grid(values, 32608, 500000.0, 7700000.0)
        whole = vectorize(prob, threshold=0.6, config=config, attrs=ATTRS)
        assert len(whole) > 0
        for chunks in ((32, 32), (37, 50), (150, 23)):
            lazy = prob.copy(data=da.from_array(values, chunks=chunks))
            windowed = vectorize_windows(lazy, threshold=0.6, config=config, attrs=ATTRS)
            got = windowed.compute(scheduler="sync")
            pd.testing.assert_frame_equal(
                got.drop(columns="geometry"), whole.drop(columns="geometry")
            )
            assert shapely.equals_exact(got.geometry.values, whole.geometry.values, 0).all()
            assert got.crs == whole.crs


def test_windowed_vectorize_joins_one_object_cut_by_every_seam() -> None:
    """A ring-shaped slump over four blocks, a diagonal neck exactly on a block corner, and a
    weak rim whose only confident pixel lies in another block: one object each."""
    from arctic_rts.vectorize import vectorize_windows

    values = np.full((40, 40), 0.1, dtype=np.float32)
    values[10:30, 10:30] = 0.9
    values[14:26, 14:26] = 0.1  # a ring around the corner of four 20 px blocks
    values[0:3, 17:20] = 0.9  # a diagonal neck on the seam at column 20 ...
    values[3:6, 20:23] = 0.9  # ... crossing into the next block at its corner pixel
    values[33:38, 2:38] = 0.4  # a weak rim over two blocks ...
    values[35, 36] = 0.8  # ... seeded in the right-hand one only
    prob = _grid(values, 32608, 500000.0, 7700000.0)
    config = VectorizeConfig(min_area_m2=0, hysteresis_low=0.3)
    lazy = prob.copy(data=da.from_array(values, chunks=(20, 20)))
    got = vectorize_windows(lazy, threshold=0.5, config=config).compute(scheduler="sync")
    assert sorted(got["n_pixels"]) == [18, 180, 256]
    assert got.geometry.is_valid.all()
    ring = got.loc[got["n_pixels"] == 256].geometry.iloc[0]
    assert len(ring.interiors) == 1  # the hole is kept: pieces are unioned, not hulled


def test_a_probability_block_waits_for_its_windows_in_little_memory() -> None:
    """What a block keeps for the vectorise windows: NaN where it was NaN, its values at or
    above the floor, 0 elsewhere (what thresholding at or above the floor cannot tell apart),
    in far less than the block's 4 bytes per pixel when few pixels pass, and not much more
    when all do."""
    from dask.sizeof import sizeof

    from arctic_rts.vectorize import _Sparse

    rng = np.random.default_rng(5)
    block = (rng.random((300, 257)) ** 8).astype(np.float32)  # few pixels high
    block[:40, 100:140] = np.nan
    block[200, 7] = 0.3  # exactly at the floor: kept
    sparse = _Sparse(block, 0.3)
    want = np.where(np.isnan(block) | (block >= 0.3), block, np.float32(0))
    got = sparse.dense()
    assert got.dtype == np.float32 and got.shape == block.shape
    np.testing.assert_array_equal(got, want)  # NaN positions equal too
    assert 0 < (block >= 0.3).mean() < 0.25
    assert sizeof(sparse) < 0.35 * block.nbytes
    everywhere = _Sparse(np.full((300, 257), 0.9, dtype=np.float32), 0.3)
    assert (everywhere.dense() == 0.9).all()
    assert sizeof(everywhere) < 1.1 * block.nbytes


def test_a_windows_parts_tell_dask_their_size() -> None:
    """The parts a vectorise window keeps for the seam join count in Dask's memory accounting
    (the map-run memory traces read it): their arrays' bytes and their pieces' vertices."""
    from dask.sizeof import sizeof

    from arctic_rts.vectorize import _window_parts

    prob = np.zeros((64, 64), dtype=np.float32)
    prob[10:30, 10:30] = 0.9
    prob[40:60, 5:25] = 0.8
    parts = _window_parts(prob, (0, 0, 0, 0), (0, 0), (64, 64), 0.5, VectorizeConfig())
    arrays = sum(v.nbytes for v in vars(parts).values() if isinstance(v, np.ndarray))
    vertices = int(shapely.get_num_coordinates(np.asarray(parts.geoms, dtype=object)).sum())
    assert len(parts.geoms) == 2 and vertices >= 8
    assert sizeof(parts) >= arrays + 16 * vertices
