"""load_scenes on tiny generated GeoTIFFs and on the real 29RKH COGs via the embedded STAC API."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject

from arctic_rts.bands import SCL_MASKED
from arctic_rts.catalog import serve_catalog
from arctic_rts.config import LoadConfig, SearchConfig
from arctic_rts.errors import ConfigError, LoadError
from arctic_rts.load import load_scenes
from arctic_rts.search import search_scenes, select_scenes

X0, Y0 = 500000.0, 7700000.0
N10 = 32  # pixels of a 10 m band; 20 m bands have half


def _write_tif(path: Path, data: np.ndarray, pixel: float, epsg: int) -> None:
    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": f"EPSG:{epsg}",
        "transform": from_origin(X0, Y0, pixel, pixel),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 16,
        "blockysize": 16,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def _red_dn() -> np.ndarray:
    rows, cols = np.mgrid[0:N10, 0:N10]
    dn = (1000 + 10 * rows + cols).astype(np.uint16)
    dn[0, 0] = 0  # nodata
    return dn


def _scl() -> np.ndarray:
    scl = np.full((N10 // 2, N10 // 2), 4, np.uint8)  # vegetation
    scl[0:4, 8:12] = 9  # cloud, high probability
    scl[10, 10] = 11  # snow
    scl[12, 3] = 5  # bare soil: clear
    return scl


def _write_rasters(folder: Path, epsg: int = 32633) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_tif(folder / "B04.tif", _red_dn(), 10, epsg)
    _write_tif(folder / "B08.tif", np.full((N10, N10), 3000, np.uint16), 10, epsg)
    _write_tif(folder / "B11.tif", np.full((N10 // 2, N10 // 2), 2000, np.uint16), 20, epsg)
    _write_tif(folder / "SCL.tif", _scl(), 20, epsg)


def _item(
    folder: Path, item_id: str = "S2B_33WXS_20210715_0_L2A", epsg: int = 32633, style: str = "es"
) -> dict[str, Any]:
    """An item in Earth Search v1 style (colour keys, raster:bands) or Planetary Computer style."""
    keys = {"B04": "red", "B08": "nir", "B11": "swir16", "SCL": "scl"}
    assets: dict[str, Any] = {}
    for band, key in keys.items():
        pixel = 10 if band in ("B04", "B08") else 20
        asset: dict[str, Any] = {
            "href": str(folder / f"{band}.tif"),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "proj:shape": [N10 * 10 // pixel, N10 * 10 // pixel],
            "proj:transform": [pixel, 0, X0, 0, -pixel, Y0],
        }
        if style == "es":
            entry: dict[str, Any] = {"nodata": 0}
            if band != "SCL":
                entry.update(scale=0.0001, offset=-0.1)
            asset["raster:bands"] = [entry]
        assets[key if style == "es" else band] = asset
    props: dict[str, Any] = {
        "datetime": "2021-07-15T10:00:00Z",
        "eo:cloud_cover": 3.0,
        "s2:processing_baseline": "05.00",
    }
    if style == "es":
        props.update({"proj:epsg": epsg, "mgrs:utm_zone": 33, "mgrs:latitude_band": "W",
                      "mgrs:grid_square": "XS"})  # fmt: skip
    else:
        props.update({"proj:code": f"EPSG:{epsg}", "s2:mgrs_tile": "33WXS"})
    return {"type": "Feature", "id": item_id, "properties": props, "assets": assets, "links": []}


def _expected_red() -> np.ndarray:
    dn = _red_dn().astype(np.float32)
    expected = dn * np.float32(1e-4) + np.float32(-0.1)
    scl10 = np.kron(_scl(), np.ones((2, 2), np.uint8))
    expected[np.isin(scl10, SCL_MASKED) | (dn == 0)] = np.nan
    return expected


@pytest.mark.parametrize("style", ["es", "pc"])
def test_bands_in_asked_order_scaled_and_masked(tmp_path: Path, style: str) -> None:
    _write_rasters(tmp_path)
    item = _item(tmp_path, style=style)
    [da] = load_scenes([item], ["B11", "B04", "B08"])
    assert da.dims == ("band", "y", "x")
    assert list(da.band.values) == ["B11", "B04", "B08"]
    assert da.dtype == np.float32
    assert da.shape == (3, N10, N10)
    assert da.rio.crs.to_epsg() == 32633
    assert tuple(da.rio.transform())[:6] == (10.0, 0.0, X0, 0.0, -10.0, Y0)
    assert da.attrs == {
        "item_id": item["id"],
        "mgrs_tile": "33WXS",
        "datetime": "2021-07-15T10:00:00Z",
        "epsg": 32633,
    }
    values = da.values
    np.testing.assert_allclose(values[1], _expected_red(), rtol=0, atol=1e-7)
    cloud = np.isnan(_expected_red())
    # Offset -0.1 applies to every band (baseline >= 04.00), also when derived for PC items.
    np.testing.assert_allclose(values[2][~cloud], 0.2, atol=1e-6)
    # The 20 m band is interpolated onto the 10 m grid; a constant field stays constant.
    np.testing.assert_allclose(values[0][~cloud], 0.1, atol=1e-6)
    # The mask is the same for every band except the red band's own nodata pixel.
    assert np.array_equal(np.isnan(values[0]), np.isnan(values[2]))
    assert np.isnan(values[1, 0, 0]) and not np.isnan(values[0, 0, 0])
    assert np.isnan(values[:, 0:8, 16:24]).all()  # cloud
    assert np.isnan(values[:, 20:22, 20:22]).all()  # snow
    assert not np.isnan(values[:, 24:26, 6:8]).any()  # bare soil stays


@pytest.mark.parametrize("cloud_mask", [True, False])
def test_water_mask_lines_up_with_the_scene(tmp_path: Path, cloud_mask: bool) -> None:
    """SCL water (class 6) as a boolean coordinate on exactly the scene's grid, from the same
    SCL read as the cloud mask, with or without that mask."""
    _write_rasters(tmp_path)
    scl = _scl()
    scl[6:8, 2:6] = 6  # a lake
    _write_tif(tmp_path / "SCL.tif", scl, 20, 32633)
    item = _item(tmp_path)
    masked = SCL_MASKED if cloud_mask else ()
    config = LoadConfig(masked_scl_classes=masked, water_scl_classes=(6,))
    [da] = load_scenes([item], ["B04", "B08"], config)
    water = da["water"]
    assert water.dims == ("y", "x") and water.dtype == bool
    assert np.array_equal(water.x.values, da.x.values)
    assert np.array_equal(water.y.values, da.y.values)
    expected = np.kron(scl == 6, np.ones((2, 2), bool))
    assert np.array_equal(water.values, expected) and expected.sum() == 32
    [plain] = load_scenes([item], ["B04", "B08"], LoadConfig(masked_scl_classes=masked))
    assert "water" not in plain.coords
    np.testing.assert_array_equal(da.values, plain.values)  # water is not masked as invalid
    del item["assets"]["scl"]
    with pytest.raises(LoadError, match="no asset for band"):
        load_scenes([item], ["B04"], config)
    with pytest.raises(ConfigError, match="SCL classes 0-11"):
        LoadConfig(water_scl_classes=(60,))


def test_nothing_is_read_before_compute(tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"
    [da] = load_scenes([_item(folder)], ["B04"])
    assert not folder.exists()
    assert da.chunks is not None
    # The files appear only now; computing reads them.
    _write_rasters(folder)
    np.testing.assert_allclose(da.values[0], _expected_red(), rtol=0, atol=1e-7)


def test_files_are_opened_with_a_bounded_vsi_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stackstac opens files with GDAL's VSI cache on, which keeps up to VSI_CACHE_SIZE bytes
    of a file for as long as its handle is open, and a scene's reads keep its files open for
    the whole scene: the product's bound must be in effect when GDAL opens each file."""
    from rasterio.env import get_gdal_config
    from stackstac import rio_reader

    from arctic_rts.load import OPEN_GDAL_ENV

    _write_rasters(tmp_path)
    seen: list[tuple[Any, Any]] = []
    real = rio_reader.SelfCleaningDatasetReader.__init__

    def opened(self: Any, *args: Any, **kwargs: Any) -> None:
        seen.append((get_gdal_config("VSI_CACHE"), get_gdal_config("VSI_CACHE_SIZE")))
        real(self, *args, **kwargs)

    monkeypatch.setattr(rio_reader.SelfCleaningDatasetReader, "__init__", opened)
    [da] = load_scenes([_item(tmp_path)], ["B04", "B11"])
    # threads, not "sync": GDAL settings left in this thread by a read here stopped the
    # odc-stac retry test below from raising (seen in a CI run)
    da.compute(scheduler="threads")
    assert len(seen) >= 3  # B04, B11 and SCL
    assert set(seen) == {(True, int(OPEN_GDAL_ENV["VSI_CACHE_SIZE"]))}


