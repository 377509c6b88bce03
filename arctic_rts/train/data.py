"""Training and evaluation data: reading images, masks and label polygons; the datasets.

Two sources of patches feed training, both giving samples as dicts of numpy arrays:

* :class:`FolderDataset`: image/mask pairs in folders (GeoTIFF, PNG, JPEG), for evaluation and
  small experiments. Masks are 0/1 or 0/255 (JPEG masks ring at edges: > 127 is slump).
* :class:`PatchDataset`: a chunked zarr store written by
  :func:`arctic_rts.train.build.write_patches` (and so by
  :func:`arctic_rts.train.build.build_dataset`, ``arctic-rts dataset build``), one chunk per
  patch, with the metadata that reproduces it (bands, patch size, stride, scenes, dates, label
  files).

A sample is ``{"image": (C, H, W) float32 reflectance (NaN = invalid), "mask": (1, H, W)
float32 0/1, "valid": (1, H, W) float32 0/1}`` plus ``"dem"`` (1, H, W) float32 when the
dataset has one. Integer images are scaled to reflectance: uint16 / 10000 (Sentinel-2 L2A
digital numbers), uint8 / 255; float images are taken as reflectance.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from arctic_rts.bands import canonical_band_name
from arctic_rts.errors import DatasetError, SkippedInputWarning
from arctic_rts.train.labels import LabelFormat, read_label_frame

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
        path: The ``.zarr`` folder written by
            :func:`arctic_rts.train.build.write_patches`.
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


# --- dates of labels and footprints ------------------------------------------------------------


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


def _read_frame(source: Any, what: str, fmt: LabelFormat | None = None) -> Any:
    return read_label_frame(source, what, fmt)


def _label_dates(frame: Any, what: str, fmt: LabelFormat | None = None) -> list[date | None]:
    """Per-row date from ``fmt.date_column`` or ``image_date``/``date`` (falling back to the image
    id), then ``fmt.date`` for rows still without one; None where there is none."""
    fmt = fmt or LabelFormat()
    if fmt.date_column is not None and fmt.date_column not in frame.columns:
        raise DatasetError(
            f"{what} has no date column {fmt.date_column!r}; its columns are "
            f"{', '.join(str(c) for c in frame.columns if c != 'geometry')}."
        )
    names = (fmt.date_column,) if fmt.date_column else ("image_date", "date", "datetime")
    date_col = next((c for c in names if c in frame.columns), None)
    ids = frame["image_id"] if "image_id" in frame.columns else [None] * len(frame)
    dates: list[date | None] = []
    repaired = 0
    for raw, image_id in zip(
        frame[date_col] if date_col else [None] * len(frame), ids, strict=True
    ):
        direct = parse_date(raw)
        d = direct or parse_date(raw, None if image_id is None else str(image_id))
        repaired += int(direct is None and d is not None and raw is not None)
        dates.append(d if d is not None else fmt.fixed_date)
    if repaired:
        _warn(f"{what}: {repaired} malformed date(s) (e.g. '202-00-722') taken from the image id.")
    return dates


def _ids(frame: Any) -> list[str | None]:
    """The ``image_id`` column as strings, None where missing (or no such column)."""
    if "image_id" not in frame.columns:
        return [None] * len(frame)
    return [None if v is None or v != v else str(v) for v in frame["image_id"]]


def read_labels(
    source: str | Path | Any, *, slump_label: int = 1, fmt: LabelFormat | None = None
) -> Any:
    """Read and clean label polygons; every skipped or repaired row is reported in a warning.

    Handles the quirks of the real Nitze et al. files: ``label`` stored as int, float or text,
    null labels (skipped), other label values (skipped), invalid geometries (repaired with
    ``make_valid``; skipped when nothing areal remains), empty geometries (skipped), malformed
    dates (taken from the PlanetScope image id when possible). Files without a ``label`` column
    count every polygon as a slump.

    Args:
        source: A vector file (GeoPackage...), a CSV/XLSX table (name its geometry columns
            and CRS in ``fmt``) or a GeoDataFrame.
        slump_label: The ``label`` value that means "thaw slump".
        fmt: Geometry columns, CRS, date column, fixed date and point buffer (see
            :class:`~arctic_rts.train.labels.LabelFormat`).

    Returns:
        GeoDataFrame in EPSG:4326 with ``geometry``, ``image_id`` (None when absent), ``date``
        (``datetime.date`` or None) and ``year`` (int or None; from ``year`` or the date).

    Raises:
        DatasetError: unreadable file, no or a geocentric CRS, an empty layer, points or lines
            without a buffer, or no usable polygon at all.
    """
    import geopandas as gpd
    import pandas as pd
    import shapely

    from arctic_rts.vectorize import polygonal

    frame = _read_frame(source, "label", fmt)
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
    dates = _label_dates(frame, name, fmt)
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
