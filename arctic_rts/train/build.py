"""Building a patch dataset from label polygons and a STAC catalog (``arctic-rts dataset build``).

:func:`build_dataset` groups the cleaned labels (:func:`arctic_rts.train.data.read_labels`) per
labelled image, finds each image's closest Sentinel-2 scenes, rasterises the labels onto the
scenes' grids and cuts patches into a chunked zarr store (:func:`write_patches`), which
:class:`arctic_rts.train.data.PatchDataset` reads back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from arctic_rts.bands import L2A_BANDS, validate_bands
from arctic_rts.config import bbox_geometry, geometry_bbox, wrap_longitude
from arctic_rts.errors import DatasetError
from arctic_rts.files import atomic_folder
from arctic_rts.train.data import (
    IGNORE,
    PATCH_FORMAT,
    PATCH_FORMAT_VERSION,
    _read_frame,
    _warn,
    days_apart,
    parse_date,
    read_footprints,
    read_labels,
)
from arctic_rts.train.labels import LabelFormat

# --- writing patch datasets --------------------------------------------------------------------


@dataclass
class PatchWriter:
    """Append patches to one group of a zarr patch dataset (chunk = one patch).

    Use :func:`write_patches` to create the store; then ``writer.add(image, mask, valid, meta)``.
    """

    group: Any
    patch_size: int
    channels: int
    with_dem: bool

    def __post_init__(self) -> None:
        p, c = self.patch_size, self.channels
        self.image = self.group.create_array(
            "image", shape=(0, c, p, p), chunks=(1, c, p, p), dtype="float32", fill_value=np.nan
        )
        self.mask = self.group.create_array(
            "mask", shape=(0, 1, p, p), chunks=(1, 1, p, p), dtype="uint8", fill_value=IGNORE
        )
        self.dem = (
            self.group.create_array(
                "dem", shape=(0, 1, p, p), chunks=(1, 1, p, p), dtype="float32", fill_value=np.nan
            )
            if self.with_dem
            else None
        )
        self.meta: list[dict[str, Any]] = []

    def add(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        meta: Mapping[str, Any],
        dem: np.ndarray | None = None,
    ) -> None:
        """Append one patch: image (C,P,P) reflectance, mask (P,P) uint8 0/1/IGNORE."""
        self.image.append(image[None].astype(np.float32))
        self.mask.append(mask[None, None].astype(np.uint8))
        if self.dem is not None:
            if dem is None:
                raise DatasetError("this dataset stores a DEM; every patch needs one.")
            self.dem.append(dem[None, None].astype(np.float32))
        self.meta.append(dict(meta))

    def close(self) -> None:
        """Write the per-patch metadata."""
        self.group.attrs["patches"] = json.loads(json.dumps(self.meta, default=str))


def write_patches(
    path: str | Path,
    *,
    bands: Sequence[str],
    patch_size: int,
    stride: int,
    groups: Iterable[str] = ("labelled", "unlabelled"),
    with_dem: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, PatchWriter]:
    """Create a patch dataset and return one :class:`PatchWriter` per group.

    Call ``close()`` on every writer when done. ``metadata`` (label files, STAC URL, tolerance,
    scene ids...) is stored in the root attributes so the dataset can be reproduced.
    """
    import zarr

    root = zarr.open_group(str(path), mode="w")
    root.attrs.update(
        {
            "format": PATCH_FORMAT,
            "version": PATCH_FORMAT_VERSION,
            "bands": list(bands),
            "patch_size": patch_size,
            "stride": stride,
            "created": datetime.now().astimezone().isoformat(timespec="seconds"),
            **json.loads(json.dumps(dict(metadata or {}), default=str)),
        }
    )
    return {g: PatchWriter(root.create_group(g), patch_size, len(bands), with_dem) for g in groups}


def patch_windows(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of ``size`` windows with ``stride`` covering the array (last flush)."""
    if height < size or width < size:
        return []

    def starts(n: int) -> list[int]:
        s = list(range(0, n - size + 1, stride))
        if s[-1] != n - size:
            s.append(n - size)
        return s

    return [(y, x) for y in starts(height) for x in starts(width)]


# --- building a patch dataset from labels and a STAC catalog ------------------------------------