def test_each_item_keeps_its_own_utm_zone(tmp_path: Path) -> None:
    _write_rasters(tmp_path / "z33", epsg=32633)
    _write_rasters(tmp_path / "z34", epsg=32634)
    items = [_item(tmp_path / "z33", "a", 32633), _item(tmp_path / "z34", "b", 32634)]
    arrays = load_scenes(items, ["B08"])
    assert [da.rio.crs.to_epsg() for da in arrays] == [32633, 32634]
    assert [da.attrs["item_id"] for da in arrays] == ["a", "b"]
    assert all(da.shape == (1, N10, N10) for da in arrays)


def test_missing_band_names_band_and_item(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"'S2B_33WXS_20210715_0_L2A'.*B12"):
        load_scenes([_item(tmp_path)], ["B04", "B12"])


def test_missing_scl_is_an_error_unless_the_mask_is_off(tmp_path: Path) -> None:
    _write_rasters(tmp_path)
    item = _item(tmp_path)
    del item["assets"]["scl"]
    with pytest.raises(LoadError, match=r"SCL.*masked_scl_classes"):
        load_scenes([item], ["B04"])
    [da] = load_scenes([item], ["B04"], LoadConfig(masked_scl_classes=()))
    values = da.values[0]
    # Only the nodata pixel is invalid without the cloud mask.
    assert np.isnan(values).sum() == 1 and np.isnan(values[0, 0])


