"""Time of merging per-scene polygons into one row per slump (``merge.merge_polygons``).

Usage::

    .venv/bin/python bench/merge.py [--views 10000 100000] [--reference-up-to 10000]

Views are what two overlapping scenes give for each slump: squares of 40-150 m in one UTM zone,
the second scene's view shifted by up to 20 m and, for one slump in five, cut by a cloud
(``touches_invalid``), with the attributes ``vectorize`` writes. Each size is merged on one
thread; sizes up to ``--reference-up-to`` are also merged the way the merge worked before it was
vectorised (one pandas group per slump, ``tests/test_merge_property.py``), and both outputs are
checked to be equal. Rewrites this script's section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]

from report import rewrite_section  # noqa: E402

from arctic_rts.merge import merge_polygons  # noqa: E402

HEADING = "## Merge (bench/merge.py)"


def views(n_views: int, seed: int = 0) -> list[gpd.GeoDataFrame]:
    """Two frames (two scenes) of ``n_views / 2`` slumps each, in EPSG:32608."""
    rng = np.random.default_rng(seed)
    n = n_views // 2
    side = int(np.ceil(np.sqrt(n)))
    cx = 400000 + (np.arange(n) % side) * 400.0
    cy = 7600000 + (np.arange(n) // side) * 400.0
    size = rng.uniform(40, 150, n)
    frames = []
    for k, scene in enumerate(("S2A_08WLB_20210701", "S2B_08WLB_20210712")):
        dx, dy = (rng.uniform(-20, 20, n), rng.uniform(-20, 20, n)) if k else (0.0, 0.0)
        geoms = shapely.box(cx + dx, cy + dy, cx + dx + size, cy + dy + size)
        frames.append(
            gpd.GeoDataFrame(
                {
                    "area_m2": size * size,
                    "perimeter_m": 4 * size,
                    "mean_prob": rng.uniform(0.5, 1, n),
                    "max_prob": rng.uniform(0.8, 1, n),
                    "n_pixels": (size * size / 100).astype(int),
                    "touches_invalid": (rng.random(n) < 0.2) if k else np.zeros(n, bool),
                    "scene_id": scene,
                    "mgrs_tile": "08WLB",
                    "date": scene[-8:],
                    "year": 2021,
                    "model": "bench",
                    "weights_sha256": "0" * 64,
                    "run_id": "bench",
                },
                geometry=geoms,
                crs="EPSG:32608",
            )
        )
    return frames


def reference_merge(frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """The merge with one pandas group per slump, as before it was vectorised."""
    from test_merge_property import _reference_row

    import arctic_rts.merge as merge

    original = merge._merge_views

    def per_group(allp: gpd.GeoDataFrame, label: np.ndarray, crs: str) -> gpd.GeoDataFrame:
        import pandas as pd

        order = np.argsort(label, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(label[order])) + 1)
        rows = [_reference_row(allp.iloc[idx]) for idx in groups]
        geoms = [r.pop("geometry") for r in rows]
        return gpd.GeoDataFrame(pd.DataFrame(rows), geometry=geoms, crs=crs)

    merge._merge_views = per_group
    try:
        return merge.merge_polygons(frames)
    finally:
        merge._merge_views = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--reference-up-to", type=int, default=10000)
    args = parser.parse_args()
    rows = []
    for n in args.views:
        frames = views(n)
        t0 = time.perf_counter()
        merged = merge_polygons(frames)
        t_new = time.perf_counter() - t0
        ref = "not run"
        if n <= args.reference_up_to:
            t0 = time.perf_counter()
            before = reference_merge(frames)
            ref = f"{time.perf_counter() - t0:.1f}"
            assert before.drop(columns="geometry").equals(merged.drop(columns="geometry"))
            assert all(shapely.equals_exact(before.geometry.values, merged.geometry.values, 0))
        rows.append(f"| {n:,} | {len(merged):,} | {t_new:.1f} | {ref} |")
        print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    rewrite_section(
        HEADING,
        [
            HEADING,
            "",
            f"`bench/merge.py` on {platform.machine()} CPU, one thread, "
            f"{time.strftime('%Y-%m-%d')}; load average at the end {load:.1f} on "
            f"{os.cpu_count()} cores (other work slows every row). Two overlapping scenes per "
            "slump, one view in five cut by a cloud; the whole `merge_polygons` (reprojection "
            "to EPSG:3413, overlap graph, merge, areas, ids). "
            "'Per slump' is the merge as it was before vectorising (one pandas group per slump), "
            "timed on the same views; its output equals the vectorised one.",
            "",
            "| views | slumps | vectorised (s) | per slump (s) |",
            "|---|---|---|---|",
            *rows,
            "",
        ],
    )


if __name__ == "__main__":
    main()
