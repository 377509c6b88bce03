"""Turn selected STAC items into lazy, cloud-masked reflectance arrays (one per scene).

``load_scenes`` is the only reader of imagery in the mapping flow. Each scene stays on its own
UTM grid (no reprojection across zones: polygons are merged later, in vector form), and no pixel
is read until ``.compute()``: the arrays are dask graphs built by stackstac from STAC metadata.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from stackstac.rio_reader import AutoParallelRioReader, ThreadLocalRioDataset

from arctic_rts.asset_checks import UNSIGNED_HREF, asset_bounds, local_paths, non_regular_problem
from arctic_rts.bands import validate_bands
from arctic_rts.config import LoadConfig, NetworkConfig
from arctic_rts.errors import ConfigError, LoadError
from arctic_rts.net import gdal_http_options
from arctic_rts.search import normalize_item, sign_href, sign_item

#: An item-level sign hook (see :func:`arctic_rts.search.search_scenes`).
SignHook = Callable[[dict[str, Any]], dict[str, Any] | None]

#: Picks the chunks a scene is read in: given the scene's lazy array (its grid and CRS, in
#: ``LoadConfig.chunksize`` chunks), its chunk sizes along y and x (e.g.
#: :func:`arctic_rts.predict.input_chunks`, so reads match the model's tiles).
ChunkRule = Callable[[xr.DataArray], tuple[tuple[int, ...], tuple[int, ...]]]

#: Frozen, hence safe as a shared default argument.
_DEFAULT_CONFIG = LoadConfig()

#: Reflectance from coarser bands (20 m, 60 m) is interpolated onto the 10 m grid; class maps
#: (SCL) must never be interpolated.
_BAND_RESAMPLING = "bilinear"
_CLASS_RESAMPLING = "nearest"


def load_scenes(
    items: Iterable[Mapping[str, Any]],
    bands: Sequence[str],
    config: LoadConfig = _DEFAULT_CONFIG,
    network: NetworkConfig | None = None,
    *,
    sign: SignHook | None = None,
    chunks: ChunkRule | None = None,
) -> list[xr.DataArray]:
    """Build one lazy, masked surface-reflectance array per item.

    No I/O happens here: the result is a dask graph, and files are opened only when it is
    computed (``.compute()``, ``.values``, or a downstream dask task).

    Each array is on the item's own UTM grid (``proj:epsg``), spanning the extent of the item's
    finest band asset, at ``config.resolution`` metres, with pixel-centre coordinates. Steps:
    read the bands (bilinear from coarser bands; see :class:`NestedGridReader`) as float32;
    set the assets' nodata to NaN;
    apply each band's ``raster:bands`` scale and offset; set NaN where the SCL class (read with
    nearest neighbour) is in ``config.masked_scl_classes``; with ``config.water_scl_classes``,
    a boolean ``water`` coordinate ``(y, x)`` from the same SCL read.

    Args:
        items: STAC item dicts, normally from :func:`arctic_rts.search.search_scenes`; raw
            provider items are normalized here (see :func:`arctic_rts.search.normalize_item`).
        bands: Canonical band names in the order the model expects (the weights card's
            ``bands``); the output's ``band`` coordinate has exactly this order.
        config: Resolution, chunk size, masked and water SCL classes. With both class lists
            empty no SCL is read and items without SCL (e.g. L1C) can be loaded.
        network: Timeouts and retries of remote COG reads (GDAL's, see
            :func:`arctic_rts.net.gdal_http_options`).
        sign: The search's sign hook. Given, every asset href is signed (again, from its
            unsigned original) each time a block is read, in whichever process reads it, so
            expiring tokens are renewed during long runs; a changed signed URL reopens the file.
            (With ``loader="odc-stac"``, which has no such hook, hrefs are signed afresh when
            the graph is built.)
        chunks: Reads each scene in the chunks this rule picks for it instead of squares of
            ``config.chunksize`` (odc-stac, which reads in squares only, reads in squares of
            the largest chunk and splits them).

    Returns:
        One DataArray per item, in item order: dims ``("band", "y", "x")``, float32
        reflectance (about 0..1), NaN where invalid; CRS set with rioxarray; attrs ``item_id``,
        ``mgrs_tile``, ``datetime`` (ISO 8601), ``epsg``.

    Hrefs are read as given: items from :func:`arctic_rts.search.search_scenes` have passed
    its checks (:mod:`arctic_rts.asset_checks`); items built by the caller are the caller's.
    Only a local href that exists and is not a regular file (a FIFO, on which GDAL's open
    would block for ever) is refused here.

    Raises:
        ConfigError: ``bands`` is empty, repeats a band, names a non-canonical band or SCL.
        LoadError: An item lacks a requested band or the SCL mask, its grid is unknown, or a
            local href is not a regular file.
    """
    band_list = list(validate_bands(bands))
    gdal = gdal_http_options(network or NetworkConfig())
    return [
        _load_item(normalize_item(item), band_list, config, gdal, sign, chunks) for item in items
    ]


def _load_item(
    item: dict[str, Any],
    bands: list[str],
    config: LoadConfig,
    gdal: dict[str, str],
    sign: SignHook | None = None,
    chunks: ChunkRule | None = None,
) -> xr.DataArray:
    """The lazy, scaled, masked array of one normalized item."""
    item_id = str(item["id"])
    props = item.get("properties", {})
    use_mask, use_water = bool(config.masked_scl_classes), bool(config.water_scl_classes)
    needed = [*bands, "SCL"] if use_mask or use_water else bands
    missing = [b for b in needed if b not in item["assets"]]
    if missing:
        hint = (
            " (or pass LoadConfig(masked_scl_classes=(), water_scl_classes=()) to load without "
            "the SCL masks)"
            if missing == ["SCL"]
            else ""
        )
        raise LoadError(
            f"Item {item_id!r} has no asset for band(s) {', '.join(missing)}; choose scenes "
            f"from a collection that carries them{hint}."
        )
    _refuse_non_regular(item, needed)
    epsg = props.get("proj:epsg")
    if epsg is None:
        raise LoadError(
            f"Item {item_id!r} has no proj:epsg (nor proj:code); its UTM grid is unknown."
        )
    grid = _grid(item, needed, int(epsg), config, gdal)

    if sign is not None:
        item = _unsigned(item)
    raw = _stack(item, bands, grid, _BAND_RESAMPLING, sign)
    if chunks is not None:  # the grid first (no I/O), then the graph again in the chunks picked
        grid = {**grid, "chunksize": chunks(raw.rio.write_crs(int(epsg)))}
        raw = _stack(item, bands, grid, _BAND_RESAMPLING, sign)
    scale = _band_vector(item, bands, "scale", 1.0)
    offset = _band_vector(item, bands, "offset", 0.0)
    nodata = _band_vector(item, bands, "nodata", np.nan)
    # Nodata is matched on the digital numbers, before scaling changes them.
    valid = raw != nodata
    reflectance = (raw * scale + offset).where(valid)
    if use_mask or use_water:
        scl = _stack(item, ["SCL"], grid, _CLASS_RESAMPLING, sign).squeeze("band", drop=True)
    if use_mask:
        clear = ~scl.isin(list(config.masked_scl_classes)) & scl.notnull()
        reflectance = reflectance.where(clear)

    out = reflectance.astype(np.float32).transpose("band", "y", "x")
    if use_water:
        # a coordinate, not NaN: water gets probability 0 after prediction (predict keeps it)
        out = out.assign_coords(water=scl.isin(list(config.water_scl_classes)))
    out.attrs = {
        "item_id": item_id,
        "mgrs_tile": str(props.get("s2:mgrs_tile", "")),
        "datetime": str(props.get("datetime", "")),
        "epsg": int(epsg),
    }
    out.name = "reflectance"
    return out.rio.write_crs(int(epsg))


def _refuse_non_regular(item: dict[str, Any], assets: list[str]) -> None:
    """Refuse local hrefs that exist but are not regular files (a FIFO would block GDAL's open
    for ever), before any graph that opens them exists."""
    hrefs = [item["assets"][k].get(key) for k in assets for key in ("href", UNSIGNED_HREF)]
    for path in local_paths(str(h) for h in hrefs if h):
        problem = non_regular_problem(os.path.realpath(path))
        if problem:
            raise LoadError(f"Item {item['id']!r}: cannot read {problem}.")


def _unsigned(item: dict[str, Any]) -> dict[str, Any]:
    """A copy of the item whose hrefs are the catalog's, before any search-time signing."""
    assets = {
        k: {**a, "href": a.get(UNSIGNED_HREF, a.get("href"))} for k, a in item["assets"].items()
    }
    return {**item, "assets": assets}