@dataclass(frozen=True)
class LabelledImage:
    """One labelled acquisition: its footprint, date (or year) and slump polygons (EPSG:4326)."""

    key: str
    footprint: Any
    labels: Any
    day: date | None
    year: int


def group_labels(
    labels: Any, footprints: Any | None = None, *, footprint_buffer_m: float = 1000.0
) -> list[LabelledImage]:
    """Group cleaned labels per labelled image and attach each image's footprint.

    Labels are grouped by ``image_id`` when present, else by date or year. A group whose image
    has no footprint gets the labels' bounding box grown by ``footprint_buffer_m`` (with a
    warning: background is then only sampled near the labels).
    """
    import shapely

    key_col = "image_id" if labels["image_id"].notna().all() else None
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(labels.itertuples()):
        key = str(row.image_id) if key_col else str(row.date or row.year)
        groups.setdefault(key, []).append(i)
    fp_by_id: dict[str, Any] = {}
    if footprints is not None:
        for row in footprints.itertuples():
            if row.geometry is not None and not row.geometry.is_empty:
                fp_by_id[str(row.image_id)] = row.geometry
        shared = (
            None
            if "image_id" in footprints.columns and footprints["image_id"].notna().all()
            else shapely.union_all(footprints.geometry.to_numpy())
        )
    else:
        shared = None
    out, missing = [], []
    for key, rows in groups.items():
        part = labels.iloc[rows]
        fp = fp_by_id.get(key, shared)
        if fp is None:
            missing.append(key)
            # grow the lon/lat box by the buffer in metres (spherical: plenty for a margin);
            # labels on both sides of 180 degrees get a box across it, not around the globe
            w, s, e, n = geometry_bbox(shapely.union_all(part.geometry.to_numpy()))
            dlat = footprint_buffer_m / 111_320.0
            coslat = max(math.cos(math.radians(max(abs(s), abs(n)))), 0.01)
            dlon = dlat / coslat
            grown = (wrap_longitude(w - dlon), max(s - dlat, -90.0),
                     wrap_longitude(e + dlon), min(n + dlat, 90.0))  # fmt: skip
            fp = bbox_geometry(grown)
        d = part["date"].iloc[0]
        year = int(part["year"].iloc[0]) if part["year"].iloc[0] is not None else d.year
        out.append(LabelledImage(key, fp, part, d, year))
    if missing:
        _warn(
            f"{len(missing)} labelled image(s) have no footprint (e.g. {missing[0]}); using the "
            f"labels' extent grown by {footprint_buffer_m:.0f} m as footprint."
        )
    return out


def closest_scenes(
    items: Sequence[Mapping[str, Any]], day: date, tolerance_days: int
) -> list[dict[str, Any]]:
    """Per MGRS tile, the scene closest in time to ``day`` within the tolerance (ties: clearer)."""
    from arctic_rts.search import mgrs_tile

    best: dict[str, tuple[tuple[int, float], dict[str, Any]]] = {}
    for item in items:
        when = parse_date(str(item["properties"].get("datetime", ""))[:10])
        if when is None:
            continue
        gap = days_apart(when, day)
        if gap > tolerance_days:
            continue
        rank = (gap, float(item["properties"].get("eo:cloud_cover", 100.0)))
        tile = mgrs_tile(item)
        if tile not in best or rank < best[tile][0]:
            best[tile] = (rank, dict(item))
    return [v[1] for v in best.values()]


def _season_months(day: date, tolerance_days: int) -> tuple[int, ...]:
    lo, hi = day - timedelta(days=tolerance_days), day + timedelta(days=tolerance_days)
    months = {lo.month, hi.month, day.month}
    m = lo.month
    while m != hi.month:
        m = m % 12 + 1
        months.add(m)
    return tuple(sorted(months))


def _clip(da: Any, geom_4326: Any) -> Any:
    """The scene's pixels within the geometry's bounding box (in the scene's CRS), computed."""
    import geopandas as gpd

    bounds = gpd.GeoSeries([geom_4326], crs="EPSG:4326").to_crs(da.rio.crs).total_bounds
    try:
        return da.rio.clip_box(*bounds).compute()
    except Exception:  # rioxarray raises NoDataInBounds (and friends) when nothing overlaps
        return None


