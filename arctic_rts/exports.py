"""Files derived from the inventory GeoPackage: GeoParquet of every year, a per-region summary.

Both read the GeoPackage written by :mod:`arctic_rts.inventory` and write their file
atomically beside it (the yearly runner's ``exports``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from arctic_rts.changes import CHANGE_CLASSES
from arctic_rts.errors import ConfigError
from arctic_rts.files import atomic_write
from arctic_rts.inventory import _layers, _read_layer, inventory_years, read_inventory


def export_geoparquet(
    path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
) -> Path:
    """Write every year's slumps (one table with the ``year`` column) as GeoParquet.

    Args:
        path: The inventory GeoPackage.
        out: Output file; by default beside the GeoPackage with the suffix ``.parquet``.
    """
    path = Path(path)
    target = Path(out) if out is not None else path.with_suffix(".parquet")
    frame = read_inventory(path)
    return atomic_write(target, lambda tmp: frame.to_parquet(tmp, index=False))


def summary_csv(
    path: str | os.PathLike[str],
    regions: gpd.GeoDataFrame | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    name_column: str = "name",
) -> Path:
    """Write a per-region, per-year summary CSV beside the GeoPackage.

    Each slump counts for the region that contains its representative point. Columns: region,
    year, n_slumps, total_area_m2, mean_area_m2, median_area_m2, max_area_m2, and the counts
    of each change class towards that year (``n_new``, ``n_grown``, ``n_shrunk``, ``n_stable``,
    ``n_not_detected``; empty when the previous year is absent).

    Args:
        path: The inventory GeoPackage.
        regions: Region polygons with a ``name_column``; None summarises everything as "all".
        out: Output file; by default ``<gpkg stem>_summary.csv`` beside the GeoPackage.
        name_column: Column of ``regions`` holding region names.
    """
    path = Path(path)
    target = Path(out) if out is not None else path.with_name(f"{path.stem}_summary.csv")
    if regions is not None and name_column not in regions.columns:
        raise ConfigError(f"regions need a {name_column!r} column naming each region.")
    layers = _layers(path)
    rows = []
    for y in inventory_years(path):
        frames = {"rts": _read_layer(path, f"rts_{y}")}
        if f"changes_{y - 1}_{y}" in layers:
            frames["chg"] = _read_layer(path, f"changes_{y - 1}_{y}")
        assigned = {k: _assign_regions(v, regions, name_column) for k, v in frames.items()}
        names = ["all"] if regions is None else [str(n) for n in regions[name_column]]
        for name in names:
            sub = assigned["rts"][assigned["rts"]["region"] == name]
            area = sub["area_m2"].astype(float)
            row: dict[str, Any] = {
                "region": name,
                "year": y,
                "n_slumps": len(sub),
                "total_area_m2": float(area.sum()),
                "mean_area_m2": float(area.mean()) if len(sub) else math.nan,
                "median_area_m2": float(area.median()) if len(sub) else math.nan,
                "max_area_m2": float(area.max()) if len(sub) else math.nan,
            }
            chg = assigned.get("chg")
            for cls in CHANGE_CLASSES:
                row[f"n_{cls}"] = (
                    int((chg[chg["region"] == name]["change"] == cls).sum())
                    if chg is not None
                    else None
                )
            rows.append(row)
    table = pd.DataFrame(
        rows,
        columns=[
            "region",
            "year",
            "n_slumps",
            "total_area_m2",
            "mean_area_m2",
            "median_area_m2",
            "max_area_m2",
            *(f"n_{c}" for c in CHANGE_CLASSES),
        ],
    )
    for cls in CHANGE_CLASSES:  # whole numbers, empty where there is no previous year
        table[f"n_{cls}"] = table[f"n_{cls}"].astype("Int64")
    return atomic_write(target, lambda tmp: table.to_csv(tmp, index=False))


def _assign_regions(
    frame: gpd.GeoDataFrame, regions: gpd.GeoDataFrame | None, name_column: str
) -> pd.DataFrame:
    out = pd.DataFrame(frame.drop(columns="geometry"))
    if regions is None:
        out["region"] = "all"
        return out
    pts = gpd.GeoDataFrame(geometry=frame.geometry.representative_point(), crs=frame.crs)
    pts = pts.to_crs(regions.crs) if regions.crs is not None else pts
    joined = gpd.sjoin(pts, regions[[name_column, "geometry"]], how="left", predicate="within")
    # A point inside two overlapping regions counts for the first one only.
    first = joined[~joined.index.duplicated(keep="first")]
    out["region"] = (
        first[name_column].astype(object).where(first[name_column].notna(), None).to_numpy()
    )
    out["region"] = out["region"].map(lambda v: None if v is None else str(v))
    return out