#: GDAL settings while stackstac opens a file, over stackstac's own (which turn ``VSI_CACHE`` on
#: when opening, so that a COG's header is read once): the cache that wraps each open file
#: handle keeps up to ``VSI_CACHE_SIZE`` bytes of the file (GDAL's default: 25 MB) for as long as
#: the handle is open, and the reads of a scene keep its files open, one handle per file and
#: reading thread, for the whole scene (:func:`arctic_rts.predict.predict`). 1 MiB holds a
#: COG's header and tile index; decoded tiles are cached by GDAL's block cache
#: (``GDAL_CACHEMAX``, :data:`arctic_rts.cluster.WORKER_ENV`).
OPEN_GDAL_ENV: dict[str, str] = {"VSI_CACHE_SIZE": str(2**20)}


class _SharedDataset:
    """One open dataset (and its VRT) for every thread of the process, read by one thread at a
    time: GDAL caches decoded tiles per dataset, so with stackstac's dataset per thread a tile
    that two threads need is fetched and decoded twice (what that costs over HTTP:
    BENCHMARKS.md, "Remote COG reads"). Same interface as the ThreadLocalRioDataset it wraps,
    which it takes from the thread that opened it."""

    def __init__(self, inner: ThreadLocalRioDataset) -> None:
        # stackstac 0.5.1 internals (pinned in pyproject.toml): the environment, VRT parameters
        # and, for the thread that opened it, the open dataset or VRT
        self._env, self._vrt_params = inner._env, inner._vrt_params
        self.scale_offset = inner.scale_offset
        self.dataset = inner.dataset
        self.lock = threading.Lock()
        self._inner = inner

    def read(self, window: Any, **kwargs: Any) -> Any:
        with _reading(self):
            return self.dataset.read(window=window, **kwargs)

    def close(self) -> None:
        with self.lock:
            self.dataset = None
            self._inner.close()


