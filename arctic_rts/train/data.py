"""Training and evaluation data: folder datasets, on-disk patch datasets, and building them.

Two sources of patches feed training, both giving samples as dicts of numpy arrays:

* :class:`FolderDataset`: image/mask pairs in folders (GeoTIFF, PNG, JPEG), for evaluation and
  small experiments. Masks are 0/1 or 0/255 (JPEG masks ring at edges: > 127 is slump).
* :class:`PatchDataset`: a chunked zarr store written by :func:`write_patches` (and so by
  :func:`build_dataset`, ``arctic-rts dataset build``), one chunk per patch, with the metadata
  that reproduces it (bands, patch size, stride, scenes, dates, label files).

A sample is ``{"image": (C, H, W) float32 reflectance (NaN = invalid), "mask": (1, H, W)
float32 0/1, "valid": (1, H, W) float32 0/1}`` plus ``"dem"`` (1, H, W) float32 when the
dataset has one. Integer images are scaled to reflectance: uint16 / 10000 (Sentinel-2 L2A
digital numbers), uint8 / 255; float images are taken as reflectance.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from arctic_rts.bands import L2A_BANDS, canonical_band_name, validate_bands
from arctic_rts.errors import DatasetError, SkippedInputWarning

#: File suffixes read as images or masks.
IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
#: Mask value marking "ignore" in patch datasets.
IGNORE = 255
#: Format tag and version written into every patch dataset.
PATCH_FORMAT = "arctic-rts-patches"
PATCH_FORMAT_VERSION = 1

Sample = dict[str, np.ndarray]


# --- reading images and masks ------------------------------------------------------------------


def to_reflectance(values: np.ndarray) -> np.ndarray:
    """Scale integer imagery to reflectance (uint16 / 10000, uint8 / 255) as float32."""
    if values.dtype == np.uint8:
        return values.astype(np.float32) / 255.0
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32) / 10000.0
    return values.astype(np.float32)


def _read_raw(path: Path) -> tuple[np.ndarray, list[str | None], dict[str, Any], float | None]:
    """Raw ``(C, H, W)`` values, band descriptions, geo info and nodata of an image file."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import rasterio

            with rasterio.open(path) as src:
                return (
                    src.read(),
                    list(src.descriptions),
                    {"crs": src.crs, "transform": src.transform},
                    src.nodata,
                )
        from PIL import Image

        with Image.open(path) as im:
            data = np.asarray(im)
        data = data[None] if data.ndim == 2 else np.moveaxis(data, -1, 0)
        return data, [None] * data.shape[0], {"crs": None, "transform": None}, None
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from err