@pytest.mark.parametrize(
    ("bands", "match"),
    [([], "empty"), (["B04", "SCL"], "SCL"), (["red"], "canonical"), (["B04", "B04"], "once")],
)
def test_bad_band_lists_are_config_errors(tmp_path: Path, bands: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_scenes([_item(tmp_path)], bands)


# --- the real 29RKH scene through the whole path ----------------------------------------------


@pytest.fixture(scope="module")
def rkh_api(shared_data: Path, rkh_folder: Path) -> Any:
    """The real 29RKH item, its hrefs pointed at the real COGs, served by the embedded API."""
    cogs = shared_data / "s2_l2a_cogs_29RKH"
    with serve_catalog(rkh_folder, asset_roots=[cogs]) as url:  # the COGs lie outside it
        yield url, cogs


def _rkh_scenes(url: str) -> list[dict[str, Any]]:
    """The real 29RKH item as a user's search finds it on the API: a February scene (explicit
    months), the tile at about 11.4 W, 24.8 N."""
    config = SearchConfig(months=(2,), max_cloud_cover=20.0)
    return select_scenes(
        search_scenes((-11.5, 24.7, -11.3, 24.9), 2020, stac_url=url, config=config)
    )


def _reference(
    path: Path, transform: Any, shape: tuple[int, int], method: Resampling, dtype: Any = None
) -> Any:
    """Read a COG with rasterio and warp it onto the requested grid, at its own dtype (or
    ``dtype``: a float type keeps the interpolated values unrounded)."""
    with rasterio.open(path) as src:
        out = np.zeros(shape, dtype or src.dtypes[0])
        reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=transform,
            dst_crs=src.crs,
            resampling=method,
            src_nodata=0,
            dst_nodata=0,
        )
    return out