@contextlib.contextmanager
def _reading(inner: Any) -> Iterator[None]:
    """What a read through ``inner`` (stackstac's dataset per thread, or a shared one) holds:
    the shared dataset's lock, where it has one, and the GDAL environment of its reads."""
    with getattr(inner, "lock", contextlib.nullcontext()), inner._env.read:
        yield


def _remote(url: str) -> bool:
    """Whether GDAL reads ``url`` over a network: a URL (http, s3, gs...) or a GDAL network
    path (/vsicurl/...), not a local path, a file:// URL or an in-memory file."""
    from urllib.parse import urlsplit

    scheme = urlsplit(url).scheme.lower()
    if len(scheme) > 1:  # one letter: a Windows drive
        return scheme != "file"
    return url.startswith("/vsi") and not url.startswith("/vsimem/")


class NestedGridReader(AutoParallelRioReader):  # type: ignore[misc]
    """stackstac's reader, but a file whose pixels hold a whole number of the output grid's
    (a 20 m band or SCL onto the 10 m grid, same CRS, aligned edges) is read with GDAL's
    RasterIO resampling instead of through a ``WarpedVRT`` (``bench/reads.py`` has the speed).
    Same method and weights, same nodata mask; where a bilinear value falls on an exact half of
    a digital number the two may round it differently (one number, 1e-4 in reflectance). Any
    other file, and any window that reaches past the file's edge, goes through stackstac's own
    warped read."""

    #: (k, column and row offset) once worked out for this file; None: not nested.
    _nest: tuple[int, int, int] | bool | None = False
    #: Which files a worker opens once and reads one thread at a time (:class:`_SharedDataset`):
    #: "remote" (the others get stackstac's dataset per reading thread), "all" or "none";
    #: ``bench/io_overlap.py`` compares them.
    shared_files: str = "remote"

    def _open(self) -> Any:
        if self.shared_files not in ("remote", "all", "none"):
            raise ValueError(f"shared_files must be remote, all or none, got {self.shared_files!r}")
        opened = super()._open()
        share = self.shared_files == "all" or (self.shared_files == "remote" and _remote(self.url))
        if isinstance(opened, ThreadLocalRioDataset) and share:
            return _SharedDataset(opened)
        return opened

    @property
    def dataset(self) -> Any:
        # stackstac's per-thread dataset and its VRT parameters: internals of stackstac 0.5.1,
        # its last release, which pyproject.toml pins
        inner = AutoParallelRioReader.dataset.fget(self)
        params = getattr(inner, "_vrt_params", None)
        if not isinstance(inner, ThreadLocalRioDataset | _SharedDataset) or not params:
            return inner  # no warp needed, or a driver stackstac reads on one thread
        if self._nest is False:
            with _reading(inner):
                src = inner.dataset.src_dataset
                self._nest = _nesting(src.crs, src.transform, self.spec.epsg, params["transform"])
        if not isinstance(self._nest, tuple):
            return inner
        return _NestedRead(inner, *self._nest, self.resampling)