def read_image(path: str | Path) -> tuple[np.ndarray, tuple[str, ...] | None, dict[str, Any]]:
    """Read an image as ``(C, H, W)`` float32 reflectance.

    Returns:
        ``(array, bands, geo)``: bands are canonical names from GeoTIFF band descriptions when
        every band has one (else None); ``geo`` holds ``crs`` and ``transform`` (None for
        PNG/JPEG). Nodata pixels of a GeoTIFF become NaN.
    """
    raw, descriptions, geo, nodata = _read_raw(Path(path))
    arr = to_reflectance(raw)
    if nodata is not None:
        arr[raw == nodata] = np.nan
    names = [canonical_band_name(d) if d else None for d in descriptions]
    bands = tuple(n for n in names if n) if all(names) else None
    return arr, bands, geo


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask as ``(H, W)`` bool: 0/1 masks at > 0, 0/255 (and JPEG) masks at > 127."""
    raw = _read_raw(Path(path))[0][0].astype(np.float64)
    if np.nanmax(raw, initial=0) <= 1.0:
        return raw > 0.5
    return raw > 127


def pair_files(images_dir: str | Path, masks_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair each mask with the image of the same file name found under ``images_dir``.

    Images are searched recursively (``chips/<site>/<name>.tif`` pairs with
    ``masks/<name>.tif``); the suffix may differ (``<name>.png`` masks a ``<name>.tif``). A mask
    without an image is skipped with a warning.

    Raises:
        DatasetError: a folder is missing, a file name occurs twice among the images, or no
            pair was found.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DatasetError(f"folder {folder} does not exist; pass a folder of images/masks.")
    images: dict[str, Path] = {}
    for p in sorted(images_dir.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            if p.stem in images:
                raise DatasetError(
                    f"image name {p.stem} occurs twice under {images_dir} ({images[p.stem]} "
                    f"and {p}); masks pair by file name, so names must be unique."
                )
            images[p.stem] = p
    pairs = []
    for m in sorted(masks_dir.rglob("*")):
        if m.suffix.lower() not in IMAGE_SUFFIXES or not m.is_file():
            continue
        if m.stem not in images:
            warnings.warn(
                f"mask {m.name} has no image of the same name under {images_dir}; skipped.",
                SkippedInputWarning,
                stacklevel=2,
            )
            continue
        pairs.append((images[m.stem], m))
    if not pairs:
        raise DatasetError(
            f"no mask in {masks_dir} has an image of the same file name under {images_dir}."
        )
    return pairs


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"folder {folder} does not exist; pass a folder of images.")
    files = [p for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DatasetError(f"no GeoTIFF/PNG/JPEG image under {folder}.")
    return files


# --- datasets ----------------------------------------------------------------------------------


class FolderDataset:
    """Image/mask pairs (or images alone) from folders, loaded into memory once.

    Args:
        images: Folder of images (searched recursively), or a list of image files.
        masks: Folder of masks with the images' file names; None for unlabelled images.
        bands: Canonical band names of the images' channels; None takes them from the GeoTIFF
            band descriptions (all images must agree) or leaves them unknown.
    """

    def __init__(
        self,
        images: str | Path | Sequence[Path],
        masks: str | Path | None = None,
        bands: Sequence[str] | None = None,
    ) -> None:
        if masks is not None:
            if not isinstance(images, (str, Path)):
                raise DatasetError("pass a folder of images together with a folder of masks.")
            pairs: list[tuple[Path, Path | None]] = list(pair_files(images, masks))
        else:
            files = list_images(images) if isinstance(images, (str, Path)) else list(images)
            pairs = [(p, None) for p in files]
        self.names: list[str] = []
        self.samples: list[Sample] = []
        self.geo: list[dict[str, Any]] = []
        found: tuple[str, ...] | None = None
        for image_path, mask_path in pairs:
            image, file_bands, geo = read_image(image_path)
            if file_bands is not None:
                if found is not None and file_bands != found:
                    raise DatasetError(
                        f"{image_path.name} has bands {file_bands}, others {found}; "
                        "all images of a dataset need the same bands in the same order."
                    )
                found = file_bands
            valid = np.isfinite(image).all(axis=0, keepdims=True).astype(np.float32)
            if mask_path is not None:
                mask = read_mask(mask_path)
                if mask.shape != image.shape[1:]:
                    raise DatasetError(
                        f"mask {mask_path} is {mask.shape[0]}x{mask.shape[1]} px but its image "
                        f"is {image.shape[1]}x{image.shape[2]}; they must share the grid."
                    )
                mask_f = mask[None].astype(np.float32)
            else:
                mask_f = np.zeros_like(valid)
            self.names.append(image_path.name)
            self.samples.append({"image": image, "mask": mask_f, "valid": valid})
            self.geo.append(geo)
        channels = {s["image"].shape[0] for s in self.samples}
        if len(channels) != 1:
            raise DatasetError(f"images have different band counts {sorted(channels)}.")
        self.bands: tuple[str, ...] | None = tuple(bands) if bands is not None else found
        if self.bands is not None and len(self.bands) != channels.pop():
            raise DatasetError(
                f"{len(self.bands)} bands named ({', '.join(self.bands)}) but the images have "
                f"{self.samples[0]['image'].shape[0]} channels."
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


class PatchDataset:
    """One group (``labelled``, ``unlabelled`` or ``val``) of a zarr patch dataset, read lazily.

    Args:
        path: The ``.zarr`` folder written by :func:`write_patches`.
        group: Which group to read.
    """

    def __init__(self, path: str | Path, group: str = "labelled") -> None:
        import zarr

        self.path = Path(path)
        try:
            root: Any = zarr.open_group(str(self.path), mode="r")
        except (FileNotFoundError, ValueError, OSError) as err:
            raise DatasetError(
                f"{self.path} is not a patch dataset (build one with arctic-rts dataset build): "
                f"{err}"
            ) from err
        attrs = dict(root.attrs)
        if attrs.get("format") != PATCH_FORMAT:
            raise DatasetError(f"{self.path} is not an {PATCH_FORMAT} zarr store.")
        if group not in root:
            raise DatasetError(f"{self.path} has no '{group}' group of patches.")
        self.attrs = attrs
        self.bands: tuple[str, ...] | None = tuple(attrs["bands"])
        self.group: Any = root[group]
        self._image = self.group["image"]
        self._mask = self.group["mask"]
        self._dem = self.group.get("dem", None)
        self.patches: list[dict[str, Any]] = list(self.group.attrs.get("patches", []))

    @staticmethod
    def groups(path: str | Path) -> list[str]:
        """Names of the groups a patch dataset holds."""
        import zarr

        return sorted(zarr.open_group(str(path), mode="r").group_keys())

    def __len__(self) -> int:
        return int(self._image.shape[0])

    def __getitem__(self, index: int) -> Sample:
        image = np.asarray(self._image[index], dtype=np.float32)
        raw = np.asarray(self._mask[index])
        valid = ((raw != IGNORE) & np.isfinite(image).all(axis=0, keepdims=True)).astype(np.float32)
        sample = {"image": image, "mask": (raw == 1).astype(np.float32), "valid": valid}
        if self._dem is not None:
            sample["dem"] = np.asarray(self._dem[index], dtype=np.float32)
        return sample


Dataset = FolderDataset | PatchDataset


def crop_or_pad(sample: Sample, size: int, rng: np.random.Generator | None = None) -> Sample:
    """Cut a ``size`` x ``size`` window from a sample, padding (as invalid) where it is smaller.

    The window's origin is random when ``rng`` is given, else the top-left corner.
    """
    _, h, w = sample["image"].shape
    out: Sample = {}
    y0 = int(rng.integers(0, h - size + 1)) if rng is not None and h > size else 0
    x0 = int(rng.integers(0, w - size + 1)) if rng is not None and w > size else 0
    for key, arr in sample.items():
        win = arr[:, y0 : y0 + size, x0 : x0 + size]
        ph, pw = size - win.shape[1], size - win.shape[2]
        if ph or pw:
            fill = np.nan if key in ("image", "dem") else 0.0
            win = np.pad(win, ((0, 0), (0, ph), (0, pw)), constant_values=fill)
        out[key] = np.ascontiguousarray(win, dtype=np.float32)
    return out


def band_statistics(dataset: Dataset, max_samples: int = 256) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation of reflectance over valid pixels (for the card)."""
    n = len(dataset)
    if n == 0:
        raise DatasetError("the dataset is empty; nothing to compute band statistics from.")
    step = max(1, n // max_samples)
    pixels = []
    for i in range(0, n, step):
        s = dataset[i]
        ok = s["valid"][0] > 0
        pixels.append(s["image"][:, ok].reshape(s["image"].shape[0], -1))
    values = np.concatenate(pixels, axis=1).astype(np.float64)
    mean = np.nanmean(values, axis=1)
    std = np.nanstd(values, axis=1)
    if not np.isfinite(mean).all():
        raise DatasetError("a band has no valid pixel in the dataset; check the images.")
    std = np.where(std > 1e-6, std, 1.0)
    return [float(v) for v in mean], [float(v) for v in std]


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


def parse_date(value: Any, fallback_id: str | None = None) -> date | None:
    """A label or footprint date, tolerant of the real files' quirks; None when unreadable.

    Accepts ``YYYY-MM-DD`` (with or without time), ``YYYYMMDD``; when the value is malformed
    (e.g. ``202-00-722``), the date is taken from an image id starting ``YYYYMMDD_`` or
    containing ``_YYYY-MM-DD_`` (PlanetScope scene / ortho tile ids).
    """
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = "" if value is None else str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text[: len(datetime(2000, 1, 1).strftime(fmt))], fmt).date()
        except ValueError:
            continue
    if fallback_id:
        m = re.match(r"(\d{8})_", fallback_id) or re.search(r"_(\d{4}-\d{2}-\d{2})_", fallback_id)
        if m:
            return parse_date(m.group(1))
    return None


