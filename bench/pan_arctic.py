"""A simulated pan-Arctic year: ``inventory run`` over many small generated scenes.

Usage::

    .venv/bin/python bench/pan_arctic.py [--scenes 100 250 500] [--size 120] [--folder DIR]

One demo scene (``generate_demo``, the least cloudy summer scene of its first tile) is copied
to ``max(--scenes)`` MGRS tiles of their own, side by side without overlap (real COGs, the
georeferencing moved, one item each). For each count, a fresh inventory run
(``run_inventory``, the library call behind ``arctic-rts inventory run``) maps the first N
tiles from a local item folder (embedded STAC API) with the bundled demo model on a fresh
default local cluster, whole scenes (``clip_to_regions = false``), into a fresh GeoPackage.

Timed in the client: search and selection, graph building (``pipeline._scene_graph``),
manifest writes (``manifest.Manifest.save``) and reads (``manifest._collect``), merge and the
GeoPackage write. From Dask's task stream: the model tasks' compute time, the vectorise
tasks' and the rest (reads, masking). The growth exponent b fits time = a * N^b over the counts. The
scheduler lives in the client process: its memory is that process's peak resident set during
the run (VmHWM, reset before each run). Rewrites this script's section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from inference import MIB, _rss, _vm_hwm, cluster, model_tasks_at_once  # noqa: E402
from report import rewrite_section  # noqa: E402

import arctic_rts.inventory_run as inventory_run  # noqa: E402
import arctic_rts.manifest as manifest  # noqa: E402
import arctic_rts.merge as merge  # noqa: E402
import arctic_rts.pipeline as pipeline  # noqa: E402
from arctic_rts.cluster import local_workers  # noqa: E402
from arctic_rts.config import (  # noqa: E402
    ClusterConfig,
    InventoryRunConfig,
    LoadConfig,
    MapConfig,
    RegionConfig,
)
from arctic_rts.demo import generate_demo  # noqa: E402

HEADING = "## Simulated pan-Arctic year (bench/pan_arctic.py)"
YEAR = 2021
#: Gap between neighbouring copies, metres.
GAP_M = 200.0


def copy_tiles(catalog: Any, n: int, folder: Path) -> tuple[list[Path], list[float]]:
    """``n`` copies of one demo scene on tiles of their own; their item files and lon/lat
    bbox. Copies sit on a grid in the scene's UTM zone, each moved by whole scene widths."""
    import rasterio
    from pyproj import Transformer

    items = [json.loads(p.read_text()) for p in catalog.item_paths]
    tile = catalog.tiles[0]
    template = min(
        (
            it
            for it in items
            if tile in it["id"] and int(it["properties"]["datetime"][5:7]) in (6, 7, 8)
        ),
        key=lambda it: it["properties"]["eo:cloud_cover"],
    )
    src_dir = next(p for p in catalog.item_paths if p.stem == template["id"]).parent
    epsg = int(template["properties"]["proj:epsg"])
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
    red = template["assets"]["red"]
    extent = red["proj:shape"][1] * red["proj:transform"][0]
    step = extent + GAP_M
    per_row = math.ceil(math.sqrt(n))
    arrays = {}
    for key, asset in template["assets"].items():
        with rasterio.open((src_dir / asset["href"]).resolve()) as f:
            arrays[key] = (f.read(1), f.profile)
    (folder / "items").mkdir(parents=True, exist_ok=True)
    paths, boxes = [], []
    for k in range(n):
        dx, dy = (k % per_row) * step, -(k // per_row) * step
        item = json.loads(json.dumps(template))
        item["id"] = f"S2A_{k:04d}SIM_{template['properties']['datetime'][:10].replace('-', '')}"
        props = item["properties"]
        for drop in ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square", "grid:code"):
            props.pop(drop, None)
        props["s2:mgrs_tile"] = f"{epsg - 32600:02d}X{k:04d}"
        cogs = folder / "cogs" / item["id"]
        cogs.mkdir(parents=True, exist_ok=True)
        for key, asset in item["assets"].items():
            t = asset["proj:transform"]
            t[2], t[5] = t[2] + dx, t[5] + dy
            data, profile = arrays[key]
            name = Path(asset["href"]).name
            profile = {**profile, "transform": rasterio.Affine(*t[:6])}
            with rasterio.open(cogs / name, "w", **profile) as out:
                out.write(data, 1)
            asset["href"] = f"../cogs/{item['id']}/{name}"
        x0, y1 = red["proj:transform"][2] + dx, red["proj:transform"][5] + dy
        xs, ys = [x0, x0 + extent, x0 + extent, x0], [y1 - extent, y1 - extent, y1, y1]
        lons, lats = to_lonlat.transform(xs, ys)
        ring = [[lo, la] for lo, la in zip(lons, lats, strict=True)]
        item["geometry"] = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
        item["bbox"] = [min(lons), min(lats), max(lons), max(lats)]
        props.pop("proj:centroid", None)
        path = folder / "items" / f"{item['id']}.json"
        path.write_text(json.dumps(item))
        paths.append(path)
        boxes.append(item["bbox"])
    b = np.asarray(boxes)
    return paths, [b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()]


class Timers:
    """Wall time spent in chosen functions of the library, summed per name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)


def task_times(stream: list[dict[str, Any]]) -> dict[str, float]:
    """Compute seconds per kind of task: model (with whatever dask fused into it: in one-block
    scenes its window's reads), reads (gated per window, with the masking they run),
    vectorise, other. Fused tasks carry the names of their parts in their key."""
    out: dict[str, float] = defaultdict(float)
    for task in stream:
        key = str(task["key"])
        kind = next(
            (
                k
                for name, k in (
                    ("rts-predict", "model"),
                    ("rts-read", "read"),
                    ("window_task", "vectorise"),
                    ("_join", "vectorise"),
                )
                if name in key
            ),
            "other",
        )
        for ss in task["startstops"]:
            if ss["action"] == "compute":
                out[kind] += ss["stop"] - ss["start"]
    return out


def one_run(items: list[Path], bbox: list[float], folder: Path) -> dict[str, Any]:
    """An inventory run over the given items (a folder of their own); the figures."""
    from distributed import get_task_stream

    stac = folder / "items"
    stac.mkdir(parents=True)
    for p in items:
        (stac / p.name).write_text(
            p.read_text().replace('"../cogs/', f'"{p.parent.parent.as_posix()}/cogs/')
        )
    out = folder / "inventory.gpkg"
    cfg = InventoryRunConfig(
        out=str(out),
        years=(YEAR,),
        regions=(RegionConfig("all", tuple(bbox)),),
        stac=str(stac),
        clip_to_regions=False,
        # the items point to the copied COGs, outside the item folder
        map=MapConfig(
            cluster=ClusterConfig(gpu="no"),
            load=LoadConfig(asset_roots=tuple(sorted({str(p.parent.parent) for p in items}))),
        ),
    )
    timers = Timers()
    timers.wrap(inventory_run, "_select_year", "search")
    timers.wrap(pipeline, "_scene_graph", "graph")
    timers.wrap(manifest.Manifest, "save", "manifest write")
    timers.wrap(manifest, "_collect", "manifest read")
    timers.wrap(merge, "merge_polygons", "merge")
    timers.wrap(inventory_run, "_write_year", "write")
    try:
        with cluster(local_workers(cfg.map.cluster), None) as client:
            info = client.scheduler_info()["workers"]
            threads = sum(w["nthreads"] for w in info.values())
            model_tasks = model_tasks_at_once(client)
            Path("/proc/self/clear_refs").write_text("5")
            base = _rss()
            t0 = time.perf_counter()
            with get_task_stream(client) as ts:
                result = inventory_run.run_inventory(cfg, progress=False, client=client)
            wall = time.perf_counter() - t0
            peak = _vm_hwm()
            stream = ts.data
    finally:
        timers.restore()
    year = result.years[0]
    work = result.work_dir
    manifest_bytes = sum(f.stat().st_size for f in work.rglob("*") if f.is_file())
    return {
        "n": len(items),
        "wall": wall,
        "threads": threads,
        "workers": len(info),
        "model_tasks": model_tasks,
        "computed": year.n_computed,
        "failed": len(year.failed),
        "polygons": year.n_polygons,
        "timers": dict(timers.seconds),
        "tasks": task_times(stream),
        "n_tasks": len(stream),
        "manifest_mib": manifest_bytes / MIB,
        "manifest_files": sum(1 for f in work.rglob("*") if f.is_file()),
        "gpkg_mib": out.stat().st_size / MIB,
        "client_peak_mib": peak / MIB,
        "client_base_mib": base / MIB,
    }


def one_count(n: int, folder: Path) -> dict[str, Any]:
    """The run over the first ``n`` copied tiles (see :func:`one_run`)."""
    paths = sorted((folder / "tiles" / "items").glob("*.json"))[:n]
    boxes = np.asarray([json.loads(p.read_text())["bbox"] for p in paths])
    bbox = [boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()]
    run_dir = folder / f"run-{n}"
    shutil.rmtree(run_dir, ignore_errors=True)
    return one_run(paths, [float(v) for v in bbox], run_dir)


def exponent(ns: list[int], values: list[float]) -> float:
    """b of the least-squares fit value = a * n^b (log-log)."""
    if len(ns) < 2 or min(values) <= 0:
        return float("nan")
    return float(np.polyfit(np.log(ns), np.log(values), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, nargs="+", default=[100, 250, 500])
    parser.add_argument("--size", type=int, default=120, help="scene edge in px (demo sizes)")
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:  # one run, in a fresh process (scheduler memory from zero)
        print(json.dumps(one_count(args.one, args.folder)), flush=True)
        return
    folder = args.folder or Path(tempfile.mkdtemp(prefix="arctic-rts-panarctic-"))
    catalog = generate_demo(folder / f"demo-{args.size}", size_px=args.size)
    tiles = folder / "tiles"
    made = json.loads((tiles / "done").read_text()) if (tiles / "done").exists() else {}
    if made.get("n", 0) < max(args.scenes) or made.get("size") != args.size:
        shutil.rmtree(tiles, ignore_errors=True)
        copy_tiles(catalog, max(args.scenes), tiles)
        (tiles / "done").write_text(json.dumps({"n": max(args.scenes), "size": args.size}))
    runs = []
    for n in args.scenes:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(n),
                "--folder",
                str(folder),
                "--size",
                str(args.size),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        got = json.loads(done.stdout.strip().splitlines()[-1])
        got["load"] = os.getloadavg()[0]
        runs.append(got)
        print(json.dumps(got), flush=True)
        write(runs, args)  # after each count: what finished is kept


def write(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The section of BENCHMARKS.md: per-scene figures, growth exponents, extrapolation."""
    ns = [r["n"] for r in runs]
    names = ["search", "graph", "manifest write", "manifest read", "merge", "write"]

    def per_scene(r: dict[str, Any], what: Callable[[dict[str, Any]], float]) -> float:
        return what(r) / r["n"]

    columns: list[tuple[str, Callable[[dict[str, Any]], float]]] = [
        ("run wall", lambda r: r["wall"]),
        *[(n, (lambda name: lambda r: r["timers"].get(name, 0.0))(n)) for n in names],
        ("model tasks", lambda r: r["tasks"].get("model", 0.0)),
        ("read tasks", lambda r: r["tasks"].get("read", 0.0)),
        ("vectorise tasks", lambda r: r["tasks"].get("vectorise", 0.0)),
        ("other tasks", lambda r: r["tasks"].get("other", 0.0)),
    ]
    head = "| scenes | " + " | ".join(c for c, _ in columns) + " |"
    rows = [head, "|" + "---|" * (len(columns) + 1)]
    for r in runs:
        cells = [f"{1000 * per_scene(r, f):.0f}" for _, f in columns]
        rows.append(f"| {r['n']} | " + " | ".join(cells) + " |")
    exps = [exponent(ns, [f(r) for r in runs]) for _, f in columns]
    rows.append("| exponent b (time ~ N^b) | " + " | ".join(f"{b:.2f}" for b in exps) + " |")
    other = [
        f"| {r['n']} | {r['manifest_files']} | {r['manifest_mib']:.1f} | "
        f"{1000 * r['timers'].get('manifest write', 0.0) / r['n']:.1f} | {r['gpkg_mib']:.1f} | "
        f"{r['timers'].get('write', 0.0):.2f} | {r['polygons']} | {r['n_tasks']} | "
        f"{r['client_peak_mib']:.0f} (+{r['client_peak_mib'] - r['client_base_mib']:.0f}) | "
        f"{r['load']:.1f} |"
        for r in runs
    ]
    last = runs[-1]
    n = last["n"]
    outside = (last["wall"] - last["tasks"].get("model", 0.0) / last["threads"]) / n
    client = sum(last["timers"].get(k, 0.0) for k in ("graph", "manifest write")) / n
    mem = exponent(ns, [max(1.0, r["client_peak_mib"] - r["client_base_mib"]) for r in runs])
    slope = (runs[-1]["client_peak_mib"] - runs[0]["client_peak_mib"]) / max(1, n - runs[0]["n"])
    loads = ", ".join(f"{r['load']:.1f}" for r in runs)
    tile_s = 10980**2 * 12 * 2 / 125e6  # a full tile's 12 uint16 bands at 1 Gbit/s
    lines = [
        HEADING,
        "",
        f"`bench/pan_arctic.py --scenes {' '.join(map(str, ns))} --size {args.size}` on "
        f"{platform.machine()} CPU, {time.strftime('%Y-%m-%d')}; load average after each run "
        f"{loads} on {os.cpu_count()} cores (others' "
        "work slows every time figure; memory and sizes do not depend on it). One generated "
        f"{args.size}^2 px demo scene copied to N MGRS tiles of their own (real COGs, no "
        "overlap), one `run_inventory` per N (the call behind `arctic-rts inventory run`), "
        f"bundled demo model, default local cluster ({last['workers']} worker x "
        f"{last['threads'] // last['workers']} threads, {last['model_tasks']} model "
        f"task{'s' if last['model_tasks'] > 1 else ''} at a time per worker), whole scenes, "
        "fresh GeoPackage and "
        "work folder. Failed scenes: "
        f"{', '.join(str(r['failed']) for r in runs)}.",
        "",
        "Milliseconds per scene. Client-side steps (search to write) are wall time in the "
        "client process; the task columns are compute time summed over the worker threads "
        "(Dask's task stream); the last line is b of a least-squares fit time = a * N^b "
        "(1: linear).",
        "",
        *rows,
        "",
        "| scenes | manifest files | manifest MiB | manifest write per scene (ms) | "
        "GeoPackage MiB | GeoPackage write (s) | polygons | tasks | client + scheduler peak "
        "MiB (+ over start) | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *other,
        "",
        f"Extrapolation (arithmetic on the rows above, not a measurement). Outside the model's "
        f"share of the worker threads, the {n}-scene run spent {outside:.2f} s per scene "
        f"(wall minus model task time over {last['threads']} threads); of that, "
        f"{1000 * client:.0f} ms per scene is serial work in the client (graph building and "
        "manifest writes), which a larger cluster does not spread. 2,500 tiles: "
        f"{2500 * client / 60:.1f} min of such client work per year; the client + scheduler "
        f"peak grew by {slope:.2f} MiB per scene (exponent {mem:.2f}), so about "
        f"{runs[-1]['client_peak_mib'] + slope * (2500 - n):.0f} MiB at 2,500 scenes if that "
        "holds; the manifest holds 2 files per scene "
        f"({1024 * last['manifest_mib'] / n:.0f} KiB per scene here, its polygons grow with a "
        "real model's detections). A GPU worker pool: one full tile is "
        f"{10980**2 * 12 * 2 / 1e9:.1f} GB of 12 uint16 bands, {tile_s:.0f} s to read at an "
        "assumed 1 Gbit/s per worker (reads, not the model, bound a GPU worker: Inference "
        "section); the client's serial per-scene work keeps G workers fed while G < "
        f"{tile_s:.0f} s / {client:.2f} s = {tile_s / max(client, 1e-9):.0f} workers, "
        "and 2,500 tiles take 2,500 x "
        f"{tile_s:.0f} s / G = {2500 * tile_s / 3600:.0f} / G hours of reading.",
        "",
    ]
    rewrite_section(HEADING, lines)


if __name__ == "__main__":
    main()