def _nesting(src_crs: Any, src: Any, epsg: int, dst: Any) -> tuple[int, int, int] | None:
    """(k, column, row offset in output pixels) when each pixel of a file on ``src_crs`` and
    affine ``src`` covers k x k whole pixels of the output grid (``epsg``, affine ``dst``)."""
    if src_crs is None or src_crs.to_epsg() != epsg or src.b or src.d or dst.b or dst.d:
        return None
    k, ky = src.a / dst.a, src.e / dst.e
    cols, rows = (dst.c - src.c) / dst.a, (dst.f - src.f) / dst.e
    whole = all(abs(v - round(v)) < 1e-9 for v in (k, ky, cols, rows))
    if not whole or round(k) < 2 or round(k) != round(ky):
        return None
    return round(k), round(cols), round(rows)


class _NestedRead:
    """A thread-local dataset's ``read`` with windows of the output grid mapped onto the file's
    own pixels (fractional where a window's edge falls inside one) and resampled by GDAL."""

    def __init__(self, inner: Any, k: int, cols: int, rows: int, resampling: Any) -> None:
        self.inner, self.k, self.cols, self.rows = inner, k, cols, rows
        self.resampling = resampling

    def read(self, window: Any, **kwargs: Any) -> Any:
        from rasterio.windows import Window

        k = self.k
        col, row = (window.col_off + self.cols) / k, (window.row_off + self.rows) / k
        width, height = window.width / k, window.height / k
        with _reading(self.inner):
            src = self.inner.dataset.src_dataset
            if col < 0 or row < 0 or col + width > src.width or row + height > src.height:
                return self.inner.dataset.read(window=window, **kwargs)
            return src.read(
                window=Window(col, row, width, height),
                out_shape=(src.count, int(window.height), int(window.width)),
                resampling=self.resampling,
                **kwargs,
            )


def _signing_reader(sign: SignHook) -> type:
    """A stackstac reader class that signs its href through ``sign`` on every block read."""

    class SigningReader(NestedGridReader):
        def __init__(self, *, url: str, **kwargs: Any) -> None:
            super().__init__(url=url, **kwargs)
            self._unsigned_url = url
            self._opened_url: str | None = None

        def read(self, window: Any, **kwargs: Any) -> np.ndarray:
            url = sign_href(sign, self._unsigned_url)
            with self._dataset_lock:
                if url != self._opened_url:
                    # A renewed token: the open dataset's URL would be refused from now on.
                    opened: Any = getattr(self, "_dataset", None)
                    if opened is not None:
                        opened.close()
                        setattr(self, "_dataset", None)  # noqa: B010 - untyped base attribute
                    self.url, self._opened_url = url, url
            return super().read(window, **kwargs)

    return SigningReader


def _grid(
    item: dict[str, Any], assets: list[str], epsg: int, config: LoadConfig, gdal: dict[str, str]
) -> dict[str, Any]:
    """The output grid of one item: its UTM CRS, the extent of ``assets``, the resolution (and
    the GDAL options its reads run with)."""
    return {
        "epsg": epsg,
        "resolution": config.resolution,
        "bounds": _item_bounds(item, assets),
        "chunksize": config.chunksize,
        "gdal": gdal,
        "loader": config.loader,
    }


def _stack(
    item: dict[str, Any],
    assets: list[str],
    grid: dict[str, Any],
    resampling: str,
    sign: SignHook | None = None,
) -> xr.DataArray:
    """stackstac (or odc-stac) over one item and the given assets, as (band, y, x) float32 with
    NaN fill."""
    if grid["loader"] == "odc-stac":
        # odc-stac has no per-read hook: its hrefs are signed afresh when the graph is built.
        signed = item if sign is None else sign_item(copy.deepcopy(item), sign)
        return _stack_odc(signed, assets, grid, resampling)
    import stackstac
    from rasterio.enums import Resampling

    reader = NestedGridReader if sign is None else _signing_reader(sign)

    # stackstac 0.5.1 reads only proj:epsg (restored by normalize_item) and is given the exact
    # grid, so snapping would only shift it; raster:bands scaling is applied by the caller.
    stacked = stackstac.stack(
        [item],
        assets=assets,
        epsg=grid["epsg"],
        resolution=grid["resolution"],
        bounds=grid["bounds"],
        snap_bounds=False,
        resampling=Resampling[resampling],
        chunksize=grid["chunksize"],
        dtype=np.dtype("float32"),
        fill_value=np.float32(np.nan),
        rescale=False,
        xy_coords="center",
        properties=False,
        band_coords=False,
        # A missing or unreadable file is an error, not silent NaN.
        errors_as_nodata=(),
        gdal_env=stackstac.DEFAULT_GDAL_ENV.updated(always=grid["gdal"], open=OPEN_GDAL_ENV),
        reader=reader,
    )
    da = stacked.isel(time=0, drop=True).sel(band=assets)
    keep = {"band", "x", "y"}
    return da.drop_vars([c for c in da.coords if c not in keep])