def days_apart(a: date, b: date) -> int:
    """Absolute difference in days."""
    return abs((a - b) // timedelta(days=1))


# --- label polygons (real files: mixed label types, nulls, invalid geometries, odd dates) ------


def _warn(message: str) -> None:
    warnings.warn(message, SkippedInputWarning, stacklevel=3)


def _read_frame(source: Any, what: str) -> Any:
    import geopandas as gpd

    if isinstance(source, gpd.GeoDataFrame):
        return source.copy()
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"{what} file {path} does not exist.")
    try:
        frame = gpd.read_file(path)
    except Exception as err:  # pyogrio raises several types for unreadable files
        raise DatasetError(f"cannot read {what} file {path}: {err}") from err
    if frame.crs is None:
        raise DatasetError(f"{what} file {path} declares no CRS; set one (e.g. EPSG:4326).")
    return frame


def _label_dates(frame: Any, what: str) -> list[date | None]:
    """Per-row date from ``image_date``/``date`` (falling back to the image id), or None."""
    date_col = next((c for c in ("image_date", "date", "datetime") if c in frame.columns), None)
    ids = frame["image_id"] if "image_id" in frame.columns else [None] * len(frame)
    dates: list[date | None] = []
    repaired = 0
    for raw, image_id in zip(
        frame[date_col] if date_col else [None] * len(frame), ids, strict=True
    ):
        direct = parse_date(raw)
        d = direct or parse_date(raw, None if image_id is None else str(image_id))
        repaired += int(direct is None and d is not None and raw is not None)
        dates.append(d)
    if repaired:
        _warn(f"{what}: {repaired} malformed date(s) (e.g. '202-00-722') taken from the image id.")
    return dates


