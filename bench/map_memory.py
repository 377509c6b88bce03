"""Peak memory of the worker in the map run itself, against scene size.

Usage::

    .venv/bin/python bench/map_memory.py [--sizes 1008 3000 10980] [--folder DIR] [--threads N]
        [--tile-size PX] [--trace DIR]

Each size is one ``map_region`` run (search on the local item folder, load, predict,
vectorize, merge, write; whole scenes, ``clip=False``) with the bundled demo weights on a fresh
default local cluster (one worker process per 2 cores, fp32 on CPU); the figure is the
worker's peak resident set (``VmHWM``, read as in ``bench/inference.py``) over the whole run,
start-up and model included. Every run maps one scene: the least cloudy summer scene of the
demo generator's (``generate_demo``, default 1008^2 px) first tile, as generated at 1008^2 and
with its bands mirrored out to larger sizes (``enlarge``: the generator makes at most
3000^2 px, and that took longer than this machine could give), written as tiled deflate GeoTIFFs
with 512 px blocks and served from a local item folder through the embedded STAC API. Rewrites
this script's section of BENCHMARKS.md. Every run samples the worker every second (its RSS, the
results it holds per task prefix, the tasks it runs); ``--trace`` keeps the samples.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from inference import MIB, _rss, _vm_hwm, cluster, model_tasks_at_once  # noqa: E402
from report import rewrite_section  # noqa: E402

from arctic_rts.cluster import local_workers  # noqa: E402
from arctic_rts.config import ClusterConfig, LoadConfig, MapConfig, PredictConfig  # noqa: E402
from arctic_rts.demo import generate_demo  # noqa: E402
from arctic_rts.model.weights import bundled_weights, resolve_weights  # noqa: E402
from arctic_rts.pipeline import map_region  # noqa: E402

HEADING = "## Map run memory (bench/map_memory.py)"
YEAR = 2021
#: The generated scene's size (the generator's default).
GENERATED = 1008


def enlarge(catalog: Any, size: int, folder: Path) -> tuple[Path, list[float]]:
    """An item folder with one scene of ``size``^2 px: the least cloudy summer scene of the
    catalog's first tile with every band mirrored out to the size (as it is, at its own size).
    Returns the folder of items and the scene's lon/lat bbox."""
    import rasterio
    from pyproj import Transformer

    items = [json.loads(p.read_text()) for p in catalog.item_paths]
    tile = catalog.tiles[0]
    chosen = min(
        (
            it
            for it in items
            if tile in it["id"] and int(it["properties"]["datetime"][5:7]) in (7, 8)
        ),
        key=lambda it: it["properties"]["eo:cloud_cover"],
    )
    src_dir = next(p for p in catalog.item_paths if p.stem == chosen["id"]).parent
    cogs = folder / "cogs" / chosen["id"]
    cogs.mkdir(parents=True, exist_ok=True)
    for asset in chosen["assets"].values():
        src = (src_dir / asset["href"]).resolve()
        res = float(asset["proj:transform"][0])
        n = round(size * 10.0 / res)
        dst = cogs / src.name
        with rasterio.open(src) as f:
            data = f.read(1)
            profile = f.profile
        big = np.pad(data, ((0, n - data.shape[0]), (0, n - data.shape[1])), mode="symmetric")
        # tiled GeoTIFF, no overviews (the COG driver's overviews took minutes per band here;
        # the map run reads full resolution only)
        profile.update(
            driver="GTiff",
            width=n,
            height=n,
            compress="deflate",
            tiled=True,
            blockxsize=512,
            blockysize=512,
        )
        with rasterio.open(dst, "w", **profile) as out:
            out.write(big, 1)
        asset["proj:shape"] = [n, n]
        asset["href"] = f"../cogs/{chosen['id']}/{src.name}"
    x0, y1 = (
        chosen["assets"]["red"]["proj:transform"][2],
        chosen["assets"]["red"]["proj:transform"][5],
    )
    x1, y0 = x0 + size * 10.0, y1 - size * 10.0
    to_lonlat = Transformer.from_crs(chosen["properties"]["proj:epsg"], 4326, always_xy=True)
    lons, lats = to_lonlat.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
    ring = [[lo, la] for lo, la in zip(lons, lats, strict=True)]
    chosen["geometry"] = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    bbox = [min(lons), min(lats), max(lons), max(lats)]
    chosen["bbox"] = bbox
    chosen["properties"]["s2:nodata_pixel_percentage"] = 0.0
    (folder / "items").mkdir(exist_ok=True)
    (folder / "items" / f"{chosen['id']}.json").write_text(json.dumps(chosen))
    return folder / "items", bbox