def _stack_odc(
    item: dict[str, Any], assets: list[str], grid: dict[str, Any], resampling: str
) -> xr.DataArray:
    """:func:`_stack` through odc-stac: the same grid, pixel centres, float32 digital numbers.

    odc-stac resamples in the file's integer type, so a band read at another resolution differs
    from stackstac's by up to half a digital number.

    The GDAL HTTP options (timeouts, retries) are set with ``configure_rio``, on top of
    odc-stac's cloud defaults (no folder listing or side-car probes on open, as stackstac's);
    odc-stac captures them into the graph when it is built, so reads in Dask workers use them.
    """
    try:
        import odc.stac
        import pystac
        from odc.geo.geobox import GeoBox
    except ImportError as err:
        raise ConfigError(
            "LoadConfig.loader='odc-stac' needs odc-stac: pip install 'arctic-rts[odc]'."
        ) from err

    west, south, east, north = grid["bounds"]
    chunks = grid["chunksize"]
    square = chunks if isinstance(chunks, int) else max(max(c) for c in chunks)
    box = GeoBox.from_bbox(
        (west, south, east, north),
        f"EPSG:{grid['epsg']}",
        resolution=grid["resolution"],
        tight=True,
    )
    if grid["gdal"]:
        odc.stac.configure_rio(cloud_defaults=True, **grid["gdal"])
    # nodata stays a number: the caller matches it on the digital numbers, as with stackstac
    # only the assets asked for (providers' other assets, JP2 copies on S3..., share band names)
    # and no links (odc-stac would resolve local paths against the item's own self link)
    raw = {
        "stac_version": "1.0.0",
        **item,
        "links": [],
        "geometry": item.get("geometry") or box.extent.to_crs("EPSG:4326").geom.__geo_interface__,
        "assets": {k: _without_nodata(item["assets"][k]) for k in assets},
    }
    ds = odc.stac.load(
        [pystac.Item.from_dict(raw, preserve_dict=True)],
        bands=assets,
        geobox=box,
        resampling=resampling,
        dtype="float32",
        chunks={"x": square, "y": square},
        fail_on_error=True,
    )
    da = ds[assets].isel(time=0, drop=True).to_array("band")
    if not isinstance(chunks, int):
        da = da.chunk({"y": chunks[0], "x": chunks[1]})
    keep = {"band", "x", "y"}
    return da.drop_vars([c for c in da.coords if c not in keep]).astype(np.float32)


def _without_nodata(asset: dict[str, Any]) -> dict[str, Any]:
    """An asset whose ``raster:bands`` name no nodata (odc-stac would turn it into NaN)."""
    bands = asset.get("raster:bands")
    if not bands:
        return asset
    return {**asset, "raster:bands": [{k: v for k, v in b.items() if k != "nodata"} for b in bands]}


def _band_vector(item: dict[str, Any], bands: list[str], key: str, default: float) -> xr.DataArray:
    """One number per band from its ``raster:bands`` entry, as a float32 band-coordinate array."""
    values = []
    for band in bands:
        entry = (item["assets"][band].get("raster:bands") or [{}])[0]
        value = entry.get(key)
        values.append(default if value is None else float(value))
    return xr.DataArray(np.asarray(values, dtype=np.float32), dims="band", coords={"band": bands})


def _item_bounds(item: dict[str, Any], assets: list[str]) -> tuple[float, float, float, float]:
    """The item's extent in its UTM CRS, from the finest asset's proj:bbox or transform+shape."""
    best: tuple[float, tuple[float, float, float, float]] | None = None
    for name in assets:
        asset = item["assets"][name]
        found = asset_bounds(asset, item)
        if found is None:
            continue
        pixel, box = found
        if best is None or pixel < best[0]:
            best = (pixel, box)
    if best is None:
        raise LoadError(
            f"Item {item['id']!r} gives no proj:bbox, nor proj:transform and proj:shape, for its "
            "band assets, so its grid is unknown."
        )
    return best[1]
