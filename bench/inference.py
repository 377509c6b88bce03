"""Inference benchmarks, measured side by side in one run; writes the block of BENCHMARKS.md
between ``<!-- inference:start -->`` and ``<!-- inference:end -->`` (nothing else; the block and
its heading are appended when absent).

Not part of ``make test``. Usage::

    .venv/bin/python bench/inference.py            # full sizes: about 28 minutes on 2 cores
    .venv/bin/python bench/inference.py --quick    # reduced sizes, to check the bench itself
    .venv/bin/python bench/inference.py --only tiles memory   # some sections only

Sections: ``forward`` (raw model forward, GFLOP/s against a large fp32 matmul), ``tiles``
(speed and activation memory per tile size, batch size; the evidence for ``PredictConfig``'s
defaults), ``predict`` (end to end against raw forward), ``real`` (agreement with whole-scene
inference on the real 12-band L1C scene), ``peers`` (a hand-written tile loop and MONAI's
``sliding_window_inference``; MONAI is optional), ``scaling`` (1 and 2 worker processes),
``memory`` (peak RSS of the worker that runs model tasks against scene size),
``vectorize`` (the whole-scene vectorize task of the map run) and ``map`` (the map run against
``predict``); then a GPU-hours estimate for a pan-Arctic run.

Memory is measured on fresh worker processes as their peak resident set (``VmHWM``), while the
client streams the probability blocks back as they finish (the way a per-block consumer would):
so it shows what the worker that runs model tasks holds, not a whole result gathered in one
place. They run the real model (the bundled UNet) at every size, up to 16384^2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import torch
import xarray as xr

from arctic_rts.cluster import (
    WORKER_ENV,
    startup_environ,
    tune_allocator,
    under_mimalloc,
    worker_environ,
)
from arctic_rts.config import ClusterConfig, PredictConfig
from arctic_rts.model import ModelRef, UNet, load_model, save_weights
from arctic_rts.model.halo import EXACT_HALO, HALO_TOLERANCE, measure_halo
from arctic_rts.model.weights import read_card
from arctic_rts.predict import input_chunks, predict, resolve_halo
from arctic_rts.tiling import Blender, tile_windows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forward import conv_flops_per_pixel  # bench/ is not a package: its own folder on the path

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT.parent / "shared" / "data" / "s2_l1c_13band_scene"
#: The paper's L1C input: every band but B09 (water vapour).
L1C_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B10", "B11", "B12"]
SECTIONS = (
    "forward",
    "tiles",
    "predict",
    "real",
    "peers",
    "precision",
    "scaling",
    "memory",
    "vectorize",
    "map",
)
START, END = "<!-- inference:start -->", "<!-- inference:end -->"
HEADING = "## Inference (bench/inference.py)"
MIB = 2**20


def log(msg: str) -> None:
    print(msg, flush=True)


def timed(fn: Callable[[], Any], reps: int = 1) -> float:
    """Best wall time of ``reps`` calls (after the caller's warm-up)."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def row(measure: str, result: str) -> str:
    """One row of the results table."""
    return f"| {measure} | {result} |"


def make_weights(folder: Path, bands: list[str], seed: int = 0) -> ModelRef:
    """A random-init paper UNet saved as safetensors (speed does not depend on training)."""
    torch.manual_seed(seed)
    n = len(bands)
    card = {"bands": bands, "normalisation": {"mean": [0.1] * n, "std": [0.05] * n}}
    path = folder / f"bench_{n}b.safetensors"
    save_weights(UNet(n), card, path)
    return ModelRef.from_path(path)


def fast_model(ref: ModelRef) -> torch.nn.Module:
    model, _ = load_model(ref.path)
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def matmul_peak(n: int) -> float:
    """fp32 GFLOP/s of an n x n matmul (best of 3), the practical peak of this CPU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    return 2 * n**3 / timed(lambda: torch.mm(a, b), 3) / 1e9


def autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on the CPU for ``precision == "bf16"``, nothing for fp32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def raw_forward(
    model: torch.nn.Module, bands: int, size: int, reps: int, precision: str = "fp32"
) -> float:
    """Mpx/s of one forward on a size x size tile (no overlap, no I/O, no Dask)."""
    x = torch.rand(1, bands, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(precision):
        model(x)
        return size * size / timed(lambda: model(x), reps) / 1e6


def raw_tiles(
    model: torch.nn.Module, data: np.ndarray, tile: int, precision: str, side_by_side: int = 0
) -> float:
    """Mpx/s of the model alone over ``data`` (C, H, W) cut into tiles without overlap: the
    limit for tiled inference of that scene, timed over the same work as ``predict``. One tile
    at a time on this process's torch threads, or with ``side_by_side`` threads that many
    tiles at once on one torch thread each (the layout of the threaded scheduler and of
    default workers)."""
    from concurrent.futures import ThreadPoolExecutor

    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None]
    h, w = x.shape[-2:]
    tiles = [
        x[..., y : y + tile, c : c + tile].contiguous(memory_format=torch.channels_last)
        for y in range(0, h, tile)
        for c in range(0, w, tile)
    ]

    def run(t: torch.Tensor, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)  # torch keeps its thread count per thread
        with torch.inference_mode(), autocast(precision):
            model(t)

    if not side_by_side:
        run(tiles[0])
        seconds = timed(lambda: [run(t) for t in tiles])
        return h * w / seconds / 1e6
    with ThreadPoolExecutor(side_by_side) as pool:
        list(pool.map(run, tiles[:side_by_side], [1] * side_by_side))  # warm every thread
        seconds = timed(lambda: list(pool.map(run, tiles, [1] * len(tiles))))
    return h * w / seconds / 1e6


def whole_scene(model: torch.nn.Module, data: np.ndarray, precision: str = "fp32") -> np.ndarray:
    """Probabilities of the whole scene in one forward pass (the reference for agreement)."""
    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None]
    with torch.inference_mode(), autocast(precision):
        logits = model(x.contiguous(memory_format=torch.channels_last))
    return torch.sigmoid(logits.float())[0, 0].numpy()


def scene_array(bands: list[str], size: int, seed: int = 0) -> xr.DataArray:
    data = np.random.default_rng(seed).random((len(bands), size, size), dtype=np.float32) * 0.3
    return xr.DataArray(data, dims=("band", "y", "x"), coords={"band": bands})


def predict_rate(
    da: xr.DataArray,
    ref: ModelRef,
    config: PredictConfig,
    reps: int = 3,
    threads: int | None = None,
) -> float:
    """Mpx/s of ``predict(...).compute()`` in this process, best of ``reps`` like the raw
    forward it is compared with: with ``threads``, Dask's threaded scheduler on that many
    threads (model tasks side by side, the cores shared out), else the synchronous one (one
    task at a time on this process's torch threads)."""
    scheduler = {"scheduler": "threads", "num_workers": threads} if threads else {}
    warm = 2 * config.tile_size  # up to 4 blocks: every thread of the pool (kept by Dask per
    # num_workers) has run the model before the timing, as in a long run
    with dask.config.set(scheduler="threads" if threads else "synchronous"):
        predict(da.isel(y=slice(0, warm), x=slice(0, warm)), ref, config).compute(**scheduler)
        seconds = timed(lambda: predict(da, ref, config).compute(**scheduler), reps)
    return da.sizes["y"] * da.sizes["x"] / seconds / 1e6


# --------------------------------------------------------------------------------- probes
# Peak memory needs a fresh process: each probe runs in a subprocess (this file, --probe ...)
# and prints one JSON line.


def _peak_since_reset() -> Callable[[], int]:
    """Start measuring this process's peak RSS from now; the returned function gives the peak
    in bytes above the RSS at this point (Linux: VmHWM is reset through clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        start = _rss()
        return lambda: _vm_hwm() - start
    except OSError:  # not Linux: the lifetime peak, which may hide a smaller later one
        start_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return lambda: (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_max) * 1024


def _probe_window(
    weights: str, window: str, batch: str, threads: str, malloc: str = "tuned"
) -> dict[str, float]:
    """Raw forward (fp32) of the model in ``weights`` on ``batch`` windows of ``window``^2:
    rate and the peak memory the forward adds (activations); with ``malloc="tuned"`` after
    :func:`~arctic_rts.cluster.tune_allocator` (as ``get_model`` does; nothing changes under
    mimalloc or where the environment set glibc's variables already), else without."""
    if malloc == "tuned":
        tune_allocator()
    torch.set_num_threads(int(threads))
    n, size = int(batch), int(window)
    model = fast_model(ModelRef.from_path(weights))
    x = torch.rand(n, len(model.bands), size, size)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(x[..., :64, :64])
        peak = _peak_since_reset()
        model(x)  # the activations' memory (a tuned allocator keeps it for the next pass)
        added = peak()
        seconds = timed(lambda: model(x), 3)
    return {"mpx_s": n * size**2 / seconds / 1e6, "activation_mib": added / MIB}


def _probe_vectorize(size_text: str) -> dict[str, float]:
    """Peak memory and time of ``vectorize`` on one ``size``^2 probability scene (the map run
    gathers each scene's probabilities into one such task)."""
    from arctic_rts.vectorize import vectorize

    size = int(size_text)
    rng = np.random.default_rng(0)
    prob = np.full((size, size), 0.05, dtype=np.float32)
    yy, xx = np.ogrid[-12:13, -12:13]
    disk = (yy**2 + xx**2 <= 144).astype(np.float32) * 0.9
    for y, x in rng.integers(20, size - 20, size=(max(1, size * size // 60000), 2)):
        prob[y - 12 : y + 13, x - 12 : x + 13] = np.maximum(
            prob[y - 12 : y + 13, x - 12 : x + 13], disk
        )
    prob[: size // 20] = np.nan  # a cloud band
    da = xr.DataArray(
        prob,
        dims=("y", "x"),
        coords={
            "y": 7_800_000.0 - 10 * np.arange(size) - 5,
            "x": 400_000.0 + 10 * np.arange(size) + 5,
        },
    ).rio.write_crs("EPSG:32606")
    peak = _peak_since_reset()
    t0 = time.perf_counter()
    frame = vectorize(da, threshold=0.5)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "added_mib": peak() / MIB,
        "input_mib": prob.nbytes / MIB,
        "polygons": len(frame),
    }


def probe(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one probe in a fresh interpreter (with this process's nice level) whose environment
    has ``env`` instead of the workers' variables (default: those of a default local worker,
    :func:`~arctic_rts.cluster.worker_environ`; ``{}``: none, glibc's defaults)."""
    base = {k: v for k, v in os.environ.items() if k not in WORKER_ENV and k != "LD_PRELOAD"}
    out = subprocess.run(
        [sys.executable, __file__, "--probe", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**base, **(worker_environ(ClusterConfig()) if env is None else env)},
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_as_worker(argv: list[str]) -> None:
    """Run this benchmark in a process started like a default arctic-rts worker (mimalloc
    preloaded, :data:`~arctic_rts.cluster.WORKER_ENV`), so that the rows measured in this
    process (raw forward, peers) run with the workers' settings: re-executes it once."""
    env = worker_environ(ClusterConfig())
    started = startup_environ()
    if all(started.get(k) == v for k, v in env.items()):
        return
    os.execve(sys.executable, [sys.executable, __file__, *argv], {**os.environ, **env})


# --------------------------------------------------------------------------------- peers


def read_real_scene(crop: int | None, bands: list[str]) -> xr.DataArray | None:
    """The real L1C scene's ``bands`` on its 10 m grid (reflectance = DN / 10000)."""
    try:
        import rasterio
        from rasterio.enums import Resampling
    except ImportError:
        return None
    if not (SCENE / "s2_B02.tif").is_file():
        return None
    with rasterio.open(SCENE / "s2_B02.tif") as ref:
        shape = ref.shape
    layers = []
    for band in bands:
        with rasterio.open(SCENE / f"s2_{band}.tif") as src:
            layers.append(src.read(1, out_shape=shape, resampling=Resampling.bilinear))
    data = np.stack(layers).astype(np.float32) / 10000.0
    if crop:
        data = data[:, :crop, :crop]
    return xr.DataArray(data, dims=("band", "y", "x"), coords={"band": bands})


def hand_loop(model: torch.nn.Module, x: torch.Tensor, tile: int, overlap: int) -> np.ndarray:
    """The plain tile loop most projects write: fixed tiles, overlap, blended average."""
    shape = (int(x.shape[-2]), int(x.shape[-1]))
    windows = tile_windows(shape, tile, halo=0, ramp=overlap)
    blender = Blender(shape, halo=0, ramp=overlap)
    with torch.inference_mode():
        for win in windows:
            logits = model(x[(..., *win.slices)].contiguous(memory_format=torch.channels_last))
            blender.add(win, torch.sigmoid(logits)[0, 0].numpy())
    return blender.result()


def monai_loop(
    model: torch.nn.Module, x: torch.Tensor, tile: int, overlap: float, precision: str = "fp32"
) -> np.ndarray:
    """MONAI's ``sliding_window_inference`` with gaussian blending; ``overlap`` in pixels."""
    from monai.inferers import sliding_window_inference

    def net(t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model(t.contiguous(memory_format=torch.channels_last)).float())

    with torch.inference_mode(), autocast(precision):
        out = sliding_window_inference(
            x, (tile, tile), 1, net, overlap=overlap / tile, mode="gaussian"
        )
    assert isinstance(out, torch.Tensor)
    return out[0, 0].numpy()


# --------------------------------------------------------------------------------- clusters


@contextlib.contextmanager
def cluster(
    n_workers: int,
    threads: int | None,
    torch_threads: int | None = None,
    allocator: str = "auto",
    side_by_side: bool = False,
) -> Iterator[Any]:
    """A fresh LocalCluster (fresh worker processes: their peak RSS starts from nothing);
    ``side_by_side``: one model task per thread instead of the default number at once."""
    import distributed  # noqa: F401  (its config defaults must be loaded before config.set)

    from arctic_rts.cluster import connect

    config = ClusterConfig(
        n_workers=n_workers,
        threads_per_worker=threads,
        gpu="no",
        torch_threads=torch_threads,
        allocator=allocator,
    )
    if side_by_side:
        config = dataclasses.replace(config, model_tasks_per_worker=None)
    with (
        dask.config.set({"distributed.worker.memory.terminate": False}),
        connect(config) as client,
    ):
        yield client


def model_tasks_at_once(client: Any) -> int:
    """Model tasks that run at once in one worker of ``client``'s cluster, as its workers were
    started (:data:`MODEL_TASKS_ENV`; unset: one per thread): the layout that ran, not the one
    a config asked for."""
    from arctic_rts.model_tasks import MODEL_TASKS_ENV

    env = client.run(lambda: os.environ.get(MODEL_TASKS_ENV))
    threads = {a: w["nthreads"] for a, w in client.scheduler_info()["workers"].items()}
    return max(int(v) if v else threads[k] for k, v in env.items())


def _fill(seed: int, block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """One block of a synthetic reflectance scene, made where it is needed (a root task)."""
    assert block_info is not None
    info = block_info[None]
    loc = [lo for lo, _ in info["array-location"]]
    rng = np.random.default_rng([seed, *loc])
    return rng.random(info["chunk-shape"], dtype=np.float32) * 0.3


def lazy_scene(size: int, chunks: tuple[Any, Any], bands: list[str], seed: int = 0) -> xr.DataArray:
    """A ``size``^2 scene whose blocks are generated on the workers, like reads from COGs."""
    n = len(bands)
    norm = dsa.core.normalize_chunks((n, *chunks), (n, size, size), dtype=np.float32)
    arr = dsa.map_blocks(
        _fill, seed, chunks=norm, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32)
    )
    return xr.DataArray(arr, dims=("band", "y", "x"), coords={"band": bands})


def stream(client: Any, prob: xr.DataArray) -> float:
    """Compute ``prob`` block by block, gathering each block as it finishes and dropping it
    (the client streams; nothing waits on a whole scene). Returns the sum of the values."""
    from distributed import as_completed

    futures = client.compute(list(prob.data.to_delayed().ravel()))
    done = as_completed(futures)
    del futures
    return float(sum(np.nansum(f.result()) for f in done))


def idle_cpu(seconds: float, quiet: bool) -> tuple[float, float]:
    """Percent of a core that a 1-worker LocalCluster's idle processes use over ``seconds``:
    this process (scheduler and client) and the worker; with :data:`QUIET_DASK_CONFIG` (the
    default of ``connect``) or with Dask's own intervals."""
    from unittest import mock

    import psutil

    from arctic_rts.cluster import QUIET_DASK_CONFIG

    def used(proc: Any) -> float:
        return float(sum(proc.cpu_times()[:2]))

    # empty for Dask's own intervals: connect then sets none
    with mock.patch.dict(QUIET_DASK_CONFIG, clear=not quiet), cluster(1, 1) as client:
        (pid,) = client.run(os.getpid).values()
        time.sleep(3)  # start-up done
        me, worker = psutil.Process(), psutil.Process(pid)
        a, b = used(me), used(worker)
        time.sleep(seconds)
        return 100 * (used(me) - a) / seconds, 100 * (used(worker) - b) / seconds


def _concurrency(stream_log: list[dict[str, Any]]) -> tuple[list[int], float]:
    """Model tasks per worker, and their concurrency (model-task seconds / wall seconds of the
    model phase: 2.0 means two tasks ran at every moment, whatever else the machine did)."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for task in stream_log:
        if "rts-predict" in str(task["key"]):
            for part in task["startstops"]:
                if part["action"] == "compute":
                    spans.setdefault(task["worker"], []).append((part["start"], part["stop"]))
    flat = [s for worker in spans.values() for s in worker]
    busy = sum(stop - start for start, stop in flat)
    wall = max(stop for _, stop in flat) - min(start for start, _ in flat)
    return sorted((len(v) for v in spans.values()), reverse=True), busy / wall


def cluster_rates(
    layouts: list[tuple[int, int, int]],
    size: int,
    ref: ModelRef,
    config: PredictConfig,
    bands: list[str],
    rounds: int,
) -> list[tuple[float, list[int], float]]:
    """Predict on one LocalCluster per ``(workers, threads, torch threads per task)`` layout,
    one model task per thread (side by side), all alive at once (models loaded, one warm-up
    run each), timed in ``rounds`` alternating rounds: drift of the machine's other load lands
    on every layout alike, not in the ratio.
    Per layout: best Mpx/s, and the model tasks per worker and concurrency of that run."""
    from distributed import get_task_stream

    from arctic_rts.cluster import get_model

    tile = config.tile_size
    da = lazy_scene(size, (tile, tile), bands, seed=1)
    with contextlib.ExitStack() as stack:
        clients = []
        for n_workers, threads, torch_threads in layouts:
            client = stack.enter_context(
                cluster(n_workers, threads, torch_threads=torch_threads, side_by_side=True)
            )
            client.run(get_model, ref, "cpu")
            stream(client, predict(da, ref, config))  # warm: allocator, imports
            clients.append(client)
        best: list[tuple[float, list[int], float]] = [(0.0, [], 0.0)] * len(layouts)
        for _ in range(rounds):
            for k, client in enumerate(clients):
                with get_task_stream(client) as stream_log:
                    seconds = timed(lambda c=client: stream(c, predict(da, ref, config)))
                rate = size * size / seconds / 1e6
                if rate > best[k][0]:
                    best[k] = (rate, *_concurrency(stream_log.data))
    return best


def _vm_hwm() -> int:
    """This process's peak resident set so far, bytes (Linux)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) * 1024  # type: ignore[union-attr]


def _rss() -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) * 1024  # type: ignore[union-attr]


def peak_worker_memory(
    size: int,
    layout: str,
    model: Any,
    config: PredictConfig,
    bands: list[str],
    threads: int = 1,
    allocator: str = "auto",
) -> tuple[float, float, float]:
    """(peak RSS MiB, RSS MiB before the run, seconds) of one fresh worker for a ``size``^2
    scene read in ``layout`` chunks: "tiles" (the tile grid) or "split" (``input_chunks``),
    with ``allocator`` (``ClusterConfig.allocator``)."""
    from arctic_rts.cluster import get_model

    with cluster(1, threads, allocator=allocator) as client:
        if isinstance(model, ModelRef):
            client.run(get_model, model, "cpu")
        tile = config.tile_size
        chunks = (tile, tile) if layout == "tiles" else input_chunks(size, size, config)
        da = lazy_scene(size, chunks, bands)
        small_chunks = chunks if layout == "tiles" else input_chunks(512, 512, config)
        small = lazy_scene(512, small_chunks, bands)
        stream(client, predict(small, model, config))  # warm: imports, allocator, model
        before = max(client.run(_rss).values())
        t0 = time.perf_counter()
        stream(client, predict(da, model, config))
        seconds = time.perf_counter() - t0
        peak = max(client.run(_vm_hwm).values())
    return peak / MIB, before / MIB, seconds


def map_run_rate(folder: Path, size_px: int) -> tuple[float, float, str] | None:
    """(map Mpx/s, predict Mpx/s on the same scenes, note) on a generated demo of ``size_px``^2
    scenes, if available."""
    try:
        from arctic_rts.config import MapConfig
        from arctic_rts.demo import generate_demo
        from arctic_rts.load import load_scenes
        from arctic_rts.model.weights import bundled_weights
        from arctic_rts.pipeline import map_region
    except ImportError as err:
        log(f"map run skipped: {err}")
        return None
    catalog = generate_demo(folder / f"demo-{size_px}", size_px=size_px)
    weights = bundled_weights()
    note = "bundled demo weights"
    if not weights.is_file():
        from arctic_rts.bands import L2A_BANDS

        weights = Path(make_weights(folder, list(L2A_BANDS)).path)
        note = "random-init UNet (bundled weights absent)"
    from arctic_rts.model.weights import resolve_weights

    model = resolve_weights(weights)  # each card read once, for the map run and predict alike
    config = MapConfig(cluster=ClusterConfig(gpu="no"))
    from arctic_rts.cluster import local_workers

    with cluster(local_workers(config.cluster), None) as client:  # connect's default layout
        t0 = time.perf_counter()
        result = map_region(
            catalog.bbox,
            catalog.years[0],
            stac=catalog.item_paths[0].parent,
            weights=model,
            out=folder / "map.gpkg",
            config=config,
            overwrite=True,
            client=client,
            progress=False,
        )
        map_seconds = time.perf_counter() - t0
        scenes = load_scenes(result.items, model.bands, config.load)
        pixels = sum(s.sizes["y"] * s.sizes["x"] for s in scenes)
        t0 = time.perf_counter()
        for s in scenes:
            stream(client, predict(s, model, config.predict))
        predict_seconds = time.perf_counter() - t0
    return (
        pixels / map_seconds / 1e6,
        pixels / predict_seconds / 1e6,
        f"{len(scenes)} scenes of {size_px}^2, {note}",
    )


# --------------------------------------------------------------------------------- output


def write_section(text: str, path: Path) -> None:
    """Replace the block between this script's markers in BENCHMARKS.md, leaving every other
    line as it is; when the markers are absent, append ``## Inference (bench/inference.py)``
    and the block at the end (an unmarked ``## Inference`` section of an older version of this
    script is removed). The heading stays outside the markers, so scripts that own their
    sections by heading (up to the next ``## `` line) never reach into the block."""
    old = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"{START}\n{text.strip()}\n{END}"
    if START in old and END in old and old.index(START) < old.index(END):
        new = old[: old.index(START)] + block + old[old.index(END) + len(END) :]
    else:
        lines = [ln for ln in old.splitlines() if ln.strip() not in (START, END)]
        start = next((i for i, ln in enumerate(lines) if ln.startswith("## Inference")), None)
        if start is not None:
            end = next(
                (
                    i
                    for i in range(start + 1, len(lines))
                    if lines[i].startswith("## ") or lines[i].startswith("<!--")
                ),
                len(lines),
            )
            del lines[start:end]
        new = "\n".join(lines).rstrip("\n") + f"\n\n{HEADING}\n\n{block}\n"
    path.write_text(new if new.endswith("\n") else new + "\n")


# --------------------------------------------------------------------------------- main


def _agreement(prob: np.ndarray, ref: np.ndarray, margin: int) -> str:
    """Max abs difference over the scene and at least ``margin`` px away from its edges."""
    whole = float(np.nanmax(np.abs(prob - ref)))
    inner = float(np.nanmax(np.abs(prob - ref)[margin:-margin, margin:-margin]))
    return f"{whole:.1e} ({inner:.1e} >= {margin} px from the edges)"


def write_geotiff(da: xr.DataArray, path: Path, block: int = 512) -> Path:
    """``da`` (band, y, x) as a tiled float32 GeoTIFF on a made-up 10 m UTM grid."""
    import rasterio
    from rasterio.transform import from_origin

    n, h, w = da.shape
    profile = {
        "driver": "GTiff",
        "height": h,
        "width": w,
        "count": n,
        "dtype": "float32",
        "crs": "EPSG:32618",
        "transform": from_origin(500_000, 7_600_000, 10, 10),
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.asarray(da.values, dtype=np.float32))
        dst.descriptions = tuple(str(b) for b in da["band"].values)
    return path


def open_geotiff(
    path: Path, bands: list[str], config: PredictConfig, layout: str = "tiles"
) -> xr.DataArray:
    """The GeoTIFF read lazily through GDAL in chunks of the tile grid (``layout="tiles"``) or
    of :func:`input_chunks` (``"split"``: flat memory, 9 reads per block)."""
    import rioxarray

    da = rioxarray.open_rasterio(path, lock=False)
    assert isinstance(da, xr.DataArray)
    if layout == "split":
        ys, xs = input_chunks(da.sizes["y"], da.sizes["x"], config)
    else:
        ys = xs = config.tile_size  # type: ignore[assignment]
    da = da.chunk({"band": -1, "y": ys, "x": xs})
    return da.assign_coords(band=bands)


def demo_precision(folder: Path, weights: Path, workers: int) -> list[tuple[str, str]]:
    """Evaluation metrics of the bundled model on the demo scenes in fp32 and bf16: object
    precision/recall of the map run, pixel IoU at the card's threshold, max abs prob diff."""
    import geopandas as gpd

    from arctic_rts.config import MapConfig
    from arctic_rts.demo import generate_demo
    from arctic_rts.demo.baseline import _truth_raster, score_against_truth
    from arctic_rts.load import load_scenes
    from arctic_rts.model.weights import resolve_weights
    from arctic_rts.pipeline import map_region

    catalog = generate_demo(folder / "demo")
    model = resolve_weights(weights)
    truth = gpd.read_file(catalog.truth_path)
    truth = truth[truth["year"] == catalog.years[0]]
    out: list[tuple[str, str]] = []
    probs: dict[str, list[np.ndarray]] = {}
    with cluster(workers, 1) as client:
        for precision in ("fp32", "bf16"):
            config = MapConfig(
                predict=PredictConfig(precision=precision, device="cpu"),
                cluster=ClusterConfig(n_workers=workers, threads_per_worker=1, gpu="no"),
            )
            result = map_region(
                catalog.bbox,
                catalog.years[0],
                stac=catalog.item_paths[0].parent,
                weights=model,
                out=folder / f"precision_{precision}.gpkg",
                config=config,
                overwrite=True,
                client=client,
                progress=False,
            )
            scenes = load_scenes(result.items, model.bands, config.load)
            scores = score_against_truth(result.polygons, truth, scenes)
            tp = fp = fn = 0
            probs[precision] = []
            for scene in scenes:
                prob = predict(scene, model, config.predict).compute()
                p = np.asarray(prob.values)
                probs[precision].append(p)
                valid = np.isfinite(p)
                hit = (p >= model.threshold) & valid
                true = (_truth_raster(scene, truth) > 0) & valid
                tp += int((hit & true).sum())
                fp += int((hit & ~true).sum())
                fn += int((~hit & true).sum())
            iou = tp / max(tp + fp + fn, 1)
            out.append(
                (
                    f"demo scenes ({len(scenes)}), bundled model, {precision}",
                    f"pixel IoU {100 * iou:.2f} %; objects: precision {scores.precision:.3f}, "
                    f"recall {scores.recall:.3f} ({scores.n_matched} of {scores.n_true})",
                )
            )
    diff = max(
        float(np.nanmax(np.abs(a - b))) for a, b in zip(probs["fp32"], probs["bf16"], strict=True)
    )
    out.append(("demo scenes: max abs prob diff bf16 vs fp32", f"{diff:.1e}"))
    return out


# --------------------------------------------------------------------------------- sections


@dataclasses.dataclass
class Bench:
    """What the sections share: the options, the model and its default settings, the output."""

    args: argparse.Namespace
    #: The sections to run, in the order of :data:`SECTIONS`.
    wanted: list[str]
    #: Scratch folder for weights, GeoTIFFs and demo runs.
    tmp: Path
    ref: ModelRef
    model: torch.nn.Module
    #: Predict settings with the card's measured halo.
    default: PredictConfig
    band_names: list[str]
    #: Convolution FLOPs per output pixel.
    fpp: float
    #: The model, in words, for the report's first line.
    model_text: str
    #: Whether glibc accepted the allocator settings (mallopt).
    tuned: bool
    rows: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    #: The real L1C scene (a random one where it is absent), loaded before the `real` section.
    real: xr.DataArray | None = None
    #: fp32 rate of `predict` side by side in one process (the `predict` section).
    cpu_rate: float | None = None
    #: fp32 rate on the default local cluster (the `peers` section); preferred for the estimate.
    chosen_rate: float | None = None

    @property
    def halo(self) -> int:
        """The default halo in pixels."""
        assert self.default.halo is not None  # resolve_halo always sets one
        return self.default.halo

    @property
    def window(self) -> int:
        """Edge of one default window: tile plus a halo on each side."""
        return self.default.tile_size + 2 * self.halo

    @property
    def real_scene(self) -> xr.DataArray:
        """The scene :func:`load_real_scene` loaded."""
        assert self.real is not None, "load_real_scene runs before the sections that use it"
        return self.real


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (``--probe`` is internal: :func:`probe` starts this file with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (checks the bench)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in this process")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to skip")
    parser.add_argument(
        "--model",
        choices=("bundled", "paper"),
        default="bundled",
        help="the bundled demo weights (default) or a random-init full-width paper UNet",
    )
    parser.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_probe(probe_args: list[str]) -> int:
    """Run one probe in this (fresh) process and print its result as one JSON line."""
    kind, *params = probe_args
    probes: dict[str, Callable[..., dict[str, Any]]] = {
        "window": _probe_window,
        "vectorize": _probe_vectorize,
    }
    fn = probes[kind]
    print(json.dumps(fn(*params)))
    return 0


def setup(args: argparse.Namespace, argv: list[str] | None) -> Bench:
    """Worker settings for this process, torch threads, the model and its default settings."""
    # Every row runs with the settings of default arctic-rts workers (peers included), in this
    # process and its probes; the `forward` section also measures the other settings.
    run_as_worker(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("ignore", message="Sending large graph")
    torch.set_num_threads(args.threads)
    tuned = tune_allocator()
    wanted = [s for s in (args.only or SECTIONS) if s not in args.skip]
    tmp = Path(tempfile.mkdtemp(prefix="arctic-rts-bench-"))
    if args.model == "bundled":
        from arctic_rts.model.weights import bundled_weights

        ref = ModelRef.from_path(bundled_weights())
    else:
        ref = make_weights(tmp, L1C_BANDS)
    model = fast_model(ref)
    default = resolve_halo(PredictConfig(device="cpu"), ref)  # the card's measured halo
    assert default.halo is not None
    band_names = list(model.bands)
    bands = len(band_names)
    unet = model.unet
    assert isinstance(unet, UNet)
    arch = read_card(ref.path)["architecture"]
    model_text = (
        f"{'bundled demo weights' if args.model == 'bundled' else 'random-init paper UNet'} "
        f"({bands} bands, widths {'/'.join(map(str, arch['widths']))}, bottleneck "
        f"{arch['bottleneck']})"
    )
    return Bench(
        args=args,
        wanted=wanted,
        tmp=tmp,
        ref=ref,
        model=model,
        default=default,
        band_names=band_names,
        fpp=conv_flops_per_pixel(unet),
        model_text=model_text,
        tuned=tuned,
    )


def load_real_scene(b: Bench) -> None:
    """Load the real L1C scene for the sections from `real` on (a random one when absent)."""
    q = b.args.quick
    real = read_real_scene(768 if q else 1920, b.band_names)
    if real is None:
        b.notes.append("Real L1C scene absent (../shared/data): a random scene stands in.")
        real = scene_array(b.band_names, 768 if q else 1920)
    b.real = real


def forward_section(b: Bench) -> None:
    """Raw model forward against a large fp32 matmul, and what each allocator setting is worth."""
    args = b.args
    q = b.args.quick
    ref = b.ref
    model = b.model
    default = b.default
    bands = len(b.band_names)
    fpp = b.fpp
    window = b.window
    rows = b.rows
    notes = b.notes
    tuned = b.tuned
    n_mm = 1024 if q else 4096
    peak = matmul_peak(n_mm)
    rows.append(row("FLOPs per output pixel (convolutions)", f"{fpp / 1e3:.0f} kFLOP"))
    rows.append(row(f"fp32 matmul peak ({n_mm}^2, {args.threads} threads)", f"{peak:.0f} GFLOP/s"))
    for precision in ("fp32", "bf16"):
        for s in [512] if q else [512, window]:
            r = raw_forward(model, bands, s, 1 if q else 3, precision)
            log(f"raw forward {s}^2 {precision}: {r:.3f} Mpx/s")
            rows.append(
                row(
                    f"raw forward {s}^2 tile, {precision}, {args.threads} threads",
                    f"{r:.3f} Mpx/s = {r * fpp / 1e3:.0f} GFLOP/s "
                    f"({100 * r * fpp / 1e3 / peak:.0f} % of the fp32 matmul peak)",
                )
            )
    from arctic_rts.cluster import worker_allocator

    settings: dict[str, tuple[dict[str, str], str]] = {
        "glibc malloc defaults": ({}, "default"),
        "`allocator='glibc'` (tuned)": (
            worker_environ(ClusterConfig(allocator="glibc")),
            "tuned",
        ),
    }
    if worker_allocator(ClusterConfig()) == "mimalloc":
        settings["mimalloc (the default)"] = (worker_environ(ClusterConfig()), "tuned")
    for s in [512] if q else [512, default.tile_size, window]:
        got = dict.fromkeys(settings, 0.0)
        for _ in range(1 if q else 3):  # alternating, best of each: the machine drifts
            for name, (env, malloc) in settings.items():
                args_ = ("window", ref.path, str(s), "1", str(args.threads), malloc)
                got[name] = max(got[name], probe(*args_, env=env)["mpx_s"])
        base = got["glibc malloc defaults"]
        rows.append(
            row(
                f"raw forward {s}^2 tile, fp32, {args.threads} threads, fresh process: "
                + " / ".join(settings),
                " / ".join(f"{v:.3f}" for v in got.values())
                + " Mpx/s = "
                + " / ".join(f"{v / base:.2f}" for v in got.values())
                + " x",
            )
        )
        log(rows[-1])
    notes.append(
        "Allocator: glibc gives every allocation above 32 MiB (64 MiB in a thread's arena) "
        "its own mmap and unmaps it on free, so each forward pass faults its activations "
        "in page by page again, and Dask's nannies trim freed heap memory at 64 KiB. "
        "Workers started by `cluster.connect` preload mimalloc (the `cmeel-mimalloc` wheel; "
        f"`MIMALLOC_PURGE_DELAY={WORKER_ENV['MIMALLOC_PURGE_DELAY']}`); with "
        "`ClusterConfig(allocator='glibc')` they run glibc with `MALLOC_ARENA_MAX=1`, a 1 GiB "
        "mmap threshold and a 256 MiB trim threshold (`cluster.ALLOCATOR_ENV`). This process "
        "re-runs itself with the default workers' variables, so every row runs with them "
        + ("(mimalloc)" if under_mimalloc() else "(glibc: mimalloc is not installed)")
        + " unless it names other settings; the `fresh process` rows show what each is worth."
        + ("" if tuned else " Here glibc refused mallopt.")
    )


def tiles_section(b: Bench) -> None:
    """Speed and activation memory per tile size and for a batch of two windows."""
    q = b.args.quick
    ref = b.ref
    default = b.default
    halo = b.halo
    window = b.window
    rows = b.rows
    notes = b.notes
    from arctic_rts.tiling import aligned_chunks, block_windows

    tiles = [512, 1024] if q else [512, 768, 1024, 1536, 2048, 3072]
    per_tile = {}
    for t in tiles:
        got = probe("window", ref.path, str(t + 2 * halo), "1", "1")
        wins = block_windows(10980, aligned_chunks(10980, t, minimum=halo), halo)
        useful = (10980 / sum(hi - lo for lo, hi, _, _ in wins)) ** 2
        per_tile[t] = got["mpx_s"] * useful
        log(f"tile {t}: window {got}, useful share {useful:.2f}")
        rows.append(
            row(
                f"tile {t} (+{halo} px halo: {t + 2 * halo}^2 windows), fp32, 1 thread",
                f"forward {got['mpx_s']:.3f} Mpx/s of window, {useful:.2f} of it is new on a "
                f"10980^2 scene: {per_tile[t]:.3f} Mpx/s of scene; activations "
                f"{got['activation_mib']:.0f} MiB per window",
            )
        )
    b2 = probe("window", ref.path, str(window), "2", "1")
    rows.append(
        row(
            f"batch 2 x {window}^2 windows, fp32, 1 thread",
            f"forward {b2['mpx_s']:.3f} Mpx/s of window; activations "
            f"{b2['activation_mib']:.0f} MiB",
        )
    )
    best = max(per_tile, key=per_tile.__getitem__)
    notes.append(
        f"Tile size: with the measured {halo} px halo (the `real` rows), a larger tile wastes "
        "less of each window, while activation memory "
        f"grows with the window's area; {best} px was fastest per scene pixel here. The "
        f"default is {default.tile_size} px (see `PredictConfig.tile_size`)."
    )


def predict_section(b: Bench) -> None:
    """``predict`` end to end against the raw forward over the same tiles."""
    args = b.args
    q = b.args.quick
    ref = b.ref
    model = b.model
    default = b.default
    halo = b.halo
    band_names = b.band_names
    rows = b.rows
    from arctic_rts.tiling import aligned_chunks, block_windows

    size = 2048 if q else 4096  # 16 blocks: two tasks side by side share them evenly
    da = scene_array(band_names, size)
    wins = block_windows(size, aligned_chunks(size, default.tile_size, minimum=halo), halo)
    share = (size / sum(hi - lo for lo, hi, _, _ in wins)) ** 2
    t = args.threads
    for precision in ("fp32", "bf16"):
        cfg = dataclasses.replace(default, precision=precision)
        got = dict.fromkeys(("raw", "raw side by side", "one task", "side by side"), 0.0)
        for _ in range(1 if q else 3):  # alternating, best of each: the machine drifts
            for key, measure in (
                ("raw", lambda c=cfg: raw_tiles(model, da.values, c.tile_size, c.precision)),
                (
                    "raw side by side",
                    lambda c=cfg: raw_tiles(model, da.values, c.tile_size, c.precision, t),
                ),
                ("one task", lambda c=cfg: predict_rate(da, ref, c, 1)),
                ("side by side", lambda c=cfg: predict_rate(da, ref, c, 1, threads=t)),
            ):
                got[key] = max(got[key], measure())
        limit = max(got["raw"], got["raw side by side"])
        if precision == "fp32":
            b.cpu_rate = got["side by side"]
        log(f"predict {size}^2 {precision}: {got}")
        head = f"{size}^2 scene in {cfg.tile_size}^2 tiles without overlap, {precision}"
        rows.append(
            row(
                f"raw forward over the {head}: one tile at a time on {t} torch threads / "
                f"{t} tiles side by side on 1 torch thread each",
                f"{got['raw']:.3f} / {got['raw side by side']:.3f} Mpx/s (the limit: "
                f"{limit:.3f}; runs alternating with the two below, best of 3 each)",
            )
        )
        for key, what in (
            ("one task", f"synchronous scheduler: one model task at a time on {t} threads"),
            (
                "side by side",
                f"threaded scheduler ({t} threads, the default): {t} model tasks side by "
                "side, 1 torch thread each",
            ),
        ):
            rows.append(
                row(
                    f"predict {size}^2 scene, tile {cfg.tile_size} + halo {halo}, "
                    f"{precision}, one process, {what}",
                    f"{got[key]:.3f} Mpx/s = {got[key] / limit:.2f} x the limit "
                    f"({got[key] / got['raw']:.2f} x one tile at a time); the halos leave "
                    f"{share:.2f} of the window pixels new",
                )
            )


def real_section(b: Bench) -> None:
    """Agreement of tiled with whole-scene inference on the real L1C scene, per halo."""
    ref = b.ref
    model = b.model
    default = b.default
    halo = b.halo
    rows = b.rows
    notes = b.notes
    real = b.real_scene
    real_size = b.real_scene.sizes["y"]
    data = real.values
    whole = {p: whole_scene(model, data, p) for p in ("fp32", "bf16")}
    for h in (0, 16, 32, 48, 64, 96, 128):
        cfg = PredictConfig(tile_size=256, halo=h, device="cpu")
        with dask.config.set(scheduler="synchronous"):
            tiled = predict(real, ref, cfg).values
        log(f"real scene halo {h}: {_agreement(tiled, whole['fp32'], 128)}")
        rows.append(
            row(
                f"real L1C scene {real_size}^2, tiles of 256 + halo {h}, fp32: max abs prob "
                "diff against whole-scene fp32",
                _agreement(tiled, whole["fp32"], 128),
            )
        )
    on_real, _ = measure_halo(model, data)
    card = read_card(ref.path)
    rows.append(
        row(
            f"halo measured by `measure_halo` (tolerance {HALO_TOLERANCE:g}): card (training "
            "patches) / real scene",
            f"{card.get('halo', 'none')} px / {on_real} px; default used here: {halo} px",
        )
    )
    with dask.config.set(scheduler="synchronous"):
        tiled = predict(real, ref, dataclasses.replace(default, precision="bf16")).values
    rows.append(
        row(
            f"real L1C scene, default tiles (halo {halo}), bf16: max abs prob diff against "
            "whole-scene bf16 / fp32",
            f"{_agreement(tiled, whole['bf16'], 128)} / {_agreement(tiled, whole['fp32'], 128)}",
        )
    )
    notes.append(
        "Receptive field: the `real` rows measure how far context reaches. Tiles on the "
        f"16 px grid with a {EXACT_HALO} px halo reproduce whole-scene inference for any "
        "UNet with 4 poolings; a trained model's influence fades sooner. `arctic-rts train` "
        "measures it on its own patches (`model.halo.measure_halo`: the smallest halo from which "
        f"on tiled output stays within {HALO_TOLERANCE:g} of whole-image output) and writes "
        "it to the card, and that is predict's default halo; weights without one get "
        f"{EXACT_HALO} px."
    )


def peers_section(b: Bench) -> None:
    """A hand-written tile loop, MONAI and ours (one process, then a local cluster)."""
    args = b.args
    model = b.model
    rows = b.rows
    real = b.real_scene
    real_size = b.real_scene.sizes["y"]
    data = real.values
    x = torch.from_numpy(data)[None]
    px = real_size * real_size / 1e6
    whole = {p: whole_scene(model, data, p) for p in ("fp32", "bf16")}
    t_hand = timed(lambda: hand_loop(model, x, 512, 64), 5)
    hand = hand_loop(model, x, 512, 64)
    rows.append(
        row(
            f"peer: hand-written loop, 512 px tiles + 64 overlap, fp32, real scene "
            f"{real_size}^2, {args.threads} threads",
            f"{px / t_hand:.3f} Mpx/s; agreement {_agreement(hand, whole['fp32'], 128)}",
        )
    )
    monai_rates, ours_fp32 = _monai_rows(b, x, whole)
    _one_process_rows(b, whole, monai_rates, ours_fp32)
    _cluster_rows(b, whole, monai_rates)


def _monai_rows(
    b: Bench, x: torch.Tensor, whole: dict[str, np.ndarray]
) -> tuple[dict[str, float], dict[str, float]]:
    """MONAI's ``sliding_window_inference`` (when installed); ours in fp32 alternating with it.

    Returns:
        MONAI's rates by precision (and ``fp32 half``: 0.5 overlap), and ours in fp32 (``side
        by side`` and ``one task``) measured alternating with MONAI; empty without MONAI.
    """
    args = b.args
    ref = b.ref
    model = b.model
    default = b.default
    rows = b.rows
    notes = b.notes
    real = b.real_scene
    px = b.real_scene.sizes["y"] ** 2 / 1e6
    monai_rates: dict[str, float] = {}
    ours_fp32: dict[str, float] = {}  # measured alternating with MONAI fp32
    try:
        import monai  # noqa: F401

        for precision in ("fp32", "bf16"):
            monai_loop(model, x[..., :256, :256], 256, 32, precision)
            if precision == "fp32":  # the target's pair: runs alternating, best of 5 each
                ours_fp32 = {"side by side": 0.0, "one task": 0.0}
                t_monai = float("inf")
                for _ in range(5):
                    t_monai = min(t_monai, timed(lambda: monai_loop(model, x, 512, 64)))
                    for key, threads in (("side by side", args.threads), ("one task", None)):
                        rate = predict_rate(real, ref, default, 1, threads=threads)
                        ours_fp32[key] = max(ours_fp32[key], rate)
            else:
                t_monai = timed(lambda p=precision: monai_loop(model, x, 512, 64, p), 5)
            got = monai_loop(model, x, 512, 64, precision)
            monai_rates[precision] = px / t_monai
            rows.append(
                row(
                    f"peer: MONAI sliding_window_inference, 512 + 64 overlap, gaussian, "
                    f"{precision}, same scene, {args.threads} threads",
                    f"{px / t_monai:.3f} Mpx/s; agreement with whole-scene "
                    f"{precision}: {_agreement(got, whole[precision], 128)}",
                )
            )
        t_half = timed(lambda: monai_loop(model, x, 512, 256), 3)
        monai_rates["fp32 half"] = px / t_half
        got = monai_loop(model, x, 512, 256)
        rows.append(
            row(
                "peer: MONAI sliding_window_inference, 512 + 256 overlap (0.5), gaussian, "
                f"fp32, same scene, {args.threads} threads",
                f"{px / t_half:.3f} Mpx/s; agreement with whole-scene fp32: "
                f"{_agreement(got, whole['fp32'], 128)}",
            )
        )
        notes.append(
            "MONAI's agreement: its gaussian importance map is clamped at 1e-3, so near the "
            "corners where four windows overlap every window gets that same weight, the "
            "ones whose edge (no context) lies there included: their plain average is "
            "what differs from whole-scene inference (constant blending gives the same "
            "maximum). A halo that is cut off, as ours, never lets edge pixels in."
        )
    except ImportError:
        notes.append(
            "MONAI not installed: its rows are skipped (pip install monai to include them)."
        )
    return monai_rates, ours_fp32


def _one_process_rows(
    b: Bench,
    whole: dict[str, np.ndarray],
    monai_rates: dict[str, float],
    ours_fp32: dict[str, float],
) -> None:
    """Ours in one process: fp32 and bf16, one model task at a time or side by side."""
    args = b.args
    ref = b.ref
    default = b.default
    rows = b.rows
    real = b.real_scene
    variants = [(p, default) for p in ("fp32", "bf16")]
    if default.tile_size != 1024:
        variants.append(("fp32", dataclasses.replace(default, tile_size=1024)))
    variants.insert(1, ("fp32 one task at a time", default))
    for variant, base_cfg in variants:
        precision = variant.split()[0]
        cfg = dataclasses.replace(base_cfg, precision=precision)
        one_by_one = variant != precision
        if precision == "fp32" and base_cfg is default and ours_fp32:
            rate = ours_fp32["one task" if one_by_one else "side by side"]
        else:
            rate = predict_rate(real, ref, cfg, 5, threads=None if one_by_one else args.threads)
        with dask.config.set(scheduler="synchronous"):
            got = predict(real, ref, cfg).values
        vs = monai_rates.get(precision)
        how = (
            f"one model task at a time on {args.threads} threads"
            if one_by_one
            else f"{args.threads} model tasks side by side (threaded scheduler, the default)"
        )
        rows.append(
            row(
                f"ours, one process, {precision}, tile {cfg.tile_size} + halo {cfg.halo}, {how}",
                f"{rate:.3f} Mpx/s"
                + (f" = {rate / vs:.2f} x MONAI {precision}" if vs else "")
                + (
                    f" (runs alternating with it, best of 5 each) = "
                    f"{rate / monai_rates['fp32 half']:.2f} x MONAI at 0.5 overlap"
                    if precision == "fp32" and base_cfg is default and ours_fp32
                    else ""
                )
                + f"; agreement with whole-scene {precision}: "
                f"{_agreement(got, whole[precision], 128)}",
            )
        )


def _cluster_rows(b: Bench, whole: dict[str, np.ndarray], monai_rates: dict[str, float]) -> None:
    """Ours on the default local cluster, reading a GeoTIFF through GDAL in two layouts."""
    tmp = b.tmp
    ref = b.ref
    default = b.default
    band_names = b.band_names
    rows = b.rows
    real = b.real_scene
    px = b.real_scene.sizes["y"] ** 2 / 1e6
    tif = write_geotiff(real, tmp / "real.tif")
    from arctic_rts.cluster import (
        concurrent_model_tasks,
        get_model,
        local_workers,
        torch_threads,
        worker_threads,
    )

    layout = ClusterConfig(gpu="no")
    n_default = local_workers(layout)
    default_layout = (
        f"the default local cluster ({n_default} worker x "
        f"{worker_threads(layout, n_default)} threads, "
        f"{concurrent_model_tasks(layout, n_default)} model task at a time per worker on "
        f"{torch_threads(layout, n_default)} torch threads)"
    )
    with cluster(n_default, None) as client:
        client.run(get_model, ref, "cpu")
        for precision, layout in (("fp32", "tiles"), ("bf16", "tiles"), ("fp32", "split")):
            cfg = dataclasses.replace(default, precision=precision)
            lazy = open_geotiff(tif, band_names, cfg, layout)
            predict(lazy, ref, cfg).compute()  # warm: GDAL, allocator
            seconds = timed(lambda c=cfg, a=lazy: predict(a, ref, c).compute(), 2)
            got = predict(lazy, ref, cfg).compute().values
            rate = px / seconds
            if layout == "tiles" and precision == "fp32":
                b.chosen_rate = rate
            vs = monai_rates.get(precision)
            vs32 = monai_rates.get("fp32")
            chunks = "tile-grid chunks" if layout == "tiles" else "`input_chunks`"
            rows.append(
                row(
                    f"ours on {default_layout}, GeoTIFF (deflate, 512 px blocks) read "
                    f"through GDAL in {chunks}, {precision}, tile {cfg.tile_size} + halo "
                    f"{cfg.halo}",
                    f"{rate:.3f} Mpx/s"
                    + (f" = {rate / vs:.2f} x MONAI {precision}" if vs else "")
                    + (f" = {rate / vs32:.2f} x MONAI fp32" if vs32 and precision != "fp32" else "")
                    + f"; agreement with whole-scene {precision}: "
                    f"{_agreement(got, whole[precision], 128)}",
                )
            )
            log(rows[-1])


def precision_section(b: Bench) -> None:
    """bf16 against fp32 on the demo scenes (bundled model only)."""
    args = b.args
    tmp = b.tmp
    ref = b.ref
    rows = b.rows
    notes = b.notes
    if args.model != "bundled":
        notes.append("Precision check skipped: it needs the bundled (trained) model.")
    else:
        try:
            for measure, result in demo_precision(tmp, Path(ref.path), 2):
                rows.append(row(measure, result))
                log(rows[-1])
        except Exception as err:  # the bench reports what it could not measure
            notes.append(f"Precision check failed: {type(err).__name__}: {err}")


def scaling_section(b: Bench) -> None:
    """Idle CPU of a LocalCluster and model throughput for 1 and 2 workers and threads."""
    q = b.args.quick
    ref = b.ref
    default = b.default
    band_names = b.band_names
    rows = b.rows
    notes = b.notes
    # 64 model tasks: with few tasks the split between 2 workers decides (16 tasks went
    # 9/7 in an earlier run, a ceiling of 1.78x); a real 10980^2 scene has 121 of 1024 px.
    size, tile = (1024, 256) if q else (4096, 512)
    cfg = dataclasses.replace(default, tile_size=tile)
    blocks = (size // tile) ** 2
    idle = {quiet: idle_cpu(5 if q else 20, quiet) for quiet in (False, True)}
    for quiet, label in ((False, "Dask's default intervals"), (True, "`QUIET_DASK_CONFIG`")):
        main_pct, worker_pct = idle[quiet]
        rows.append(
            row(
                f"idle CPU of a 1-worker LocalCluster, {label}"
                + (" (the default of `connect`)" if quiet else ""),
                f"scheduler + client process {main_pct:.2f} %, worker {worker_pct:.2f} % of a core",
            )
        )
    rounds = 1 if q else 4
    layouts = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2)]
    measured = cluster_rates(layouts, size, ref, cfg, band_names, rounds)
    (r11, _, c11), (r21, n21, c21), (r12, _, c12), (r1t, _, c1t) = measured
    log(f"scaling: 1x1 {r11:.3f} ({c11:.2f}), 2x1 {r21:.3f} {n21} ({c21:.2f}), 1x2 {r12:.3f}")
    what = (
        f"LocalCluster, {size}^2 scene generated on the workers, tile {tile}, fp32: {blocks} "
        f"model tasks, 1 torch thread per task; the four clusters alive at once, runs "
        f"alternating, best of {rounds} each"
    )
    rows.append(
        row(
            f"scaling ({what}): 1 worker x 1 thread",
            f"{r11:.3f} Mpx/s; model tasks running at once: {c11:.2f}",
        )
    )
    rows.append(
        row(
            "2 workers x 1 thread",
            f"{r21:.3f} Mpx/s = {r21 / r11:.2f} x 1x1; model tasks per worker "
            f"{'/'.join(map(str, n21))}, running at once: {c21:.2f}",
        )
    )
    rows.append(
        row(
            "1 worker x 2 threads",
            f"{r12:.3f} Mpx/s = {r12 / r11:.2f} x 1x1 (2 workers x 1 thread = "
            f"{r21 / r12:.2f} x this); running at once: {c12:.2f}",
        )
    )
    rows.append(
        row(
            "1 worker x 1 thread, 2 torch threads per task (the default before)",
            f"{r1t:.3f} Mpx/s = {r1t / r11:.2f} x 1x1 (1 worker x 2 threads, the default "
            f"now = {r12 / r1t:.2f} x this); running at once: {c1t:.2f}",
        )
    )
    notes.append(
        "Scaling: 'running at once' is the model tasks' busy time over the wall time of the "
        "model phase, from Dask's task stream: it shows whether the workers really ran model "
        "tasks in parallel even when other work on the machine takes the cores (then the "
        "speed-up in Mpx/s stays below it). While one layout runs, the other three clusters "
        "sit idle beside it (their cost per process: the idle CPU rows); on 2 cores the "
        "scheduler, the client and the workers' event loops share the cores with the model "
        "tasks of 2 single-thread workers, while 1 worker x 1 thread leaves them a core."
    )


def memory_section(b: Bench) -> None:
    """Peak RSS of the worker that runs model tasks against scene size and input layout."""
    q = b.args.quick
    ref = b.ref
    default = b.default
    band_names = b.band_names
    rows = b.rows
    notes = b.notes
    sizes = [1024, 2048] if q else [2048, 4096, 8192, 16384]
    from arctic_rts.cluster import worker_allocator

    chosen = worker_allocator(ClusterConfig())
    for layout, label, alloc, measured in (
        ("split", f"read with `input_chunks`, {chosen} (the default)", "auto", sizes),
        ("tiles", f"read in tile-grid chunks, {chosen} (the default)", "auto", sizes[:3]),
        # 2048, 8192, 16384: the sizes the target names
        (
            "split",
            "read with `input_chunks`, `allocator='glibc'`",
            "glibc",
            sizes[::2] + sizes[3:],
        ),
    ):
        if alloc == "glibc" and chosen == "glibc":
            continue  # the default rows are glibc's
        peaks = []
        for s in measured:
            mib, idle, sec = peak_worker_memory(s, layout, ref, default, band_names, 1, alloc)
            peaks.append(mib)
            log(f"memory {layout} {alloc} {s}^2: {mib:.0f} MiB (idle {idle:.0f}), {sec:.0f} s")
            rows.append(
                row(
                    f"peak RSS of the worker (1 worker x 1 thread, bundled UNet, fp32), "
                    f"{s}^2 scene {label}",
                    f"{mib:.0f} MiB ({mib - idle:+.0f} MiB over the idle worker; "
                    f"{s * s / sec / 1e6:.3f} Mpx/s)",
                )
            )
        rows.append(row(f"memory spread, {label}", f"max/min = {max(peaks) / min(peaks):.2f}"))
    notes.append(
        "Memory: the worker that runs model tasks holds, besides the runtime and one "
        "window's activations per thread, the input blocks whose neighbours are not read "
        "yet, and what the allocator keeps of freed memory for reuse. With glibc the input "
        "blocks that wait for their model task land in the holes the last window's "
        "activations left, so the next window's activations take new memory and the heap "
        "grows over a run until `cluster.release_free_memory` hands holes back (past 1 GiB; "
        "every trim makes the next window fault its activations in again); mimalloc (the "
        "default) keeps large blocks apart and reuses them. Windows copy "
        "the margins they take from neighbouring blocks (dask's `overlap` took views, which "
        "kept whole neighbour blocks alive). Input read in tile-grid chunks leaves rows of "
        "whole blocks waiting for the next row's context (48 MiB per 12-band 1024^2 block), "
        "so memory grows with the scene's width; read with `predict.input_chunks` every halo "
        "strip is a chunk of its own and only strips wait, at the price of 9 reads per block."
    )


def vectorize_section(b: Bench) -> None:
    """The map run's per-scene vectorize task on one whole probability scene."""
    q = b.args.quick
    rows = b.rows
    s = 4096 if q else 10980
    got = probe("vectorize", str(s))
    rows.append(
        row(
            f"vectorize one {s}^2 probability scene (the map run's per-scene task)",
            f"{got['seconds']:.1f} s, +{got['added_mib']:.0f} MiB peak for a "
            f"{got['input_mib']:.0f} MiB input, {got['polygons']} polygons",
        )
    )


def map_section(b: Bench) -> None:
    """The demo map run against ``predict`` on the same scenes."""
    q = b.args.quick
    tmp = b.tmp
    rows = b.rows
    notes = b.notes
    try:
        # the largest demo scenes: at the default 1008^2 the run's start-up dominates
        got_map = map_run_rate(tmp, 1008 if q else 3000)
    except Exception as err:  # the bench reports what it could not measure
        got_map = None
        notes.append(f"Map run not measured: {type(err).__name__}: {str(err).splitlines()[0]}")
    if got_map:
        m_rate, p_rate, what = got_map
        rows.append(
            row(
                "map run (search, load, predict, vectorize, write) on the demo, "
                f"{what}, the default local cluster",
                f"{m_rate:.3f} Mpx/s = {m_rate / p_rate:.2f} x predict on the same scenes "
                f"({p_rate:.3f} Mpx/s)",
            )
        )


def write_report(b: Bench) -> None:
    """Write the rows, notes and the pan-Arctic estimate into the block of ``--out``."""
    args = b.args
    q = b.args.quick
    default = b.default
    halo = b.halo
    fpp = b.fpp
    rows = b.rows
    notes = b.notes
    wanted = b.wanted
    model_text = b.model_text
    text = [
        f"`bench/inference.py{' --quick' if q else ''}"
        f"{' --only ' + ' '.join(wanted) if args.only or args.skip else ''}` on "
        f"{platform.machine()} CPU, torch {torch.__version__}, {model_text}, channels_last, "
        f"{time.strftime('%Y-%m-%d')}."
        + (" Quick mode: reduced sizes, not the full run." if q else "")
        + f" Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other "
        "work on a shared machine slows every row; ratios measured side by side hold better).",
        "",
        "| measure | result |",
        "|---|---|",
        *rows,
        "",
        *[f"- {n}" for n in notes],
    ]
    cpu_rate = b.chosen_rate or b.cpu_rate
    if cpu_rate:
        tiles_per_year = 2500
        px = tiles_per_year * 10980**2
        overhead = ((default.tile_size + 2 * halo) / default.tile_size) ** 2
        flop = px * fpp * overhead
        gpu_h = [flop / (990e12 * e) / 3600 for e in (0.05, 0.15)]  # H100 SXM dense bf16
        cpu_h = px / (cpu_rate * 1e6) / 3600
        text += [
            "",
            "Pan-Arctic estimate. Assumptions: about 2,500 Sentinel-2 MGRS tiles (110 km, "
            "overlapping) cover the northern permafrost lowlands where RTS occur (an order of "
            "magnitude, not a count), one least-cloudy scene per tile and year "
            f"(`select_scenes`), 10980^2 px each: {px / 1e12:.2f} Tpx per year; "
            f"{fpp / 1e3:.0f} kFLOP per pixel x {overhead:.2f} for the {halo} px halos around "
            f"{default.tile_size} px tiles = "
            f"{flop / 1e15:.0f} PFLOP per year. A GPU worker reaching 5-15 % of an H100's "
            "~990 TFLOP/s dense bf16 (a UNet with 16-32 channels at full resolution is "
            f"memory-bound) needs {gpu_h[1]:.2f}-{gpu_h[0]:.2f} GPU-hours per year of imagery; "
            f"the measured CPU rate ({cpu_rate:.2f} Mpx/s on {args.threads} threads) would need "
            f"{cpu_h:.0f} such 2-core hours. TTA multiplies compute by 8, an ensemble by its "
            f"size. At GPU speed the run is bound by reading ~{px * 12 * 2 / 1e12:.1f} TB of "
            "12-band uint16 imagery per year, not by the model: plan workers by I/O bandwidth.",
        ]
    write_section("\n".join(text), args.out)
    log(f"wrote the inference block of {args.out}")


#: Section name -> the function that measures it.
SECTION_RUNS: dict[str, Callable[[Bench], None]] = {
    "forward": forward_section,
    "tiles": tiles_section,
    "predict": predict_section,
    "real": real_section,
    "peers": peers_section,
    "precision": precision_section,
    "scaling": scaling_section,
    "memory": memory_section,
    "vectorize": vectorize_section,
    "map": map_section,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        return run_probe(args.probe)
    bench = setup(args, argv)
    for name in SECTIONS:
        if name == "real":  # loaded whether `real` runs or not: the later sections use it too
            load_real_scene(bench)
        if name in bench.wanted:
            SECTION_RUNS[name](bench)
    write_report(bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