def _ids(frame: Any) -> list[str | None]:
    """The ``image_id`` column as strings, None where missing (or no such column)."""
    if "image_id" not in frame.columns:
        return [None] * len(frame)
    return [None if v is None or v != v else str(v) for v in frame["image_id"]]


def read_labels(source: str | Path | Any, *, slump_label: int = 1) -> Any:
    """Read and clean label polygons; every skipped or repaired row is reported in a warning.

    Handles the quirks of the real Nitze et al. files: ``label`` stored as int, float or text,
    null labels (skipped), other label values (skipped), invalid geometries (repaired with
    ``make_valid``; skipped when nothing areal remains), empty geometries (skipped), malformed
    dates (taken from the PlanetScope image id when possible). Files without a ``label`` column
    count every polygon as a slump.

    Args:
        source: A vector file (GeoPackage...) or a GeoDataFrame.
        slump_label: The ``label`` value that means "thaw slump".

    Returns:
        GeoDataFrame in EPSG:4326 with ``geometry``, ``image_id`` (None when absent), ``date``
        (``datetime.date`` or None) and ``year`` (int or None; from ``year`` or the date).

    Raises:
        DatasetError: unreadable file, no CRS, or no usable polygon at all.
    """
    import geopandas as gpd
    import pandas as pd
    import shapely

    from arctic_rts.vectorize import polygonal

    frame = _read_frame(source, "label")
    name = Path(source).name if isinstance(source, (str, Path)) else "labels"
    n0 = len(frame)
    keep = np.ones(n0, dtype=bool)
    if "label" in frame.columns:
        values = pd.to_numeric(frame["label"].astype("string").str.strip(), errors="coerce")
        nulls = frame["label"].isna().to_numpy()
        text = (~nulls) & values.isna().to_numpy()
        other = (~nulls) & (~text) & (values.to_numpy() != slump_label)
        for mask, why in (
            (nulls, "null label"),
            (text, "a label that is no number"),
            (other, f"a label other than {slump_label} (RTS)"),
        ):
            if mask.any():
                _warn(f"{name}: skipped {int(mask.sum())} polygon(s) with {why}.")
        keep &= ~(nulls | text | other)
    geoms = frame.geometry.to_numpy()
    empty = np.array([g is None or g.is_empty for g in geoms])
    if (empty & keep).any():
        _warn(f"{name}: skipped {int((empty & keep).sum())} polygon(s) without geometry.")
    keep &= ~empty
    invalid = keep & ~np.array([bool(g is not None and g.is_valid) for g in geoms])
    fixed = list(geoms)
    n_lost = 0
    for i in np.flatnonzero(invalid):
        repaired = polygonal(shapely.make_valid(geoms[i]))
        if repaired.is_empty or repaired.area == 0:
            keep[i] = False
            n_lost += 1
        fixed[i] = repaired
    if invalid.any():
        _warn(
            f"{name}: repaired {int(invalid.sum()) - n_lost} invalid geometr(y/ies) with make_valid"
            + (f"; skipped {n_lost} that had no area left." if n_lost else ".")
        )
    frame = frame.set_geometry(gpd.GeoSeries(fixed, crs=frame.crs, index=frame.index))
    dates = _label_dates(frame, name)
    years = (
        [None if pd.isna(v) else int(v) for v in frame["year"]]
        if "year" in frame.columns
        else [d.year if d else None for d in dates]
    )
    undated = np.array([d is None and y is None for d, y in zip(dates, years, strict=True)])
    if (undated & keep).any():
        _warn(f"{name}: skipped {int((undated & keep).sum())} polygon(s) without a readable date.")
    keep &= ~undated
    out = gpd.GeoDataFrame(
        {
            "image_id": _ids(frame),
            "date": dates,
            "year": years,
        },
        geometry=frame.geometry,
        crs=frame.crs,
    )[keep].to_crs("EPSG:4326")
    if out.empty:
        raise DatasetError(f"{name}: no usable slump polygon left after cleaning ({n0} read).")
    return out.reset_index(drop=True)