def test_nesting_needs_whole_output_pixels_per_file_pixel() -> None:
    from affine import Affine
    from rasterio.crs import CRS

    from arctic_rts.load import _nesting

    utm = CRS.from_epsg(32629)
    src = Affine(20.0, 0, 199980.0, 0, -20.0, 2800020.0)
    assert _nesting(utm, src, 32629, Affine(10.0, 0, 200000.0, 0, -10.0, 2800000.0)) == (2, 2, 2)
    assert _nesting(utm, src, 32629, Affine(10.0, 0, 199985.0, 0, -10.0, 2800020.0)) is None
    assert _nesting(utm, src, 32629, Affine(30.0, 0, 199980.0, 0, -30.0, 2800020.0)) is None
    assert _nesting(utm, src, 32629, Affine(20.0, 0, 199980.0, 0, -20.0, 2800020.0)) is None
    assert _nesting(utm, src, 32630, Affine(10.0, 0, 199980.0, 0, -10.0, 2800020.0)) is None


@pytest.mark.realdata
@pytest.mark.parametrize(("resolution", "nested"), [(100.0, True), (30.0, False)])
def test_coarser_bands_skip_the_warper_only_where_their_pixels_nest(
    rkh_api: Any, monkeypatch: pytest.MonkeyPatch, resolution: float, nested: bool
) -> None:
    """B11 (200 m in these decimated files) onto a 100 m grid is read through GDAL's RasterIO
    resampling, window by window; onto a 30 m grid (no whole number of pixels) through
    stackstac's warped read, unchanged."""
    import arctic_rts.load as load_mod

    url, _ = rkh_api
    items = _rkh_scenes(url)
    calls: list[Any] = []
    real_read = load_mod._NestedRead.read

    def counted(self: Any, window: Any, **kwargs: Any) -> Any:
        calls.append(window)
        return real_read(self, window, **kwargs)

    monkeypatch.setattr(load_mod._NestedRead, "read", counted)
    cfg = LoadConfig(resolution=resolution, chunksize=256)
    [da] = load_scenes(items, ["B11"], cfg)
    got = da[:, :600, :600].values
    assert bool(calls) == nested
    monkeypatch.setattr(load_mod, "NestedGridReader", load_mod.AutoParallelRioReader)
    [warped] = load_scenes(items, ["B11"], cfg)
    ref = warped[:, :600, :600].values
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    apart = np.abs(got - ref)[~np.isnan(got)]
    if nested:  # rounding at exact halves only (the test above): one digital number at most
        assert apart.max() <= 1e-4 + 1e-7
    else:
        assert apart.max() == 0


@pytest.mark.realdata
def test_real_29rkh_via_api_equals_direct_rasterio_read(rkh_api: Any) -> None:
    url, cogs = rkh_api
    items = _rkh_scenes(url)
    assert [i["id"] for i in items] == ["S2A_29RKH_20200219_0_L2A"]
    bands = ["B11", "B04", "B01", "B02", "B8A"]
    # The COGs were decimated 10x: load at their 100 m grid.
    [da] = load_scenes(items, bands, LoadConfig(resolution=100.0))
    assert da.attrs["mgrs_tile"] == "29RKH" and da.attrs["epsg"] == 32629
    assert list(da.band.values) == bands
    assert da.shape == (5, 1098, 1098)
    transform = da.rio.transform()
    assert tuple(transform)[:6] == (100.0, 0.0, 199980.0, 0.0, -100.0, 2800020.0)
    values = da.values

    shape = (1098, 1098)
    scl = _reference(cogs / "SCL.tif", transform, shape, Resampling.nearest)
    masked = np.isin(scl, SCL_MASKED)
    for index, band in enumerate(bands):
        dn = _reference(cogs / f"{band}.tif", transform, shape, Resampling.bilinear)
        expected = dn.astype(np.float32) * np.float32(1e-4)  # baseline 02.14: no offset
        expected[masked | (dn == 0)] = np.nan
        if band in ("B04", "B02"):  # on the files' own grid: read as they are
            np.testing.assert_allclose(values[index], expected, rtol=0, atol=1e-7, err_msg=band)
            continue
        # Coarser bands are resampled by GDAL's RasterIO (load.NestedGridReader), the reference
        # by its warper: the same bilinear weights, rounded to whole digital numbers, but where
        # the interpolated value is an exact half either may round either way. Masks agree
        # exactly; values differ only there, and then by one number.
        got = values[index]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=band)
        valid = ~np.isnan(got)
        apart = np.rint(np.abs(got - expected)[valid] * 1e4)
        exact = _reference(cogs / f"{band}.tif", transform, shape, Resampling.bilinear, "f8")
        halves = np.abs(exact[valid] % 1 - 0.5) < 1e-3
        assert apart.max() <= 1 and not (apart.astype(bool) & ~halves).any(), band
    invalid = np.isnan(values[1]).mean()
    # The item states 4.05 % cloud cover (cirrus included); the SCL mask agrees.
    assert 0.02 < invalid < 0.08
    assert 0.0 < np.nanmean(values[1]) < 1.0


