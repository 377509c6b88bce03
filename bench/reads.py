"""What reading a scene costs per kind of band, on the real 29RKH COGs read through GDAL.

Usage::

    .venv/bin/python bench/reads.py [--size 3072] [--rounds 3] [--cogs DIR]

``load``: the north-west ``--size`` x ``--size`` px of the scene read at 10 m through
``load.load_scenes`` (stackstac, GDAL) in the map run's input chunks, in this process on one
thread (Dask's synchronous scheduler), from the 10x decimated COGs of
``../shared/data/s2_l2a_cogs_29RKH`` and from the same COGs upsampled to their full-size layout
(``io_overlap.full_size_cogs``): one 10 m band, one 20 m band, the SCL mask, all five bands the
real model reads, through ``load.NestedGridReader`` (the product's reader) and, for some,
through stackstac's own (a ``WarpedVRT`` for every file not on the output grid). ``gdal``: the
20 m band B11 of the full-size COGs over the same chunks read straight through rasterio, as
stackstac reads it (a ``WarpedVRT`` onto the 10 m grid, masked, float32) and through GDAL's
RasterIO resampling (the 20 m window, fractional where a chunk edge falls inside a 20 m pixel,
read into the 10 m shape), and how far apart the two are. ``graphs``: the map run's reads
from one graph against each chunk from its own part of the graph, as a gated read computes it
(with the reader tables shared, and without). GDAL's block cache is the workers'
(``cluster.GDAL_CACHE_ENV``). Files are in the page cache; best of ``--rounds``, the readers
taking turns. Rewrites this script's section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

import dask  # noqa: E402
from io_overlap import (  # noqa: E402
    REAL_WEIGHTS,
    RKH,
    full_size_cogs,
    items,
    predict_mod,
    stackstac_reader,
)
from report import rewrite_section  # noqa: E402

import arctic_rts.load as load  # noqa: E402
from arctic_rts.cluster import GDAL_CACHE_ENV  # noqa: E402
from arctic_rts.config import LoadConfig, PredictConfig  # noqa: E402
from arctic_rts.model.weights import resolve_weights  # noqa: E402

HEADING = "## Read rate per band (bench/reads.py)"
FIVE = ["B04", "B03", "B02", "B08", "B11"]
#: What the ``load`` part reads: (row label, bands, with the SCL mask, through stackstac's own
#: reader instead of ``load.NestedGridReader``).
READ_SETS = [
    ("B04 (a 10 m band)", ["B04"], False, False),
    ("B11 (a 20 m band, bilinear to 10 m)", ["B11"], False, False),
    ("B11 through stackstac's own reader (a WarpedVRT)", ["B11"], False, True),
    ("B04 + SCL mask (SCL: 20 m, nearest to 10 m)", ["B04"], True, False),
    ("B04 B03 B02 B08 B11, no mask", FIVE, False, False),
    ("B04 B03 B02 B08 B11 + SCL mask (the map run's reads)", FIVE, True, False),
    ("the same through stackstac's own reader", FIVE, True, True),
]


@functools.cache
def chunks(size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The map run's input chunks of a ``size``^2 scene (the real model's halo)."""
    pconf = predict_mod.resolve_halo(PredictConfig(), resolve_weights(REAL_WEIGHTS))
    return predict_mod.input_chunks(size, size, pconf)  # type: ignore[no-any-return]


def load_rates(cogs: Path, size: int, rounds: int) -> list[dict[str, Any]]:
    """Best seconds per (files, read set) over ``rounds``."""
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for files, folder in (("decimated", RKH), ("full-size", cogs)):
            for label, bands, mask, warped in READ_SETS:
                cfg = LoadConfig(
                    resolution=10,
                    masked_scl_classes=LoadConfig().masked_scl_classes if mask else (),
                )
                with stackstac_reader(warped):
                    da = load.load_scenes(
                        items(1, folder), bands, cfg, chunks=lambda s: chunks(s.shape[1])
                    )[0][:, :size, :size]
                t0 = time.perf_counter()
                with dask.config.set(scheduler="synchronous"):
                    da.data.compute()
                key = (files, label)
                best[key] = min(best.get(key, math.inf), time.perf_counter() - t0)
    return [{"files": f, "read": r, "seconds": s} for (f, r), s in best.items()]


