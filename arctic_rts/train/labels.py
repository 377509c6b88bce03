"""Label inventories as they come: vector layers, CSV and XLSX tables, points and odd CRSs.

:func:`read_label_frame` turns what a user passes as ``--labels`` into a GeoDataFrame of polygons
with a usable CRS, or refuses it with one line that says what is needed:

- GeoPackage, shapefile, GeoJSON... are read with GDAL; a layer without a CRS is refused unless
  :attr:`LabelFormat.crs` names it, and a geocentric CRS (ECEF ``x, y, z``, e.g. EPSG:4978) is
  refused: read as 2-D it puts every label near latitude 0.
- CSV and XLSX tables declare no CRS and no geometry: the user names the geometry column(s)
  (``wkt_column``, or ``x_column`` + ``y_column``) and the CRS.
- Slump labels are areas: points and lines are refused, or buffered by ``buffer_m`` metres (in
  the UTM zone of each feature) when the user asks.
- An empty layer is a clean error, not an exception deep inside the cleaning.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arctic_rts.errors import ConfigError, DatasetError

#: Suffixes read as tables (no geometry column; the user names the columns).
TABLE_SUFFIXES = (".csv", ".xlsx")

#: Geometry types that are areas.
_AREAL = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class LabelFormat:
    """How to read a label inventory beyond what its file says itself (all optional)."""

    #: Column holding each label's geometry as WKT (CSV/XLSX tables).
    wkt_column: str | None = None
    #: Column of x (or longitude) coordinates of point labels (CSV/XLSX), with ``y_column``.
    x_column: str | None = None
    #: Column of y (or latitude) coordinates of point labels (CSV/XLSX), with ``x_column``.
    y_column: str | None = None
    #: CRS of a table's coordinates or WKT (e.g. ``"EPSG:4326"``), or of a vector file that
    #: declares none. A CRS the file declares is never overridden.
    crs: str | None = None
    #: Column holding each label's acquisition date (default: ``image_date``, ``date``,
    #: ``datetime``, whichever exists).
    date_column: str | None = None
    #: ISO date (``YYYY-MM-DD``) given to labels without a readable date (undated inventories).
    date: str | None = None
    #: Buffer radius in metres that turns point and line labels into polygons; None refuses
    #: points and lines.
    buffer_m: float | None = None

    def __post_init__(self) -> None:
        if (self.x_column is None) != (self.y_column is None):
            raise ConfigError("name both coordinate columns (--x-column and --y-column).")
        if self.wkt_column is not None and self.x_column is not None:
            raise ConfigError("name either a WKT column or coordinate columns, not both.")
        if self.buffer_m is not None and not self.buffer_m > 0:
            raise ConfigError(f"buffer_m must be a positive radius in metres, got {self.buffer_m}.")
        if self.date is not None:
            try:
                dt.date.fromisoformat(str(self.date))
            except ValueError:
                raise ConfigError(
                    f"the fixed label date must be YYYY-MM-DD, got {self.date!r}."
                ) from None
        if self.crs is not None:
            _parse_crs(self.crs)

    @property
    def fixed_date(self) -> dt.date | None:
        return dt.date.fromisoformat(str(self.date)) if self.date is not None else None


def _parse_crs(text: str) -> Any:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(text)
    except CRSError:
        raise ConfigError(f"unknown CRS {text!r}; give one such as EPSG:4326.") from None


def read_label_frame(source: Any, what: str, fmt: LabelFormat | None = None) -> Any:
    """Read a label, footprint or region source into a checked GeoDataFrame (not cleaned).

    Raises:
        DatasetError: Missing or unreadable file, a table whose geometry columns are not named
            or not there, no CRS, a geocentric CRS, an empty layer, or point/line features
            without ``buffer_m``.
    """
    import geopandas as gpd

    fmt = fmt or LabelFormat()
    if isinstance(source, gpd.GeoDataFrame):
        frame, name = source.copy(), what
    else:
        path = Path(source)
        name = path.name
        if not path.exists():
            raise DatasetError(f"{what} file {path} does not exist.")
        if path.suffix.lower() in TABLE_SUFFIXES:
            frame = _read_table(path, fmt)
        else:
            try:
                frame = gpd.read_file(path)
            except Exception as err:  # pyogrio raises several types for unreadable files
                raise DatasetError(f"cannot read {what} file {path}: {err}") from err
        if frame.crs is None and fmt.crs is not None and "geometry" in frame:
            frame = frame.set_crs(fmt.crs)
    if len(frame) == 0:
        raise DatasetError(f"{what} file {name} holds no features (an empty layer); check it.")
    if "geometry" not in frame or frame.geometry.isna().all():
        raise DatasetError(
            f"{what} file {name} has no geometry; for a table name its columns (--wkt-column, "
            "or --x-column and --y-column)."
        )
    _check_crs(frame.crs, f"{what} file {name}")
    return _areal(frame, f"{what} file {name}", fmt.buffer_m)


def _read_table(path: Path, fmt: LabelFormat) -> Any:
    """A CSV or XLSX table with the geometry built from the columns ``fmt`` names."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    try:
        if path.suffix.lower() == ".csv":
            table = pd.read_csv(path)
        else:
            import pyogrio

            table = pyogrio.read_dataframe(path, read_geometry=False)
    except Exception as err:  # pandas and GDAL raise several types for unreadable tables
        raise DatasetError(f"cannot read label table {path}: {' '.join(str(err).split())}") from err
    columns = ", ".join(map(str, table.columns)) or "none"
    if fmt.wkt_column is None and fmt.x_column is None:
        raise DatasetError(
            f"label table {path.name} has no geometry column: name the WKT column "
            f"(--wkt-column) or the coordinate columns (--x-column, --y-column); its columns "
            f"are {columns}."
        )
    wanted = [c for c in (fmt.wkt_column, fmt.x_column, fmt.y_column) if c is not None]
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise DatasetError(
            f"label table {path.name} has no column {', '.join(missing)}; its columns are "
            f"{columns}."
        )
    if fmt.crs is None:
        raise DatasetError(
            f"label table {path.name} declares no CRS: name the CRS of its coordinates "
            "(--label-crs, e.g. EPSG:4326)."
        )
    try:
        if fmt.wkt_column is not None:
            text = table[fmt.wkt_column]
            geoms = shapely.from_wkt(text.where(text.notna(), None).astype(object).to_numpy())
        else:
            x = pd.to_numeric(table[fmt.x_column], errors="raise")
            y = pd.to_numeric(table[fmt.y_column], errors="raise")
            geoms = gpd.points_from_xy(x, y)
    except (ValueError, TypeError, shapely.errors.GEOSException) as err:
        raise DatasetError(
            f"label table {path.name}: cannot read its geometry column(s): "
            f"{' '.join(str(err).split())}"
        ) from err
    return gpd.GeoDataFrame(table.drop(columns=wanted), geometry=geoms, crs=fmt.crs)