def map_peak(
    stac: Path, bbox: list[float], out: Path, threads: int | None, tile_size: int | None = None
) -> dict[str, Any]:
    """One map run on a fresh local cluster (default layout, or ``threads`` per worker; the
    default tile size, or ``tile_size``): the worker's peak RSS and more."""
    model = resolve_weights(bundled_weights())
    config = MapConfig(
        cluster=ClusterConfig(gpu="no", threads_per_worker=threads),
        predict=PredictConfig() if tile_size is None else PredictConfig(tile_size=tile_size),
        # the scene's files lie beside its item folder, not in it
        load=LoadConfig(asset_roots=(str(stac.parent),)),
    )
    with cluster(local_workers(config.cluster), threads) as client:
        idle = max(client.run(_rss).values())
        t0 = time.perf_counter()
        samples: list[dict[str, Any]] = []
        stop = threading.Event()

        def sample() -> None:  # the worker's memory and what it holds, every second
            while not stop.wait(1.0):
                with contextlib.suppress(Exception):  # a sample lost at the run's end
                    for got in client.run(_holdings).values():
                        samples.append({"t": round(time.perf_counter() - t0, 1), **got})

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = map_region(
            bbox,
            YEAR,
            stac=stac,
            weights=model,
            out=out,
            config=config,
            overwrite=True,
            client=client,
            progress=False,
            clip=False,
        )
        seconds = time.perf_counter() - t0
        stop.set()
        sampler.join()
        peak = max(client.run(_vm_hwm).values())
        workers = len(client.scheduler_info()["workers"])
        threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        tasks = model_tasks_at_once(client)
    return {
        "peak_mib": peak / MIB,
        "idle_mib": idle / MIB,
        "seconds": seconds,
        "scenes": len(result.scenes),
        "failed": result.n_failed,
        "polygons": len(result.polygons),
        "layout": f"{workers} worker x {threads // workers} threads, "
        f"{tasks} model task{'s' if tasks > 1 else ''} at a time",
        "trace": samples,
    }


def _holdings(dask_worker: Any) -> dict[str, Any]:
    """This worker's resident set (MiB) and the results it holds: count and MiB per task
    prefix (``rts-predict``: probability blocks), and the prefixes of the tasks it runs."""
    from dask.sizeof import sizeof
    from dask.utils import key_split

    held: dict[str, list[float]] = {}
    for key, value in list(dask_worker.data.items()):
        entry = held.setdefault(key_split(key), [0, 0.0])
        entry[0] += 1
        entry[1] += sizeof(value) / MIB
    running = sorted(key_split(ts.key) for ts in dask_worker.state.executing)
    return {"rss_mib": _rss() / MIB, "held": held, "running": running}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1008, 3000, 10980])
    parser.add_argument("--folder", type=Path, default=None, help="keeps the scenes for reuse")
    parser.add_argument("--threads", type=int, default=None, help="per worker (default: all)")
    parser.add_argument("--tile-size", type=int, default=None, help="PredictConfig.tile_size")
    parser.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="folder for each run's samples (every second: worker RSS, results held, tasks run)",
    )
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="arctic-rts-mapmem-"))
    # rows of earlier invocations on this folder and layout are kept: sizes can be run apart
    tile = "" if args.tile_size is None else f"-tile{args.tile_size}"
    store = folder / f"rows-{args.threads or 'default'}{tile}.json"
    kept: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    for size in args.sizes:
        catalog = generate_demo(folder / f"demo-{GENERATED}", size_px=GENERATED)
        target = folder / f"scene-{size}"
        if not (target / "items").is_dir():
            shutil.rmtree(target, ignore_errors=True)
            enlarge(catalog, size, target)
        stac = target / "items"
        bbox = json.loads(next(stac.glob("*.json")).read_text())["bbox"]
        got = map_peak(stac, bbox, folder / f"map-{size}.gpkg", args.threads, args.tile_size)
        trace = got.pop("trace")
        if args.trace is not None:
            args.trace.mkdir(parents=True, exist_ok=True)
            name = f"trace-{size}-{args.threads or 'default'}{tile}.json"
            (args.trace / name).write_text(json.dumps(trace))
        got["load"] = os.getloadavg()[0]
        got["what"] = "as generated" if size == GENERATED else f"the {GENERATED}^2 scene mirrored"
        kept[str(size)] = got
        store.write_text(json.dumps(kept))
        print(json.dumps(got), flush=True)
    sizes = sorted(int(k) for k in kept)
    rows = [
        f"| {n}^2 ({kept[str(n)]['what']}) | {kept[str(n)]['scenes']} "
        f"({kept[str(n)]['failed']} failed) | {kept[str(n)]['layout']} | "
        f"{kept[str(n)]['peak_mib']:.0f} | {kept[str(n)]['idle_mib']:.0f} | "
        f"{kept[str(n)]['seconds']:.0f} | {kept[str(n)]['polygons']} | "
        f"{'n/a' if kept[str(n)].get('load') is None else round(kept[str(n)]['load'], 1)} |"
        for n in sizes
    ]
    peaks = [kept[str(n)]["peak_mib"] for n in sizes]
    spread = max(peaks) / min(peaks)
    options = "" if args.threads is None else f" --threads {args.threads}"
    options += "" if args.tile_size is None else f" --tile-size {args.tile_size}"
    heading = HEADING.replace(")", f"{options})")
    rewrite_section(
        heading,
        [
            heading,
            "",
            f"`bench/map_memory.py --sizes {' '.join(map(str, sizes))}{options}` on "
            f"{platform.machine()} CPU, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores "
            "shared with others' work (load average after each run in the table; it slows "
            "the runs, not their memory). One `map_region` run per size "
            "(whole scenes, bundled demo weights, fp32, default local cluster, fresh worker "
            "processes): the worker's peak resident set over the whole run, start-up and "
            "model included. The run reads in `predict.input_chunks`, vectorises block by "
            "block (`vectorize.vectorize_windows`) and keeps `ClusterConfig.scenes_in_flight` "
            "scenes on the cluster (default: workers + 1).",
            "",
            "| scene | scenes mapped | cluster | worker peak (MiB) | worker idle (MiB) | "
            "run (s) | polygons | load |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Spread of the worker peak over sizes: max/min = {spread:.2f}.",
            "",
        ],
    )


if __name__ == "__main__":
    main()
