"""Inventories in tests: run files written like a user would, and comparing inventories (same
layers, same rows, run ids and timings aside)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyogrio
import shapely


def write_run_file(
    path: Path,
    *,
    stac: Path,
    weights: Path,
    regions: list[tuple[str, list[float]]],
    years: tuple[int, ...],
    out: str = "out/inv.gpkg",
    extra: str = "",
) -> Path:
    """Write a run file like a user would: relative ``out``, absolute catalog and weights."""
    lines = [
        f'out = "{out}"',
        f"years = {list(years)}",
        f'stac = "{stac}"',
        f'weights = "{weights}"',
        'exports = ["geoparquet", "summary_csv"]',
        extra,
    ]
    for name, bbox in regions:
        lines += ["[[regions]]", f'name = "{name}"', f"bbox = {bbox}"]
    lines += [
        "[search]",
        "months = [6, 7, 8]",
        "max_cloud_cover = 60",
        "[predict]",
        "tile_size = 128",
        'device = "cpu"',
        "[cluster]",
        "n_workers = 1",
        'gpu = "no"',
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def layers(path: Path) -> set[str]:
    """The layer names of a GeoPackage."""
    return {str(name) for name, _ in pyogrio.list_layers(path)}


def comparable(path: Path, layer: str) -> pd.DataFrame:
    """A layer as a sorted frame without run ids and timings, geometries as normalized WKB."""
    frame = pyogrio.read_dataframe(path, layer=layer)
    frame = frame.drop(columns=[c for c in ("run_id", "seconds") if c in frame.columns])
    if "geometry" in frame.columns:
        geoms = frame.geometry
        frame = pd.DataFrame(frame.drop(columns="geometry"))
        frame["geometry"] = [
            None if g is None else shapely.to_wkb(shapely.normalize(g), hex=True) for g in geoms
        ]
    keys = [c for c in ("rts_id", "rts_ids_prev", "rts_ids_curr", "scene_id") if c in frame]
    return frame.sort_values(keys).reset_index(drop=True)


def assert_same_inventory(got: Path, want: Path) -> None:
    """Same layers; same rows, attributes and geometries in each (the ``runs`` and
    ``layer_styles`` tables, which hold write times, run ids and timings aside)."""
    assert layers(got) == layers(want)
    for layer in sorted(layers(want) - {"runs", "layer_styles"}):
        pd.testing.assert_frame_equal(comparable(got, layer), comparable(want, layer))