def _rasterise(geoms: Sequence[Any], shape: tuple[int, int], transform: Any) -> np.ndarray:
    from rasterio.features import rasterize

    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return np.zeros(shape, dtype=bool)
    return rasterize(geoms, out_shape=shape, transform=transform, fill=0, default_value=1).astype(
        bool
    )


def _check_dem(dem_path: Path) -> None:
    """Refuse, before any search or read, a DEM that GDAL cannot open as a georeferenced raster."""
    import rasterio
    from rasterio.errors import RasterioIOError

    if not dem_path.is_file():
        raise DatasetError(f"DEM {dem_path} does not exist; give --dem a GeoTIFF.")
    try:
        with rasterio.open(dem_path) as src:
            if src.crs is None:
                raise DatasetError(f"DEM {dem_path} declares no CRS; assign one (gdal_edit.py).")
    except RasterioIOError as err:
        raise DatasetError(f"cannot read DEM {dem_path}: {err}") from err


def _dem_on(dem_path: Path, shape: tuple[int, int], transform: Any, crs: Any) -> np.ndarray:
    import rasterio
    from rasterio.warp import Resampling, reproject

    out = np.full(shape, np.nan, dtype=np.float32)
    with rasterio.open(dem_path) as src:
        reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=transform,
            dst_crs=crs,
            resampling=Resampling.bilinear,
            dst_nodata=np.nan,
        )
    return out


def _add_patches(
    writer: PatchWriter,
    image: np.ndarray,
    label: np.ndarray,
    transform: Any,
    meta: Mapping[str, Any],
    stride: int,
    min_valid: float,
    dem: np.ndarray | None,
) -> int:
    """Cut one scene clip into patches; keep those with enough valid pixels. Returns the count."""
    p = writer.patch_size
    _, h, w = image.shape
    valid_px = np.isfinite(image).all(axis=0) & (label != IGNORE)
    n = 0
    for y, x in patch_windows(h, w, p, stride):
        if valid_px[y : y + p, x : x + p].mean() < min_valid:
            continue
        origin = transform @ (x, y)
        writer.add(
            image[:, y : y + p, x : x + p],
            label[y : y + p, x : x + p],
            {**meta, "row": y, "col": x, "origin": [float(origin[0]), float(origin[1])]},
            dem=None if dem is None else dem[y : y + p, x : x + p],
        )
        n += 1
    return n


def region_boxes(regions: Sequence[Sequence[float]] | str | Path | Any | None) -> list[tuple]:
    """WGS84 ``(W, S, E, N)`` boxes from a list of boxes or a vector file/GeoDataFrame.

    Raises:
        ConfigError: A box that :func:`arctic_rts.config.validate_bbox` refuses.
    """
    from arctic_rts.config import validate_bbox

    if regions is None:
        return []
    if isinstance(regions, (str, Path)) or hasattr(regions, "geometry"):
        frame = _read_frame(regions, "region").to_crs("EPSG:4326")
        return [tuple(float(v) for v in g.bounds) for g in frame.geometry if g is not None]
    return [validate_bbox(list(r)) for r in regions]


@dataclass(frozen=True)
class _BuildParams:
    """What every scene of one :func:`build_dataset` call is cut with."""

    stac_url: str
    bands: tuple[str, ...]
    stride: int
    tolerance_days: int
    dem: Path | None
    min_valid: float
    load_config: Any
    max_cloud_cover: float