# --- the second loader -------------------------------------------------------------------------


def _both_loaders(items: list[dict[str, Any]], bands: list[str], **kw: Any) -> list[Any]:
    return [
        load_scenes(items, bands, LoadConfig(loader=loader, **kw))[0]
        for loader in ("stackstac", "odc-stac")
    ]


def _assert_same(a: Any, b: Any, atol: float = 1e-6) -> None:
    assert a.dims == b.dims and a.shape == b.shape and a.dtype == b.dtype == np.float32
    assert list(a.band.values) == list(b.band.values)
    np.testing.assert_array_equal(a.x.values, b.x.values)
    np.testing.assert_array_equal(a.y.values, b.y.values)
    assert a.rio.crs == b.rio.crs and a.attrs == b.attrs
    va, vb = a.values, b.values
    np.testing.assert_array_equal(np.isnan(va), np.isnan(vb))
    np.testing.assert_allclose(va, vb, rtol=0, atol=atol, equal_nan=True)


@pytest.mark.parametrize("style", ["es", "pc"])
def test_odc_stac_gives_the_same_arrays(tmp_path: Path, style: str) -> None:
    """Values, grid, nodata, cloud mask and offsets alike, with a 20 m band resampled."""
    _write_rasters(tmp_path)
    item = _item(tmp_path, style=style)
    stack, odc = _both_loaders([item], ["B11", "B04", "B08"])
    _assert_same(stack, odc)
    assert np.isnan(odc.values[1, 0, 0])  # the red band's nodata pixel
    with pytest.raises(ConfigError, match="loader"):
        LoadConfig(loader="gdal")


@pytest.mark.realdata
def test_odc_stac_gives_the_same_arrays_on_real_cogs(rkh_api: Any) -> None:
    url, _ = rkh_api
    items = _rkh_scenes(url)
    stack, odc = _both_loaders(items, ["B11", "B04", "B8A"], resolution=100.0)
    # odc-stac resamples in the files' integer type: up to half a digital number (1e-4) apart
    _assert_same(stack, odc, atol=0.5e-4 + 1e-6)


def test_odc_stac_reads_on_dask_workers_use_the_network_retries(tmp_path: Path) -> None:
    """The GDAL HTTP options of ``NetworkConfig`` reach odc-stac's reads in a worker process,
    as stackstac's: each file answers 503 twice before it serves, so one retry fails and three
    succeed (odc-stac's own default, ten, would succeed both times)."""
    from range_server import RangeServer

    from arctic_rts.cluster import connect
    from arctic_rts.config import ClusterConfig, NetworkConfig

    one_worker = ClusterConfig(n_workers=1, threads_per_worker=1, gpu="no")
    with RangeServer(tmp_path, fail_first=2) as server, connect(one_worker) as client:

        def read_red(retries: int, folder: str) -> Any:
            _write_rasters(tmp_path / folder)  # fresh URLs: nothing in GDAL's cache
            item = _item(tmp_path / folder)
            for asset in item["assets"].values():
                asset["href"] = f"{server.url}/{folder}/{Path(asset['href']).name}"
            network = NetworkConfig(max_retries=retries, backoff_s=0.1)
            [da] = load_scenes([item], ["B04"], LoadConfig(loader="odc-stac"), network)
            return client.compute(da).result(timeout=120)  # read in the worker process

        with pytest.raises(Exception, match="503"):
            read_red(1, "a")
        red = read_red(3, "b")

    np.testing.assert_allclose(red.values[0], _expected_red(), rtol=0, atol=1e-6)
    requests = server.traffic.requests
    asked = {path for path in requests if path.startswith("b/")}
    assert asked == {"b/B04.tif", "b/SCL.tif"}  # no folder listing, no side-car file probed
    assert all(requests[path] >= 3 for path in asked)  # two 503s, then the reads