def _check_crs(crs: Any, where: str) -> None:
    if crs is None:
        raise DatasetError(
            f"{where} declares no CRS; set one (e.g. EPSG:4326), or pass it with --label-crs."
        )
    if crs.is_geocentric:
        raise DatasetError(
            f"{where} is in a geocentric CRS ({crs.to_string()}: x, y, z from the Earth's "
            "centre), which places 2-D labels wrongly; reproject it to a geographic or "
            "projected CRS (e.g. EPSG:4326) first."
        )


def _areal(frame: Any, where: str, buffer_m: float | None) -> Any:
    """Polygons only: refuse points/lines, or buffer them by ``buffer_m`` metres."""
    kinds = frame.geometry.geom_type
    other = kinds.notna() & ~kinds.isin(_AREAL)
    if not other.any():
        return frame
    found = ", ".join(sorted(set(kinds[other])))
    if buffer_m is None:
        raise DatasetError(
            f"{where} has {int(other.sum())} {found} feature(s) of {len(frame)}, but slump "
            "labels must be polygons (outlines): digitise outlines, or pass --buffer-m R to "
            "turn points and lines into polygons of radius R metres."
        )
    frame = frame.copy()
    geoms = frame.geometry.copy()
    geoms[other] = buffer_metres(frame.geometry[other], buffer_m)
    return frame.set_geometry(geoms)


def buffer_metres(geoms: Any, radius_m: float) -> Any:
    """Buffer geometries by ``radius_m`` metres, each in the UTM zone of its centroid."""
    import geopandas as gpd
    import numpy as np

    wgs = geoms.to_crs("EPSG:4326")
    centres = wgs.representative_point()
    zones = np.clip(np.floor((centres.x + 180) / 6).astype(int) + 1, 1, 60)
    north = centres.y >= 0
    out = gpd.GeoSeries([None] * len(geoms), index=geoms.index, crs=geoms.crs)
    for zone, is_north in sorted(set(zip(zones, north, strict=True))):
        rows = (zones == zone) & (north == is_north)
        epsg = (32600 if is_north else 32700) + int(zone)
        out[rows] = wgs[rows].to_crs(epsg).buffer(radius_m).to_crs(geoms.crs)
    return out