def build_dataset(
    labels: str | Path | Any,
    out: str | Path,
    *,
    stac_url: str,
    footprints: str | Path | Any | None = None,
    bands: Sequence[str] = L2A_BANDS,
    patch_size: int = 192,
    stride: int | None = None,
    tolerance_days: int = 21,
    unlabelled_regions: Sequence[Sequence[float]] | str | Path | Any | None = None,
    unlabelled_year: int | None = None,
    dem: str | Path | None = None,
    min_valid: float = 0.5,
    load_config: Any = None,
    max_cloud_cover: float = 60.0,
    label_format: LabelFormat | None = None,
) -> Path:
    """Turn label polygons plus a STAC catalog into a zarr patch dataset.

    For each labelled image (grouped by ``image_id``, else by date/year): the Sentinel-2 scene of
    each MGRS tile over its footprint closest in time to the image's date within
    ``tolerance_days`` (labels with only a year take the least cloudy summer scene), labels
    rasterised onto the scene's grid, pixels outside the footprint (and invalid pixels) marked
    ignore, patches of ``patch_size`` with ``stride``. Unlabelled patches come from the least
    cloudy summer scene per tile over each region of ``unlabelled_regions`` (WGS84 boxes, or a
    vector file / GeoDataFrame of region polygons such as study sites) in ``unlabelled_year``.
    With ``dem``, a DEM (any CRS, read with GDAL) is resampled onto every
    patch for the elevation pretext.

    ``labels`` may be a vector file, a CSV/XLSX table or a GeoDataFrame; ``label_format`` names
    a table's geometry columns and CRS, the date column, a fixed date for undated labels and a
    buffer for point or line labels (see :class:`~arctic_rts.train.labels.LabelFormat`).

    The store is written beside ``out`` under a temporary name and renamed into place only when
    complete: on any failure nothing (no partial zarr) is left, and an existing ``out`` stays.

    Returns:
        The ``.zarr`` path. Its attributes record labels, footprints, STAC URL, tolerance, bands,
        patch size, stride; each patch records image id, scene id, dates and its grid origin.

    Raises:
        DatasetError: no usable label, or no scene matched any labelled image.
        ConfigError: bad bands or region boxes.
    """
    from arctic_rts.config import LoadConfig

    stride = stride or patch_size // 2
    if patch_size < 16 or patch_size % 16 or stride < 1:
        raise DatasetError("patch_size must be a multiple of 16 and stride positive.")
    params = _BuildParams(
        stac_url=stac_url,
        bands=validate_bands(bands),
        stride=stride,
        tolerance_days=tolerance_days,
        dem=Path(dem) if dem is not None else None,
        min_valid=min_valid,
        load_config=load_config or LoadConfig(),
        max_cloud_cover=max_cloud_cover,
    )
    if params.dem is not None:
        _check_dem(params.dem)
    clean = read_labels(labels, fmt=label_format)
    fps = read_footprints(footprints) if footprints is not None else None
    images = group_labels(clean, fps)
    regions = region_boxes(unlabelled_regions)
    if regions and unlabelled_year is None:
        raise DatasetError("unlabelled regions need an unlabelled year (--unlabelled-year).")
    metadata = {
        "labels": str(labels) if isinstance(labels, (str, Path)) else "GeoDataFrame",
        "footprints": str(footprints) if footprints is not None else None,
        "stac_url": stac_url,
        "tolerance_days": tolerance_days,
        "unlabelled_regions": [list(r) for r in regions],
        "unlabelled_year": unlabelled_year,
        "dem": str(dem) if dem is not None else None,
        "min_valid": min_valid,
    }
    with atomic_folder(out, ".zarr") as tmp:
        writers = write_patches(
            tmp,
            bands=params.bands,
            patch_size=patch_size,
            stride=stride,
            with_dem=dem is not None,
            metadata=metadata,
        )
        n_lab = sum(_labelled_patches(img, params, writers["labelled"]) for img in images)
        if n_lab == 0:
            raise DatasetError(
                "no labelled patch could be cut: no scene matched the labelled images (check "
                "the STAC URL, the dates and tolerance_days) or the footprints hold too few "
                "valid pixels."
            )
        for region in regions:
            _unlabelled_patches(region, int(unlabelled_year or 0), params, writers["unlabelled"])
        for w in writers.values():
            w.close()
    return Path(out)


def scenes_for(
    img: LabelledImage, stac_url: str, tolerance_days: int, max_cloud_cover: float
) -> list[dict[str, Any]]:
    """The scenes a labelled image is cut from: per MGRS tile over its footprint, the one
    closest to its date within ``tolerance_days`` (dated labels), else the least cloudy summer
    scene of its year."""

    from arctic_rts.config import SearchConfig
    from arctic_rts.errors import NoScenesError
    from arctic_rts.search import search_scenes, select_scenes

    bbox = geometry_bbox(img.footprint)
    months = _season_months(img.day, tolerance_days) if img.day else (6, 7, 8)
    try:
        found = search_scenes(
            bbox,
            img.year,
            stac_url=stac_url,
            config=SearchConfig(months=months, max_cloud_cover=max_cloud_cover),
        )
    except NoScenesError:
        found = []
    return closest_scenes(found, img.day, tolerance_days) if img.day else select_scenes(found)