def _reader_10m(href: str) -> Any:
    """The product's reader of one file onto the 10 m grid of ``_write_rasters``' files."""
    import stackstac
    from rasterio.enums import Resampling as Rs
    from stackstac.raster_spec import RasterSpec

    from arctic_rts.load import NestedGridReader

    spec = RasterSpec(
        epsg=32633, bounds=(X0, Y0 - 10 * N10, X0 + 10 * N10, Y0), resolutions_xy=(10.0, 10.0)
    )
    return NestedGridReader(
        url=href, spec=spec, resampling=Rs.nearest, dtype=np.dtype("float32"),
        fill_value=np.float32(np.nan), scale_offset=(1.0, 0.0),
        gdal_env=stackstac.DEFAULT_GDAL_ENV,
    )  # fmt: skip


@pytest.mark.parametrize("remote", [True, False])
def test_threads_share_one_open_remote_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: bool
) -> None:
    """A file read over HTTP is opened once per process and read by one thread at a time (GDAL
    caches decoded tiles per open dataset, so a dataset per thread fetches shared tiles again);
    a local file keeps stackstac's dataset per reading thread. Either way every thread reads
    the file's pixels, 10 m (no warp) and 20 m (GDAL's resampling onto the 10 m grid) alike."""
    from range_server import serve_folder
    from rasterio.windows import Window
    from stackstac import rio_reader

    from arctic_rts.load import _remote

    _write_rasters(tmp_path)
    opened: list[str] = []
    real = rio_reader.SelfCleaningDatasetReader.__init__

    def counted(self: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        opened.append(str(path))
        real(self, path, *args, **kwargs)

    monkeypatch.setattr(rio_reader.SelfCleaningDatasetReader, "__init__", counted)
    windows = [Window(c, r, 16, 16) for r in (0, 8, 16) for c in (0, 8, 16)] * 4
    with serve_folder(tmp_path) as (url, _):
        for band in ("B04", "B11"):
            href = f"{url}/{band}.tif" if remote else str(tmp_path / f"{band}.tif")
            assert _remote(href) == remote
            reader = _reader_10m(href)
            whole = reader.read(Window(0, 0, N10, N10))
            opened.clear()
            with ThreadPoolExecutor(4) as pool:
                parts = list(pool.map(reader.read, windows))
            for w, part in zip(windows, parts, strict=True):
                rows, cols = slice(w.row_off, w.row_off + 16), slice(w.col_off, w.col_off + 16)
                np.testing.assert_array_equal(part, whole[rows, cols])
            # remote: no file opened again; local: one dataset per other thread that read
            assert (len(opened) == 0) if remote else (1 <= len(opened) <= 4)
            reader.close()
            with rasterio.open(tmp_path / f"{band}.tif") as src:
                dn = src.read(1).astype("float32")
            dn[dn == 0] = np.nan
            np.testing.assert_array_equal(
                whole, np.kron(dn, np.ones((2, 2))) if band == "B11" else dn
            )


def test_remote_hrefs() -> None:
    from arctic_rts.load import _remote

    for href in ("https://e.org/a.tif", "s3://b/k.tif", "gs://b/k.tif", "/vsicurl/https://e/a"):
        assert _remote(href), href
    for href in ("/data/a.tif", "a.tif", "file:///data/a.tif", "C:\\data\\a.tif", "/vsimem/a"):
        assert not _remote(href), href


def test_unknown_file_sharing_is_refused(tmp_path: Path) -> None:
    from rasterio.windows import Window

    _write_rasters(tmp_path)
    reader = _reader_10m(str(tmp_path / "B04.tif"))
    reader.shared_files = "some"
    with pytest.raises(ValueError, match="shared_files must be remote, all or none"):
        reader.read(Window(0, 0, 16, 16))
