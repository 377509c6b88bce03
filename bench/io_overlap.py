"""Reads overlapped with the model in the map run, on the real 29RKH COGs read through GDAL.

Usage::

    .venv/bin/python bench/io_overlap.py [--only map|http] [--scenes 6] [--resolution 100]
        [--full-size] [--rates 20 1] [--rounds 2] [--latency 0.05]
        [--windows 2048x2048 10980x2048] [--http-settings K ...] [--threads N]

``map``: ``--scenes`` copies of the real 29RKH item (other ids and dates, the same local COGs of
``../shared/data/s2_l2a_cogs_29RKH``) mapped with ``pipeline.map_scenes`` on one local cluster
of the default size (1 worker x 2 threads on this machine) without the CPU workers' limit on
model tasks at once (as on GPU workers), read at ``--resolution`` metres through
stackstac and GDAL (the COGs are 10x decimated: at 100 m the 10 m bands are read as they are
and the 20 m ones resampled, as a full-size scene is at 10 m). The model is the bundled real
model's identity (bands, halo, threshold) run by a stand-in that holds a thread for
``pixels / rate`` seconds without using the CPU, one window at a time per worker, as a GPU
does, at each of ``--rates`` Mpx/s. Each setting (rows of ``SETTINGS``) runs once per round,
settings taking turns, on the same workers (every read task opens its files afresh, so no
GDAL block cache is carried from one run to the next; the files stay in the operating
system's page cache, as a local disk's recently read files do). Per run, from Dask's task
stream and the stand-in's own busy intervals: model busy time, other compute time and the
model's wait share (defined in the section text written to BENCHMARKS.md). ``--full-size``
reads the full-size COGs of the ``http`` part from the local disk instead (at 10 m, the
reads a full Sentinel-2 scene costs: its 10 m bands as they are, its 20 m ones resampled).

``http``: the same COGs, upsampled with GDAL to the full-size layout Earth Search serves
(10980^2 px 10 m bands, 5490^2 px 20 m bands, 1024 px deflate tiles with overviews), served by
``tests/range_server.py`` on loopback with ``--latency`` seconds before each answer. Parts of
the scene (``--windows``, width x height px) are mapped at 10 m, one fresh process and local
cluster per GDAL setting (GDAL reads some options once per process); the server counts
requests and bytes. ``--http-settings`` picks rows of ``HTTP_SETTINGS``; ``--threads`` sets the
workers' threads (as a GPU node's many) and writes a section of its own. Each part rewrites its
own section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent), str(ROOT / "tests")]

import dask  # noqa: E402
from report import rewrite_section  # noqa: E402

import arctic_rts.load as load  # noqa: E402
import arctic_rts.pipeline as pipeline  # noqa: E402
from arctic_rts.config import ClusterConfig, LoadConfig, MapConfig, PredictConfig  # noqa: E402
from arctic_rts.model.weights import resolve_weights  # noqa: E402

# ``import arctic_rts.predict as ...`` would give the function the package exports
predict_mod = importlib.import_module("arctic_rts.predict")

MAP_HEADING = "## Model-wait share in the map run (bench/io_overlap.py --only map, {res:g} m{cogs})"
HTTP_HEADING = "## Remote COG reads per GDAL setting (bench/io_overlap.py --only http)"
HTTP_THREADS_HEADING = (
    "## Remote COG reads, {threads} threads per worker "
    "(bench/io_overlap.py --only http --threads {threads})"
)
COGS = Path(os.environ.get("ARCTIC_RTS_SHARED_DATA", ROOT.parent / "shared" / "data"))
RKH = COGS / "s2_l2a_cogs_29RKH"
ITEM = RKH / "S2A_29RKH_20200219_0_L2A.json"
REAL_WEIGHTS = ROOT / "arctic_rts" / "data" / "real_unet.safetensors"
#: Asset keys (Earth Search) -> file names of the bands the real model and the cloud mask read.
FILES = {"red": "B04", "green": "B03", "blue": "B02", "nir": "B08", "swir16": "B11", "scl": "SCL"}


class GpuStandIn:
    """A model that holds its thread for ``pixels / rate`` seconds without using the CPU, one
    window at a time per process (as a GPU's per-device lock makes it), and answers logit -8
    (no slump). Defined in the script, so cloudpickle sends it to workers by value."""

    sha256 = "gpu-stand-in"

    def __init__(self, rate_mpx_s: float) -> None:
        self.rate = rate_mpx_s * 1e6

    def __call__(self, x: Any) -> Any:
        import threading as _threading

        import torch

        # one lock and one log per worker process, made once (they do not pickle with the class)
        lock = _threading.__dict__.setdefault("_io_overlap_gpu_lock", _threading.Lock())
        busy = _threading.__dict__.setdefault("_io_overlap_gpu_busy", [])
        n, _, h, w = x.shape
        with lock:
            start = time.time()
            time.sleep(n * h * w / self.rate)
            busy.append((start, time.time()))
        return torch.full((n, 1, h, w), -8.0)


def take_busy() -> list[tuple[float, float]]:
    """The stand-in's busy intervals in this worker process since the last call (emptied)."""
    busy = threading.__dict__.setdefault("_io_overlap_gpu_busy", [])
    out = list(busy)
    busy.clear()
    return out


def items(n: int, folder: Path = RKH) -> list[dict[str, Any]]:
    """``n`` copies of the real item, hrefs on the COGs in ``folder`` (the decimated ones, or
    :func:`full_size_cogs`), one day apart."""
    base = json.loads(ITEM.read_text())
    base["assets"] = {k: base["assets"][k] for k in FILES}
    for key, name in FILES.items():
        base["assets"][key]["href"] = str(folder / f"{name}.tif")
    out = []
    for k in range(n):
        it = copy.deepcopy(base)
        it["id"] = f"{base['id']}-copy{k}"
        it["properties"]["datetime"] = f"2020-07-{k + 1:02d}T11:00:00Z"
        out.append(it)
    return out


# --------------------------------------------------------------------------------------------
# map runs


@dataclasses.dataclass(frozen=True)
class Setting:
    """One way to run the map: what differs from the product's defaults."""

    name: str
    #: ``predict(read_ahead=...)``: "threads" (the default: the cluster's threads), a number,
    #: or None (reads not gated).
    read_ahead: str | int | None = "threads"
    #: "model" (``predict.input_chunks``, the default) or "blocks" (one chunk per model block).
    chunks: str = "model"
    scenes_in_flight: int | None = None
    gdal: tuple[tuple[str, str], ...] = ()
    #: Dask's low-level task fusion in the client (on by default for CPU workers).
    fuse: bool = True
    #: Workers declare a GPU resource (the product's GPU path: model tasks ask for it, reads
    #: are not gated, the graph is not optimised).
    gpu: bool = False
    #: Every file read through stackstac's own reader (a ``WarpedVRT`` wherever the file's grid
    #: is not the output's), not ``load.NestedGridReader``.
    warped: bool = False
    #: Local files opened once per worker and read by one thread at a time, as remote ones are
    #: (``load.NestedGridReader.shared_files = "all"``), not once per reading thread.
    share_local: bool = False


SETTINGS = [
    Setting("main: CPU workers, read_ahead = threads, model chunks, scenes_in_flight = 2"),
    Setting("task fusion off", fuse=False),
    Setting("task fusion off, read_ahead = 2 x threads", fuse=False, read_ahead="2threads"),
    Setting("reads not gated", read_ahead=None),
    Setting("scenes_in_flight = 1", scenes_in_flight=1),
    Setting("chunks = model blocks", chunks="blocks"),
    Setting("GPU path: workers declare a GPU (reads not gated, no fusion)", gpu=True),
    Setting("20 m bands and SCL read through stackstac's WarpedVRT", warped=True),
    Setting("local files opened once per worker, read by one thread at a time", share_local=True),
]


def share_files(which: str) -> None:
    """In a worker: which files its readers open once and read one thread at a time."""
    load.NestedGridReader.shared_files = which


@contextlib.contextmanager
def stackstac_reader(warped: bool = True) -> Iterator[None]:
    """Graphs built inside read every file through stackstac's own reader (a ``WarpedVRT``
    wherever the file's grid is not the output's) instead of ``load.NestedGridReader``: a graph
    names its reader class when it is built."""
    product = load.NestedGridReader
    if warped:
        load.NestedGridReader = load.AutoParallelRioReader  # type: ignore[misc]
    try:
        yield
    finally:
        load.NestedGridReader = product  # type: ignore[misc]


@contextlib.contextmanager
def applied(setting: Setting, threads: int) -> Iterator[None]:
    """The setting in force in this (the client's) process, where the graphs are built."""
    saved = (pipeline._scene_graph, predict_mod.input_chunks, load.gdal_http_options)
    graph = saved[0]
    if setting.read_ahead != "threads":
        ahead = {"2threads": 2 * threads}.get(str(setting.read_ahead), setting.read_ahead)

        def scene_graph(*args: Any, **kwargs: Any) -> Any:
            return graph(*args, **{**kwargs, "read_ahead": ahead})

        pipeline._scene_graph = scene_graph  # type: ignore[assignment]
    if setting.chunks == "blocks":

        def blocks(height: int, width: int, config: Any = None, model: Any = None) -> Any:
            return predict_mod._blocks(height, width, config)

        predict_mod.input_chunks = blocks  # type: ignore[assignment]
    if setting.gdal:
        options = saved[2]
        load.gdal_http_options = lambda net: {**options(net), **dict(setting.gdal)}  # type: ignore[assignment]
    fuse = {"optimization.fuse.active": False} if not setting.fuse else {}
    try:
        with stackstac_reader(setting.warped), dask.config.set(fuse):
            yield
    finally:
        pipeline._scene_graph, predict_mod.input_chunks, load.gdal_http_options = saved


def union(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def shares(
    stream: list[dict[str, Any]], busy: dict[str, list[tuple[float, float]]]
) -> dict[str, float]:
    """Model busy time, other compute time and the model's wait share of one run (see the
    section text), from the task stream and the stand-in's busy intervals per worker."""
    first: dict[str, float] = {}
    compute = 0.0
    for entry in stream:
        for ss in entry["startstops"]:
            if ss["action"] == "compute":
                w = entry["worker"]
                first[w] = min(first.get(w, ss["start"]), ss["start"])
                compute += ss["stop"] - ss["start"]
    span = model = 0.0
    for worker, spans in busy.items():
        if spans:
            span += max(b for _, b in spans) - first[worker]
            model += union(spans)
    return {
        "model_s": model,
        "other_s": compute - model,
        "span_s": span,
        "wait": 1 - model / span if span else float("nan"),
    }


def read_counts(resolution: float) -> dict[str, float]:
    """What the gated reads of one scene read (graph only, no I/O): input chunks, read tasks
    in the map run's graph (``predict(read_ahead=...)``), and the pixels they read over the
    scene's pixels."""
    from dask.utils import key_split

    real = resolve_weights(REAL_WEIGHTS)
    pconf = predict_mod.resolve_halo(PredictConfig(), real)
    da = load.load_scenes(
        items(1), list(real.bands), LoadConfig(resolution=resolution),
        chunks=lambda s: predict_mod.input_chunks(s.shape[1], s.shape[2], pconf),
    )[0]  # fmt: skip
    chunks = da.data.rechunk({0: -1}).chunks
    height, width = da.shape[1:]
    graph = predict_mod.predict(da, real, pconf, read_ahead=2).data.__dask_graph__()
    reads = [k for k in graph if key_split(k) == "rts-read"]
    pixels = sum(chunks[1][k[1]] * chunks[2][k[2]] for k in reads)
    return {
        "size": float(height),
        "halo": float(pconf.halo or 0),
        "chunks": float(len(chunks[1]) * len(chunks[2])),
        "reads": float(len(reads)),
        "pixels": pixels / (height * width),
    }


async def declare_gpu(n: int, dask_worker: Any = None) -> None:
    """Declare (1) or withdraw (0) the GPU resource of a worker (run with ``client.run``)."""
    from arctic_rts.cluster import GPU_RESOURCE

    await dask_worker.set_resources(**{GPU_RESOURCE: n})


def map_run(
    client: Any, weights: Any, config: MapConfig, scenes: list[dict[str, Any]]
) -> dict[str, float]:
    from distributed import get_task_stream

    client.run(take_busy)
    t0 = time.perf_counter()
    with get_task_stream(client) as ts:
        records, _ = pipeline.map_scenes(
            scenes, weights, config, client, run_id="io-overlap", progress=False
        )
    wall = time.perf_counter() - t0
    failed = [r.error for r in records if r.status != "done"]
    if failed:
        raise RuntimeError(f"scenes failed: {failed[:2]}")
    return {**shares(ts.data, client.run(take_busy)), "wall_s": wall, "load": os.getloadavg()[0]}


def map_bench(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """Every setting at every model rate, ``args.rounds`` rounds, settings taking turns."""
    from inference import cluster

    from arctic_rts.cluster import local_workers

    real = resolve_weights(REAL_WEIGHTS)
    scenes = items(args.scenes, full_size_cogs(args.cogs) if args.full_size else RKH)
    rows: list[dict[str, Any]] = []
    # no CPU model-task limit, as on GPU workers: a task builds its window while another's
    # forward pass runs, and the stand-in's lock makes forward passes take turns
    with cluster(local_workers(ClusterConfig()), None, side_by_side=True) as client:
        info = client.scheduler_info()["workers"]
        threads = sum(w["nthreads"] for w in info.values())
        layout = f"{len(info)} worker x {threads} threads"
        base = MapConfig(load=LoadConfig(resolution=args.resolution))
        warm = dataclasses.replace(real, references=(GpuStandIn(100.0),))
        map_run(client, warm, base, scenes[:1])  # warm-up: imports, first opens
        for r in range(args.rounds):
            for rate in args.rates:
                weights = dataclasses.replace(real, references=(GpuStandIn(rate),))
                for setting in SETTINGS:
                    cfg = dataclasses.replace(
                        base, cluster=ClusterConfig(scenes_in_flight=setting.scenes_in_flight)
                    )
                    client.run(declare_gpu, 1 if setting.gpu else 0)
                    client.run(share_files, "all" if setting.share_local else "remote")
                    with applied(setting, threads):
                        row = map_run(client, weights, cfg, scenes)
                    rows.append({**row, "name": setting.name, "rate": rate, "round": r})
                    print(rows[-1], flush=True)
        client.run(declare_gpu, 0)
    return rows, layout


def map_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Table rows: medians over rounds; time ratios to the first setting in the same round."""
    out = []
    for rate in dict.fromkeys(r["rate"] for r in rows):
        mine = [r for r in rows if r["rate"] == rate]
        names = list(dict.fromkeys(r["name"] for r in mine))
        base = {r["round"]: r for r in mine if r["name"] == names[0]}
        for name in names:
            rs = [r for r in mine if r["name"] == name]

            def med(key: str, rs: list[dict[str, Any]] = rs) -> float:
                return statistics.median(r[key] for r in rs)

            ratio = statistics.median(r["wall_s"] / base[r["round"]]["wall_s"] for r in rs)
            waits = ", ".join(f"{100 * r['wait']:.0f}" for r in rs)
            loads = ", ".join(f"{r['load']:.1f}" for r in rs)
            out.append(
                f"| {rate:g} | {name} | {med('wall_s'):.1f} | {ratio:.2f} | {med('model_s'):.1f} "
                f"| {med('other_s'):.1f} | {100 * med('wait'):.0f} % ({waits}) | {loads} |"
            )
    return out


# --------------------------------------------------------------------------------------------
# remote reads

#: GDAL settings compared over HTTP: name -> (always, open, read) layers added to stackstac's
#: ``DEFAULT_GDAL_ENV`` (open and read win over always, as in stackstac). The first row is the
#: product as it stands.
HTTP_SETTINGS: dict[str, tuple[dict[str, str], dict[str, str], dict[str, str]]] = {
    "product (stackstac's env + net.gdal_http_options)": ({}, {}, {}),
    # the first CACHE_ROWS rows also run on the other windows (--windows)
    "each reading thread opens the files itself (stackstac's reader; the product shares them)": (
        {},
        {},
        {},
    ),
    "CPL_VSIL_CURL_CACHE_SIZE = 256 MiB (GDAL's default: 16)": (
        {"CPL_VSIL_CURL_CACHE_SIZE": str(256 * 2**20)},
        {},
        {},
    ),
    "GDAL_CACHEMAX = 256 MiB in the workers' environment (the product's: 64)": ({}, {}, {}),
    "GDAL_CACHEMAX = 256 MiB and CPL_VSIL_CURL_CACHE_SIZE = 256 MiB": (
        {"CPL_VSIL_CURL_CACHE_SIZE": str(256 * 2**20)},
        {},
        {},
    ),
    "CPL_VSIL_CURL_CACHE_SIZE = 1024 MiB": ({"CPL_VSIL_CURL_CACHE_SIZE": str(2**30)}, {}, {}),
    "GDAL_DISABLE_READDIR_ON_OPEN = FALSE (GDAL's own default)": (
        {"GDAL_DISABLE_READDIR_ON_OPEN": "FALSE"},
        {"GDAL_DISABLE_READDIR_ON_OPEN": "FALSE"},
        {},
    ),
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES = NO": (
        {"GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "NO"},
        {},
        {},
    ),
    "GDAL_INGESTED_BYTES_AT_OPEN = 65536": ({"GDAL_INGESTED_BYTES_AT_OPEN": "65536"}, {}, {}),
    "CPL_VSIL_CURL_CHUNK_SIZE = 1 MiB": ({"CPL_VSIL_CURL_CHUNK_SIZE": str(2**20)}, {}, {}),
    "VSI_CACHE = TRUE on reads, VSI_CACHE_SIZE = 128 MiB": (
        {"VSI_CACHE_SIZE": str(128 * 2**20)},
        {},
        {"VSI_CACHE": "TRUE"},
    ),
}


#: Variables set in the environment of a row's run (so of its workers, whose nannies take
#: them over the product's ``cluster.WORKER_ENV``, as they take a user's).
HTTP_ENVIRON: dict[str, dict[str, str]] = {
    "GDAL_CACHEMAX = 256 MiB in the workers' environment (the product's: 64)": {
        "GDAL_CACHEMAX": "256"
    },
    "GDAL_CACHEMAX = 256 MiB and CPL_VSIL_CURL_CACHE_SIZE = 256 MiB": {"GDAL_CACHEMAX": "256"},
}
assert set(HTTP_ENVIRON) <= set(HTTP_SETTINGS), "HTTP_ENVIRON names a row HTTP_SETTINGS lacks"
#: Rows whose workers' readers share other files than the product's (``shared_files``).
HTTP_SHARED: dict[str, str] = {
    "each reading thread opens the files itself (stackstac's reader; the product shares them)": (
        "none"
    ),
}
assert set(HTTP_SHARED) <= set(HTTP_SETTINGS), "HTTP_SHARED names a row HTTP_SETTINGS lacks"
#: Rows of HTTP_SETTINGS run on every window of ``--windows`` (the rest on the first only).
CACHE_ROWS = 5


def full_size_cogs(folder: Path) -> Path:
    """The decimated COGs upsampled to their full-size layout (Earth Search's: the item's
    ``proj:shape``, 1024 px deflate tiles, predictor 2, overviews), written once into
    ``folder`` with GDAL (bilinear; SCL nearest)."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    item = json.loads(ITEM.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in FILES.items():
        out = folder / f"{name}.tif"
        if out.is_file():
            continue
        shape = item["assets"][key]["proj:shape"]
        transform = rasterio.Affine(*item["assets"][key]["proj:transform"][:6])
        how = Resampling.nearest if name == "SCL" else Resampling.bilinear
        with rasterio.open(RKH / f"{name}.tif") as src:
            data = src.read(1, out_shape=tuple(shape), resampling=how)
            profile = {**src.profile, "height": shape[0], "width": shape[1],
                       "transform": transform, "driver": "GTiff", "tiled": True,
                       "blockxsize": 1024, "blockysize": 1024}  # fmt: skip
        with MemoryFile() as mem:
            with mem.open(**profile) as tmp:
                tmp.write(data, 1)
            with mem.open() as tmp:
                rio_copy(tmp, str(out) + ".part", driver="COG", BLOCKSIZE=1024,
                         COMPRESS="DEFLATE", PREDICTOR=2,
                         OVERVIEW_RESAMPLING="NEAREST" if name == "SCL" else "AVERAGE")  # fmt: skip
        os.replace(str(out) + ".part", out)
        print(f"wrote {out} ({out.stat().st_size / 2**20:.0f} MiB)", flush=True)
    return folder


def http_child(
    url: str, setting: str, window: str, rate: float, threads: int | None = None
) -> dict[str, float]:
    """One map run (``map_scenes`` with ``area``) of a ``window`` ("WIDTHxHEIGHT" px) part of
    the scene read from ``url`` on a fresh local cluster (``threads`` per worker, None: the
    cores), with one GDAL setting; seconds."""
    import stackstac
    from inference import cluster
    from pyproj import Transformer
    from shapely.geometry import box

    from arctic_rts.cluster import local_workers

    always, opened, read = HTTP_SETTINGS[setting]
    env = stackstac.DEFAULT_GDAL_ENV
    stackstac.DEFAULT_GDAL_ENV = stackstac.rio_env.LayeredEnv(
        always={**env._always, **always},
        open={**env._open, **opened},
        open_vrt=env._open_vrt,
        read={**env._read, **read},
    )
    item = items(1)[0]
    for key, name in FILES.items():
        item["assets"][key]["href"] = f"{url}/{name}.tif"
    width, height = (int(n) for n in window.split("x"))
    # 2048 px from the scene's north-west corner; a full-width strip from its west edge
    west = 199980 + 10 * (2048 if width <= 10980 - 2048 else 0)
    north = 2800020 - 10 * 2048
    lon_lat = Transformer.from_crs(32629, 4326, always_xy=True)
    (x0, x1), (y0, y1) = lon_lat.transform([west, west + 10 * width], [north - 10 * height, north])
    weights = dataclasses.replace(resolve_weights(REAL_WEIGHTS), references=(GpuStandIn(rate),))
    config = MapConfig(area_margin_m=0.0)
    with cluster(local_workers(ClusterConfig()), threads, side_by_side=True) as client:
        client.run(share_files, HTTP_SHARED.get(setting, "remote"))
        t0 = time.perf_counter()
        records, _ = pipeline.map_scenes(
            [item], weights, config, client, run_id="io-http", progress=False,
            area=box(x0, y0, x1, y1),
        )  # fmt: skip
        seconds = time.perf_counter() - t0
    if records[0].status != "done":
        raise RuntimeError(records[0].error)
    return {"seconds": seconds}


def http_bench(args: argparse.Namespace) -> list[str]:
    from range_server import serve_folder

    cogs = full_size_cogs(args.cogs)
    rows = []
    with serve_folder(cogs, latency_s=args.latency) as (url, traffic):
        names = list(HTTP_SETTINGS)
        ranks = args.http_settings or range(len(names))
        for r in range(args.rounds):
            for window in args.windows:
                for k in ranks:
                    if window != args.windows[0] and k >= CACHE_ROWS:
                        continue  # other windows: only the cache sizes
                    rows.append(http_run(args, url, traffic, names[k], window, r))
    return http_lines(rows)


def http_run(
    args: argparse.Namespace, url: str, traffic: Any, name: str, window: str, r: int
) -> dict[str, Any]:
    """One row's run in a fresh process (GDAL reads some options once per process)."""
    traffic.reset()
    cmd = [sys.executable, __file__, "--http-child", name, "--url", url,
           "--window", window, "--rates", str(args.rates[0])]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, **HTTP_ENVIRON.get(name, {})}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    row = {
        "name": name, "window": window, "round": r, "seconds": seconds,
        "requests": traffic.total_requests(), "mib": traffic.total_bytes() / 2**20,
        "other": sum(n for p, n in traffic.requests.items() if not p.endswith(".tif")),
        "load": os.getloadavg()[0],
    }  # fmt: skip
    print(row, flush=True)
    return row


def http_lines(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for window in dict.fromkeys(r["window"] for r in rows):
        out += _window_lines([r for r in rows if r["window"] == window], window)
    return out


def _window_lines(rows: list[dict[str, Any]], window: str) -> list[str]:
    names = list(dict.fromkeys(r["name"] for r in rows))
    base = {r["round"]: r for r in rows if r["name"] == names[0]}
    out = []
    for name in names:
        mine = [r for r in rows if r["name"] == name]
        ratio = statistics.median(r["seconds"] / base[r["round"]]["seconds"] for r in mine)
        loads = ", ".join(f"{r['load']:.1f}" for r in mine)
        out.append(
            f"| {window.replace('x', ' x ')} | {name} | "
            f"{statistics.median(r['requests'] for r in mine):.0f} | "
            f"{statistics.median(r['other'] for r in mine):.0f} | "
            f"{statistics.median(r['mib'] for r in mine):.1f} | "
            f"{statistics.median(r['seconds'] for r in mine):.1f} | {ratio:.2f} | "
            f"{loads} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("map", "http"), default=None)
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="map: read the full-size COGs (--cogs), not the decimated ones",
    )
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--resolution", type=float, default=100.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[20.0, 1.0],
                        help="the stand-in model's Mpx/s")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--windows", nargs="+", default=["2048x2048", "10980x2048"],
                        help="WIDTHxHEIGHT px read over HTTP")  # fmt: skip
    parser.add_argument("--window", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cogs", type=Path, default=Path(tempfile.gettempdir()) / "rts-full-cogs")
    parser.add_argument("--http-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--settings", type=int, nargs="+", default=None, help="rows of SETTINGS")
    parser.add_argument("--http-settings", type=int, nargs="+", default=None,
                        help="http: rows of HTTP_SETTINGS (default: all)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None,
                        help="http: threads per worker (default: the cores; a section of its "
                        "own)")  # fmt: skip
    args = parser.parse_args()
    if args.http_child is not None:
        print(json.dumps(http_child(
            args.url, args.http_child, args.window, args.rates[0], args.threads
        )))  # fmt: skip
        return
    if args.settings:
        SETTINGS[:] = [SETTINGS[k] for k in args.settings]
    machine = f"{platform.machine()} CPU, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores"
    if args.only in (None, "map"):
        rows, layout = map_bench(args)
        heading = MAP_HEADING.format(
            res=args.resolution, cogs=", full-size COGs" if args.full_size else ""
        )
        files = (
            "the COGs upsampled to their full-size layout (as the http part serves them) on the "
            if args.full_size
            else "the 10x decimated L2A COGs on the "
        )
        settings_arg = f" --settings {' '.join(map(str, args.settings))}" if args.settings else ""
        section = rewrite_section(heading, [
            heading,
            "",
            f"`bench/io_overlap.py --only map --scenes {args.scenes} --resolution "
            f"{args.resolution:g} --rounds {args.rounds} --rates "
            f"{' '.join(f'{r:g}' for r in args.rates)}{settings_arg}"
            f"{' --full-size' if args.full_size else ''}` on {machine} shared with "
            "other work "
            f"(load average after each run in the last column), local cluster of the default "
            f"size ({layout}) without the CPU limit on model tasks at once, as on GPU workers. "
            f"{args.scenes} copies of the real 29RKH item ({files}"
            f"local disk, read through stackstac and GDAL at {args.resolution:g} m: "
            "bands B04 B03 B02 B08 B11 + SCL) mapped by `pipeline.map_scenes` with the bundled "
            "real model's card (bands, halo, threshold) and a stand-in forward pass that holds "
            "its thread for pixels / rate seconds without using the CPU, one window at a time "
            "per worker, as a GPU would. Settings take turns in each round on the same workers.",
            "",
            "Model-wait share: per worker, over the time from its first task of the run to the "
            "end of its last forward pass, the share during which no forward pass runs, pooled "
            "over workers (1 - total busy / total span; 1 worker here). It counts every cause: "
            "the first read of the first scene, reads slower than the model, gaps between "
            "scenes. Model (s): the stand-in's busy time; other (s): compute time of every "
            "other task and of the fused tasks' reads (reads, masking, vectorising), summed "
            "over threads (task wall time: it grows when tasks share the cores). Time ratio: "
            "the run's wall time over the first row's in the same round (median over rounds).",
            "",
            "| model Mpx/s | setting | run (s) | time ratio | model (s) | other (s) | "
            "model-wait share (per round) | load |",
            "|---|---|---|---|---|---|---|---|",
            *map_lines(rows),
            "",
        ])  # fmt: skip
        print(section)
    if args.only in (None, "http"):
        lines = http_bench(args)
        heading, options = HTTP_HEADING, ""
        if args.threads:
            heading = HTTP_THREADS_HEADING.format(threads=args.threads)
            options += f" --threads {args.threads}"
        if args.http_settings:
            options += f" --http-settings {' '.join(map(str, args.http_settings))}"
        section = rewrite_section(heading, [
            heading,
            "",
            f"`bench/io_overlap.py --only http --windows {' '.join(args.windows)} --latency "
            f"{args.latency:g} "
            f"--rounds {args.rounds}{options}` on {machine} shared with other work (load "
            "average after each run in the last column). The real 29RKH COGs upsampled with "
            "GDAL to the "
            "full-size layout Earth Search serves (10980^2 px 10 m bands, 5490^2 px 20 m bands "
            "and SCL, 1024 px deflate tiles, overviews), served on loopback by "
            f"`tests/range_server.py` with {1000 * args.latency:g} ms before every answer (an "
            "object store's first-byte latency). Each row is one `map_scenes` run in a fresh "
            "process and local cluster"
            f"{f' ({args.threads} threads per worker)' if args.threads else ''}"
            " over a part of the scene at 10 m (width x height px: a "
            "square 2048 px from the north-west corner, or a full-width strip; the GPU "
            "stand-in model at "
            f"{args.rates[0]:g} Mpx/s), with one GDAL setting added to stackstac's environment "
            "(stackstac's own: GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR and VSI_CACHE=TRUE when "
            "opening, VSI_CACHE=FALSE when reading, multi-range and merged ranges on) or, for "
            "GDAL_CACHEMAX (GDAL's cache of decoded tiles, MiB per process), to the workers' "
            "environment (`cluster.WORKER_ENV` sets 64). A worker's threads read each remote "
            "file through one open dataset, one thread at a time (`load.NestedGridReader`); the "
            "second row gives each reading thread a dataset of its own, as stackstac does. "
            "Requests and MiB: what the server answered; other: requests for anything but the "
            "six COGs (directory listings, .aux.xml, .msk). Time ratio: over the first row's.",
            "",
            "| part read (px) | GDAL setting | requests | other requests | MiB sent | run (s) | "
            "time ratio | load |",
            "|---|---|---|---|---|---|---|---|",
            *lines,
            "",
            "What the gated reads of one scene read, counted in the map run's graph (no I/O; "
            "bundled real model's halo, default `PredictConfig`): each input chunk is read by "
            "one read task, however many windows use it.",
            "",
            "| scene | halo (px) | input chunks | read tasks | pixels read / scene |",
            "|---|---|---|---|---|",
            *[
                f"| {c['size']:.0f}^2 ({res:g} m) | {c['halo']:.0f} | {c['chunks']:.0f} | "
                f"{c['reads']:.0f} ({c['reads'] / c['chunks']:.2f} x) | {c['pixels']:.2f} |"
                for res in (100.0, 10.0)
                for c in [read_counts(res)]
            ],
            "",
        ])  # fmt: skip
        print(section)


if __name__ == "__main__":
    main()