def read_footprints(source: str | Path | Any) -> Any:
    """Read image footprints (``image_id``, date, geometry) with the same tolerance for quirks."""
    import geopandas as gpd

    from arctic_rts.vectorize import polygonal

    frame = _read_frame(source, "footprint")
    name = Path(source).name if isinstance(source, (str, Path)) else "labels"
    dates = _label_dates(frame, name)
    geoms = [polygonal(g) if g is not None else None for g in frame.geometry]
    return gpd.GeoDataFrame(
        {
            "image_id": _ids(frame),
            "date": dates,
        },
        geometry=gpd.GeoSeries(geoms, crs=frame.crs),
    ).to_crs("EPSG:4326")


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
            # grow the lon/lat box by the buffer in metres (spherical: plenty for a margin)
            w, s, e, n = part.total_bounds
            dlat = footprint_buffer_m / 111_320.0
            coslat = max(math.cos(math.radians(max(abs(s), abs(n)))), 0.01)
            dlon = dlat / coslat
            fp = shapely.box(w - dlon, max(s - dlat, -90.0), e + dlon, min(n + dlat, 90.0))
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
    clean = read_labels(labels)
    fps = read_footprints(footprints) if footprints is not None else None
    images = group_labels(clean, fps)
    regions = region_boxes(unlabelled_regions)
    writers = write_patches(
        out,
        bands=params.bands,
        patch_size=patch_size,
        stride=stride,
        with_dem=dem is not None,
        metadata={
            "labels": str(labels) if isinstance(labels, (str, Path)) else "GeoDataFrame",
            "footprints": str(footprints) if footprints is not None else None,
            "stac_url": stac_url,
            "tolerance_days": tolerance_days,
            "unlabelled_regions": [list(r) for r in regions],
            "unlabelled_year": unlabelled_year,
            "dem": str(dem) if dem is not None else None,
            "min_valid": min_valid,
        },
    )
    n_lab = sum(_labelled_patches(img, params, writers["labelled"]) for img in images)
    if n_lab == 0:
        raise DatasetError(
            "no labelled patch could be cut: no scene matched the labelled images (check the "
            "STAC URL, the dates and tolerance_days) or the footprints hold too few valid pixels."
        )
    for region in regions:
        if unlabelled_year is None:
            raise DatasetError("unlabelled_regions need unlabelled_year.")
        _unlabelled_patches(region, unlabelled_year, params, writers["unlabelled"])
    for w in writers.values():
        w.close()
    return Path(out)


def _labelled_patches(img: Any, params: _BuildParams, writer: Any) -> int:
    """Cut the patches of one labelled image from its scenes; returns how many were kept."""
    import geopandas as gpd
    import shapely

    from arctic_rts.config import SearchConfig
    from arctic_rts.errors import NoScenesError
    from arctic_rts.load import load_scenes
    from arctic_rts.search import search_scenes, select_scenes

    bbox = shapely.bounds(img.footprint).tolist()
    months = _season_months(img.day, params.tolerance_days) if img.day else (6, 7, 8)
    try:
        found = search_scenes(
            bbox,
            img.year,
            stac_url=params.stac_url,
            config=SearchConfig(months=months, max_cloud_cover=params.max_cloud_cover),
        )
    except NoScenesError:
        found = []
    scenes = (
        closest_scenes(found, img.day, params.tolerance_days) if img.day else select_scenes(found)
    )
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
    import shapely

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
        clip = _clip(da, shapely.box(*region))
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
