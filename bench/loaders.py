"""stackstac and odc-stac side by side: time and peak memory to read one real scene.

Usage::

    .venv/bin/python bench/loaders.py [--rounds 3]

Reads the real 29RKH scene of ``../shared/data/s2_l2a_cogs_29RKH`` (COGs decimated 10x, read at
their 100 m grid, plus the SCL cloud mask) through the embedded STAC API with each loader, the
loaders taking turns for ``--rounds`` rounds in one process on one thread (dask's synchronous
scheduler). Reports the median wall time of ``load_scenes(...)[0].values`` and the largest
increase of the process's peak memory (``ru_maxrss``) over the rounds; checks both arrays agree
(up to half a digital number, see ``load._stack_odc``). Rewrites this script's section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dask
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from report import rewrite_section  # noqa: E402

from arctic_rts.catalog import serve_catalog  # noqa: E402
from arctic_rts.config import LoadConfig, SearchConfig  # noqa: E402
from arctic_rts.load import load_scenes  # noqa: E402
from arctic_rts.search import search_scenes, select_scenes  # noqa: E402

HEADING = "## Loaders (bench/loaders.py)"
COGS = Path(os.environ.get("ARCTIC_RTS_SHARED_DATA", ROOT.parent / "shared" / "data"))
BANDS = ["B04", "B03", "B02", "B08", "B11"]


def _catalog(folder: Path) -> Path:
    """The real 29RKH item with its hrefs on the local COGs (as the tests' fixture does)."""
    cogs = COGS / "s2_l2a_cogs_29RKH"
    item = json.loads((cogs / "S2A_29RKH_20200219_0_L2A.json").read_text())
    for asset in item["assets"].values():
        local = cogs / asset["href"].rsplit("/", 1)[-1]
        if local.is_file():
            asset["href"] = str(local)
    (folder / "item.json").write_text(json.dumps(item))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"stackstac": [], "odc-stac": []}
    grow: dict[str, float] = {"stackstac": 0.0, "odc-stac": 0.0}
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp, serve_catalog(_catalog(Path(tmp))) as url:
        config = SearchConfig(months=(2,), max_cloud_cover=20.0)
        items = select_scenes(
            search_scenes((-11.5, 24.7, -11.3, 24.9), 2020, stac_url=url, config=config)
        )
        with dask.config.set(scheduler="synchronous"):
            for _ in range(args.rounds):
                for loader in times:
                    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                    t0 = time.perf_counter()
                    da = load_scenes(items, BANDS, LoadConfig(resolution=100.0, loader=loader))
                    arrays[loader] = da[0].values
                    times[loader].append(time.perf_counter() - t0)
                    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                    grow[loader] = max(grow[loader], (after - before) / 1024)
    a, b = arrays["stackstac"], arrays["odc-stac"]
    assert np.array_equal(np.isnan(a), np.isnan(b))
    diff = float(np.nanmax(np.abs(a - b)))
    px = a.shape[1] * a.shape[2]
    medians = {loader: statistics.median(t) for loader, t in times.items()}
    rows = [
        f"| {loader} | {m:.2f} | {px * len(BANDS) / m / 1e6:.1f} | {grow[loader]:.0f} |"
        for loader, m in medians.items()
    ]
    rewrite_section(
        HEADING,
        [
            HEADING,
            "",
            f"`bench/loaders.py` on {platform.machine()} CPU, {time.strftime('%Y-%m-%d')}, load "
            f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: the real 29RKH scene "
            f"({a.shape[1]} x {a.shape[2]} px at 100 m, bands {' '.join(BANDS)} + SCL mask), "
            f"median of {args.rounds} rounds, loaders taking turns, dask synchronous scheduler. "
            f"Largest difference between the two arrays: {diff:.1e} (reflectance); same NaN "
            "mask. Peak-memory growth is the rise of the process's maximum resident size during "
            "a read (0 once an earlier read reached that peak).",
            "",
            "| loader | s per scene | Mpx·band/s | peak memory growth (MiB) |",
            "|---|---|---|---|",
            *rows,
            "",
        ],
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