def per_chunk_graphs(cogs: Path, size: int, rounds: int) -> dict[str, float]:
    """The map run's reads of the full-size files over the input chunks of the north-west
    ``size``^2 px, in this process on one thread: all from one graph; each chunk from its
    part of the graph with the tasks every chunk needs (the reader tables, which open the
    files) computed once and given to it, as a gated read computes it
    (``predict._split_input``, ``predict._read_chunk``); and each chunk from its whole part,
    so that every chunk makes its own readers and opens the files again (gated reads before
    ``_split_input``). Best seconds of ``rounds``."""
    import dask.core
    import dask.local
    from dask.optimization import cull

    cfg = LoadConfig(resolution=10)
    da = load.load_scenes(items(1, cogs), FIVE, cfg, chunks=lambda s: chunks(s.shape[1]))[0]
    arr = da.data[:, :size, :size].rechunk({0: -1})
    graph = dict(arr.__dask_graph__())
    keys = list(dask.core.flatten(arr.__dask_keys__()))
    best = {"one_graph": math.inf, "shared": math.inf, "own_graphs": math.inf}
    for _ in range(rounds):
        t0 = time.perf_counter()
        dask.local.get_sync(graph, keys)
        best["one_graph"] = min(best["one_graph"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        parts, needs = predict_mod._split_input(graph, keys)
        given = dask.local.get_sync({k: graph[k] for k in needs}, needs)
        for key in keys:
            predict_mod._read_chunk(parts[key], None, *given)
        best["shared"] = min(best["shared"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        for key in keys:
            predict_mod._read_chunk(predict_mod._InputGraph(cull(graph, [key])[0], key), None)
        best["own_graphs"] = min(best["own_graphs"], time.perf_counter() - t0)
    return {**best, "chunks": float(len(keys))}


def gdal_paths(cogs: Path, size: int, rounds: int) -> dict[str, float]:
    """B11 over the chunks that cover the north-west ``size``^2 px: seconds per reader (best
    of ``rounds``) and their difference (largest, in digital numbers; share of pixels)."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    ys, xs = chunks(10980)
    oy, ox = np.cumsum((0, *ys)), np.cumsum((0, *xs))
    wins = [
        (int(oy[i]), int(ox[j]), ys[i], xs[j])
        for i in range(len(ys))
        if oy[i] < size
        for j in range(len(xs))
        if ox[j] < size
    ]
    best = {"warped": math.inf, "rasterio": math.inf}
    with rasterio.open(cogs / "B11.tif") as src:
        k = 2  # 20 m pixels onto the 10 m grid
        grid = Affine(src.transform.a / k, 0, src.transform.c, 0, src.transform.e / k,
                      src.transform.f)  # fmt: skip
        with WarpedVRT(src, crs=src.crs, transform=grid, width=src.width * k,
                       height=src.height * k, resampling=Resampling.bilinear) as vrt:  # fmt: skip
            for _ in range(rounds):
                t0 = time.perf_counter()
                warped = [
                    vrt.read(1, window=Window(x, y, w, h), out_dtype="float32", masked=True)
                    for y, x, h, w in wins
                ]
                best["warped"] = min(best["warped"], time.perf_counter() - t0)
                t0 = time.perf_counter()
                direct = [
                    src.read(1, window=Window(x / k, y / k, w / k, h / k), out_shape=(h, w),
                             resampling=Resampling.bilinear, out_dtype="float32", masked=True)
                    for y, x, h, w in wins
                ]  # fmt: skip
                best["rasterio"] = min(best["rasterio"], time.perf_counter() - t0)
    a = np.ma.concatenate([c.ravel() for c in warped])
    b = np.ma.concatenate([c.ravel() for c in direct])
    both = ~np.ma.getmaskarray(a) & ~np.ma.getmaskarray(b)
    diff = np.abs(a.data - b.data)[both]
    return {
        **best,
        "chunks": len(wins),
        "max_dn": float(diff.max()) if diff.size else 0.0,
        "share": float((diff > 0).mean()) if diff.size else 0.0,
        "mask_mismatch": int((np.ma.getmaskarray(a) != np.ma.getmaskarray(b)).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=3072, help="the square read, px")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cogs", type=Path, default=Path(tempfile.gettempdir()) / "rts-full-cogs")
    args = parser.parse_args()
    os.environ.update(GDAL_CACHE_ENV)  # before GDAL's first read sizes its cache
    cogs = full_size_cogs(args.cogs)
    rows = load_rates(cogs, args.size, args.rounds)
    direct = gdal_paths(cogs, args.size, args.rounds)
    graphs = per_chunk_graphs(cogs, args.size, args.rounds)
    px = args.size * args.size
    machine = f"{platform.machine()} CPU, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores"
    section = rewrite_section(
        HEADING,
        [
            HEADING,
            "",
            f"`bench/reads.py --size {args.size} --rounds {args.rounds}` on {machine} shared with "
            f"other work (load average {os.getloadavg()[0]:.1f} at the end). The north-west "
            f"{args.size}^2 px of the real 29RKH scene read at 10 m through `load.load_scenes` "
            "(stackstac, GDAL; the map run's input chunks) in one process on one thread, from the "
            "10x decimated COGs in the shared data and from the same COGs upsampled to their "
            "full-size layout (10980^2 px 10 m bands, 5490^2 px 20 m bands, 1024 px deflate tiles, "
            "as Earth Search serves them), files in the page cache. Best of the rounds; Mpx/s: "
            "pixels of the 10 m grid per second.",
            "",
            "| files | read | s | Mpx/s |",
            "|---|---|---|---|",
            *[
                f"| {r['files']} | {r['read']} | {r['seconds']:.2f} | "
                f"{px / r['seconds'] / 1e6:.1f} |"
                for r in rows
            ],
            "",
            f"B11 of the full-size COGs over the {direct['chunks']} input chunks that start in "
            "that square, read straight through rasterio: a `WarpedVRT` onto the 10 m grid, "
            f"bilinear, masked, float32 (stackstac's own reader) {direct['warped']:.2f} s; "
            "GDAL's RasterIO resampling of the 20 m window into the 10 m shape, bilinear, "
            "masked, float32 (`load.NestedGridReader`) "
            f"{direct['rasterio']:.2f} s ({direct['warped'] / direct['rasterio']:.1f}x faster). "
            f"The two differ by up to {direct['max_dn']:g} digital number(s) on "
            f"{100 * direct['share']:.1f} % of the valid pixels; masks differ on "
            f"{direct['mask_mismatch']} pixels.",
            "",
            f"The map run's reads of the full-size files over the {graphs['chunks']:.0f} input "
            "chunks of that square (five bands, SCL mask): from one graph "
            f"{graphs['one_graph']:.2f} s; each chunk from its part of the graph with the "
            "reader tables computed once and given to it, as a gated read computes it "
            f"(`predict._split_input`, `predict._read_chunk`), {graphs['shared']:.2f} s; "
            f"each chunk from its whole part (gated reads before), {graphs['own_graphs']:.2f} "
            "s: every chunk then makes its own readers, opens the files again and decodes again "
            "the tiles it shares with its neighbours.",
            "",
        ],
    )
    print(section)


if __name__ == "__main__":
    main()