def plan_dataset(
    labels: str | Path | Any,
    *,
    stac_url: str,
    footprints: str | Path | Any | None = None,
    tolerance_days: int = 21,
    max_cloud_cover: float = 60.0,
    label_format: LabelFormat | None = None,
) -> list[dict[str, Any]]:
    """What :func:`build_dataset` would read, without reading a pixel or writing a file.

    Returns:
        One row per labelled image: ``image``, ``date`` (or year), ``n_labels`` and
        ``scenes`` (the ids of the scenes it would be cut from; empty when none matches).
    """
    images = group_labels(
        read_labels(labels, fmt=label_format), read_footprints(footprints) if footprints else None
    )
    rows = []
    for img in images:
        scenes = scenes_for(img, stac_url, tolerance_days, max_cloud_cover)
        rows.append(
            {
                "image": img.key,
                "date": str(img.day or img.year),
                "n_labels": len(img.labels),
                "scenes": [str(s["id"]) for s in scenes],
            }
        )
    return rows


def _labelled_patches(img: Any, params: _BuildParams, writer: Any) -> int:
    """Cut the patches of one labelled image from its scenes; returns how many were kept."""
    import geopandas as gpd

    from arctic_rts.load import load_scenes

    scenes = scenes_for(img, params.stac_url, params.tolerance_days, params.max_cloud_cover)
    if not scenes:
        _warn(
            f"labelled image {img.key}: no scene within {params.tolerance_days} days of "
            f"{img.day or img.year}; skipped."
        )
        return 0
    n = 0
    for item, da in zip(scenes, load_scenes(scenes, params.bands, params.load_config), strict=True):
        clip = _clip(da, img.footprint)
        if clip is None:
            continue
        transform = clip.rio.transform()
        shape = clip.shape[1:]
        crs = clip.rio.crs
        geoms = img.labels.to_crs(crs).geometry.to_numpy()
        fp = gpd.GeoSeries([img.footprint], crs="EPSG:4326").to_crs(crs).iloc[0]
        label = np.where(_rasterise(geoms, shape, transform), 1, 0).astype(np.uint8)
        label[~_rasterise([fp], shape, transform)] = IGNORE
        dem_arr = _dem_on(params.dem, shape, transform, crs) if params.dem is not None else None
        meta = {
            "image_id": img.key,
            "label_date": str(img.day) if img.day else None,
            "scene_id": item["id"],
            "scene_datetime": item["properties"].get("datetime"),
            "epsg": int(crs.to_epsg() or 0),
        }
        n += _add_patches(
            writer, clip.values, label, transform, meta, params.stride, params.min_valid, dem_arr
        )
    return n


def _unlabelled_patches(region: tuple, year: int, params: _BuildParams, writer: Any) -> None:
    """Cut unlabelled patches from the least cloudy summer scene per tile over ``region``."""

    from arctic_rts.config import SearchConfig
    from arctic_rts.errors import NoScenesError
    from arctic_rts.load import load_scenes
    from arctic_rts.search import search_scenes, select_scenes

    try:
        found = search_scenes(
            region, year, stac_url=params.stac_url,
            config=SearchConfig(max_cloud_cover=params.max_cloud_cover),
        )  # fmt: skip
    except NoScenesError:
        _warn(f"unlabelled region {list(region)}: no summer scene in {year}.")
        return
    chosen = select_scenes(found)
    for item, da in zip(chosen, load_scenes(chosen, params.bands, params.load_config), strict=True):
        clip = _clip(da, bbox_geometry(region, densify=0.01))
        if clip is None:
            continue
        shape = clip.shape[1:]
        transform = clip.rio.transform()
        label = np.zeros(shape, dtype=np.uint8)
        dem_arr = (
            _dem_on(params.dem, shape, transform, clip.rio.crs) if params.dem is not None else None
        )
        meta = {"scene_id": item["id"], "scene_datetime": item["properties"].get("datetime"),
                "region": list(region), "epsg": int(clip.rio.crs.to_epsg() or 0)}  # fmt: skip
        _add_patches(writer, clip.values, label, transform, meta, params.stride,
                     params.min_valid, dem_arr)  # fmt: skip
