"""Dask clusters and the per-process model cache.

``connect`` gives a ``distributed.Client`` for a local CPU cluster (worker processes), a
``LocalCUDACluster`` with one worker per GPU (``gpu`` extra), or an existing scheduler. Tasks
carry only a :class:`~arctic_rts.model.weights.ModelRef`; :func:`get_model` turns it into a
network once per worker process, checks its hash, moves it to the worker's device and counts
the loads (``client.run(arctic_rts.cluster.model_loads)`` reads the counts of every worker).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arctic_rts.config import ClusterConfig
from arctic_rts.errors import ClusterError, ConfigError, WeightsError
from arctic_rts.model_tasks import MODEL_TASKS_ENV, TORCH_THREADS_ENV, usable_cores

if TYPE_CHECKING:
    import torch
    import xarray as xr
    from dask.delayed import Delayed
    from distributed import Client

    from arctic_rts.model.weights import ModelRef, NormalizedModel

logger = logging.getLogger(__name__)

#: Worker resource that marks a GPU; model tasks ask for one when workers declare it.
GPU_RESOURCE = "GPU"

_cache: dict[tuple[str, str, str], NormalizedModel] = {}
_loads: dict[str, int] = {}
_lock = threading.Lock()
_allocator_tuned: bool | None = None


#: glibc malloc settings for processes that run the model. By default glibc hands every
#: allocation above 32 MiB (above 64 MiB in a thread's own arena) to ``mmap`` and unmaps it on
#: free, and Dask's nannies trim freed heap memory at 64 KiB, so each forward pass faults its
#: activations in again page by page. The tuned setting avoids that and is faster than glibc's
#: defaults (the fresh-process rows of BENCHMARKS.md).
#: With one arena, a 1 GiB mmap threshold and 256 MiB kept at the top of the heap, freed
#: activations are reused (no faults after the first pass); :func:`release_free_memory` bounds
#: what collects. :func:`connect` sets these in the environment of the workers it starts
#: (glibc reads them at process start); for workers of your own, see ``deploy/dask``.
ALLOCATOR_ENV: dict[str, str] = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(2**30),
    "MALLOC_TRIM_THRESHOLD_": str(2**28),
}
#: glibc's heap does not keep a worker's memory flat: the input blocks that wait for their
#: model task land in the holes that the last window's activations left, so the next
#: window's activations go to new memory and the heap grows over a run, while the memory in
#: use stays flat. mimalloc (the ``cmeel-mimalloc`` wheel, a dependency on Linux) keeps large
#: blocks apart and reuses them, so a worker's peak memory stays flat as scenes grow (the
#: memory rows of BENCHMARKS.md). :func:`connect` preloads it into the workers it starts
#: unless ``ClusterConfig(allocator="glibc")``; it cannot be loaded into a process that
#: already runs.
MIMALLOC_DIST = "cmeel-mimalloc"
#: mimalloc settings for workers. Freed memory goes back to the OS after 100 ms: a model task
#: that follows another within that time reuses its activations' pages instead of faulting
#: them in again (handing them back at once made map runs much slower), while a longer delay
#: keeps more of what reads and other tasks freed resident (a 30 s delay made a worker's peak
#: grow with the run's length). No transparent huge pages: with them a map run's worker peaked
#: higher and ran slower. Both measured in BENCHMARKS.md ("Map run speed: mimalloc's purge
#: delay", "Map run memory: transparent huge pages").
MIMALLOC_ENV: dict[str, str] = {"MIMALLOC_PURGE_DELAY": "100", "MIMALLOC_ALLOW_THP": "0"}
#: GDAL's cache of decoded raster blocks, in MiB, per worker process. The reads of a scene
#: share its open files (:func:`arctic_rts.predict.predict`), whose decoded tiles stay in this
#: cache while the scene runs; GDAL's default (5 % of the machine's memory, per process)
#: would let a 10980^2 scene's tiles fill it. 64 MiB trades worker memory against tiles
#: fetched and decoded again (the remote reads rows and notes of BENCHMARKS.md: with 256 MiB,
#: which a user can export, a remote read made about a third fewer requests).
GDAL_CACHE_ENV: dict[str, str] = {"GDAL_CACHEMAX": "64"}
#: Every variable :func:`connect` puts into the environment of the workers it starts, besides
#: ``LD_PRELOAD``; ``deploy/dask/arctic-rts.yaml`` gives workers of your own the same.
WORKER_ENV: dict[str, str] = {**ALLOCATOR_ENV, **MIMALLOC_ENV, **GDAL_CACHE_ENV}
#: Dask settings for the clusters :func:`connect` starts (and, through ``deploy/dask``, for
#: yours): the periodic work of every scheduler's and worker's event loop (a tick every 20 ms,
#: a system monitor every 500 ms, a profiler sample every 10 ms by default) takes CPU from
#: the model tasks on small machines; these intervals cut an idle process's share to a
#: fraction (the idle CPU and scaling rows of BENCHMARKS.md). The dashboard's profile still
#: fills, at one sample every 100 ms. Keys set
#: away from distributed's defaults (your own dask config) are kept: see
#: :func:`cluster_dask_config`.
QUIET_DASK_CONFIG: dict[str, str] = {
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.profile.interval": "100ms",
    "distributed.worker.profile.cycle": "10s",
}


@functools.cache
def mimalloc_library() -> str | None:
    """Path of the mimalloc shared library of the ``cmeel-mimalloc`` wheel, None without it."""
    from importlib import metadata

    try:
        files = metadata.files(MIMALLOC_DIST) or []
    except metadata.PackageNotFoundError:
        return None
    libs = sorted((f for f in files if f.name.startswith("libmimalloc.so")), key=str)
    for lib in libs:
        path = Path(str(lib.locate())).resolve()
        if path.is_file():
            return str(path)
    return None


@functools.cache
def under_mimalloc() -> bool:
    """Whether this process allocates through mimalloc (preloaded at its start)."""
    try:
        return hasattr(ctypes.CDLL(None), "mi_version")
    except OSError:
        return False


def worker_allocator(config: ClusterConfig | None = None) -> str:
    """The allocator that workers started for ``config`` get: "mimalloc" or "glibc".
    ``allocator="auto"`` (the default) is mimalloc where its wheel is installed, else glibc.

    Raises:
        ConfigError: ``allocator="mimalloc"`` without the ``cmeel-mimalloc`` wheel.
    """
    config = config or ClusterConfig()
    found = mimalloc_library() is not None
    if config.allocator == "mimalloc" and not found:
        raise ConfigError(
            f"allocator='mimalloc' needs the {MIMALLOC_DIST} wheel: pip install {MIMALLOC_DIST}."
        )
    if config.allocator == "glibc" or not found:
        return "glibc"
    return "mimalloc"


def worker_environ(config: ClusterConfig | None = None) -> dict[str, str]:
    """Variables for the environment of a worker before it starts: :data:`WORKER_ENV` and
    ``LD_PRELOAD``: the preloads of this environment, plus :func:`mimalloc_library` where
    :func:`worker_allocator` is "mimalloc", without it where it is "glibc".

    Raises:
        ConfigError: ``allocator="mimalloc"`` without the ``cmeel-mimalloc`` wheel.
    """
    allocator = worker_allocator(config)
    lib = mimalloc_library()
    # other preloads stay; mimalloc only once, and not at all with glibc
    preload = [p for p in os.environ.get("LD_PRELOAD", "").split() if p and p != lib]
    if lib is not None and allocator == "mimalloc":
        preload.append(lib)
    return {**WORKER_ENV, "LD_PRELOAD": " ".join(preload)}


@contextlib.contextmanager
def _spawn_environ(environ: dict[str, str]) -> Iterator[None]:
    """Give nannies started inside ``environ`` for their workers, and leave this process's
    environment as it was. Nannies take each pre-spawn variable from ``os.environ`` where it
    is set there (so ``LD_PRELOAD`` is set there too: a variable left by an earlier cluster
    would win) and write them all into ``os.environ`` before spawning."""
    import dask

    saved = dict(os.environ)
    os.environ["LD_PRELOAD"] = environ["LD_PRELOAD"]
    config = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **environ}
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": config}):
            yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


#: ``mallopt`` parameter numbers of glibc's malloc.h for the settings above.
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_ARENA_MAX": -8}


def startup_environ() -> dict[str, str]:
    """This process's environment as it started (what glibc read): nannies add their
    pre-spawn variables to the parent's ``os.environ`` later, without effect there. Run it on
    workers (``client.run(startup_environ)``) to see the settings they started with."""
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:  # not Linux
        return dict(os.environ)
    pairs = (item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0"))
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _glibc() -> Any | None:
    """This process's C library when it is glibc (``mallopt``, ``mallinfo2``, ``malloc_trim``
    present), else None; looked up once, not on every model task."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.mallinfo2, libc.malloc_trim  # noqa: B018  (presence check)
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return None
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def tune_allocator() -> bool:
    """Apply :data:`ALLOCATOR_ENV` to this running process through glibc's ``mallopt``, once.

    Settings that were in the environment when this process started are left as they are
    (glibc applied them; the user or the nanny chose them).
    Threads that have allocated before this call keep their own arena, so it helps fully only
    where the model runs in a thread started later or in the main thread; processes started
    with :data:`ALLOCATOR_ENV` in their environment need no call. :func:`get_model` calls it.

    Returns:
        Whether glibc accepted every setting (False on other C libraries, e.g. macOS, and on
        glibc older than 2.33).
    """
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    libc = _glibc()
    ok = libc is not None
    if libc is not None:
        started = startup_environ()
        for name, value in ALLOCATOR_ENV.items():
            if name not in started:
                ok = bool(libc.mallopt(_MALLOPT[name], int(value))) and ok
    _allocator_tuned = ok
    return ok


#: Resident free heap memory a process may collect beyond what it held free after its first
#: model task (or the first after its last trim) before :func:`release_free_memory` hands it
#: back: about two windows' activations at the default tile size (0.4-0.6 GiB per 1088^2
#: window, BENCHMARKS.md). Under glibc only.
FREE_MEMORY_KEPT = 2**30
_free_baseline: int | None = None


def _resident_free(libc: Any) -> int:
    """Resident bytes of this process that malloc does not count as in use (the runtime's own
    memory, roughly constant, plus free heap memory that was touched and not returned)."""
    info = libc.mallinfo2()
    resident = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return resident - int(info.uordblks) - int(info.hblkhd)


def release_free_memory() -> bool:
    """Hand free heap memory back to the OS (glibc ``malloc_trim``) once the resident free
    memory has grown by more than :data:`FREE_MEMORY_KEPT`; returns whether it did.

    With the allocator settings above, memory freed between long-lived blocks stays in the
    process for reuse. Model tasks call this when they finish, so that what a worker keeps
    stays bounded however many scenes it runs, while a window's activations are still reused
    from one task to the next (trimming after every task cost about a third of the speed).
    Does nothing under mimalloc, or where glibc's ``mallinfo2`` (2.33+) or ``/proc`` are
    missing.
    """
    global _free_baseline
    libc = _glibc()
    if libc is None or under_mimalloc():  # mimalloc returns memory by itself
        return False
    try:
        free = _resident_free(libc)
    except OSError:  # no /proc
        return False
    if _free_baseline is None or free < _free_baseline:
        _free_baseline = free
    if free - _free_baseline <= FREE_MEMORY_KEPT:
        return False
    libc.malloc_trim(0)
    _free_baseline = None  # the next task faults its activations in again: measured then
    return True


def local_workers(config: ClusterConfig) -> int:
    """Worker processes of a local CPU cluster: ``config.n_workers``, or one per two cores."""
    return config.n_workers or max(1, usable_cores() // 2)


def worker_threads(config: ClusterConfig, n_workers: int) -> int:
    """Threads per local worker: ``config.threads_per_worker``, or this host's cores shared
    out over ``n_workers`` (at least 1)."""
    if config.threads_per_worker is not None:
        return config.threads_per_worker
    return max(1, usable_cores() // n_workers)


def concurrent_model_tasks(config: ClusterConfig, n_workers: int) -> int:
    """Model tasks that run at once in one local CPU worker: ``config.model_tasks_per_worker``
    (None: one per thread), at most :func:`worker_threads`."""
    threads = worker_threads(config, n_workers)
    return min(config.model_tasks_per_worker or threads, threads)


def torch_threads(config: ClusterConfig, n_workers: int) -> int:
    """Torch threads per model task: ``config.torch_threads``, or this host's cores shared out
    over ``n_workers`` x :func:`concurrent_model_tasks` concurrent tasks (at least 1), so that
    tasks never oversubscribe the cores and no core is left idle."""
    if config.torch_threads is not None:
        return config.torch_threads
    return max(1, usable_cores() // (n_workers * concurrent_model_tasks(config, n_workers)))


def get_model(ref: ModelRef, device: str | torch.device = "auto") -> NormalizedModel:
    """The model behind ``ref`` on ``device``, loaded at most once per process.

    Raises:
        WeightsError: the file's tensors do not hash to ``ref.sha256`` (it changed after the
            reference was made) or cannot be loaded.
    """
    from arctic_rts.model.weights import load_model, resolve_device

    dev = resolve_device(device)
    key = (ref.path, ref.sha256, str(dev))
    model = _cache.get(key)
    if model is not None:
        return model
    with _lock:  # threads of one worker must not load the same weights twice
        model = _cache.get(key)
        if model is None:
            tune_allocator()
            model, card = load_model(ref.path, device=dev)
            if card.get("sha256") != ref.sha256:
                raise WeightsError(
                    f"{ref.path} now holds weights {str(card.get('sha256'))[:12]}, not the "
                    f"{ref.sha256[:12]} this run was started with; restart the run."
                )
            import torch

            # the fast layout for convolutions and the per-pixel LayerNorm on CPU and GPU
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            _cache[key] = model
            _loads[ref.path] = _loads.get(ref.path, 0) + 1
            logger.info("loaded %s on %s in process %d", ref.path, dev, os.getpid())
    return model


def model_loads() -> dict[str, int]:
    """How many times each weights file was loaded in this process (for tests and logs)."""
    return dict(_loads)


def clear_model_cache() -> None:
    """Forget cached models and load counts in this process."""
    with _lock:
        _cache.clear()
        _loads.clear()


def gpu_workers(client: Client) -> bool:
    """Whether the client's workers declare a GPU resource (then model tasks ask for one)."""
    workers = client.scheduler_info().get("workers", {})
    return any(w.get("resources", {}).get(GPU_RESOURCE) for w in workers.values())


def _assemble(
    blocks: list[Any], coords: Any, dims: tuple[Any, ...], attrs: dict[str, Any], name: Any
) -> Any:
    import numpy as np
    import xarray as xr

    return xr.DataArray(np.block(blocks), coords=coords.coords, dims=dims, attrs=attrs, name=name)


def as_delayed(da: xr.DataArray, *, optimize_graph: bool = True) -> Delayed:
    """One Delayed for the computed (numpy-backed) ``da``, coordinates, CRS and attrs kept.

    ``dask.delayed(f)(da)`` finalises a dask-backed DataArray with its graph optimised and
    flattened into one layer, which drops the layer annotations: the ``GPU`` resource that
    model tasks ask for would be lost. Here the blocks are taken with
    ``to_delayed(optimize_graph=optimize_graph)`` and joined in a task of their own; with
    ``optimize_graph=False`` every annotation reaches the scheduler (compute the result with
    ``optimize_graph=False`` too). Pass it where a task needs the whole array, e.g.
    ``dask.delayed(vectorize)(as_delayed(prob, optimize_graph=not gpu_workers(client)))``.
    """
    import dask
    import dask.array as dsa
    import xarray as xr

    if not isinstance(da.data, dsa.Array):
        return dask.delayed(da)  # type: ignore[no-any-return]
    coords = xr.Dataset(coords=da.coords)
    if coords.chunks:
        coords = coords.compute()  # small; the task must not carry a graph of its own
    blocks = da.data.to_delayed(optimize_graph=optimize_graph).tolist()
    return dask.delayed(_assemble, pure=True)(  # type: ignore[no-any-return]
        blocks, coords, da.dims, dict(da.attrs), da.name
    )


def active_client() -> Client | None:
    """The distributed Client in use by this thread, if any."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def _gpus_visible() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def _owning_client(cluster: Any) -> Client:
    """A Client on ``cluster`` whose ``close()`` (and ``with`` exit) also closes the cluster."""
    from distributed import Client

    class OwningClient(Client):
        def close(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().close(*args, **kwargs)
            finally:
                cluster.close()

    return OwningClient(cluster)


def connect(config: ClusterConfig | None = None) -> Client:
    """Connect to the cluster that ``config`` describes; use it as ``with connect(...) as c:``.

    * ``config.scheduler`` set: a Client on that existing scheduler (``tcp://host:8786``).
    * GPUs visible, ``dask_cuda`` importable and ``config.gpu != "no"``: a ``LocalCUDACluster``
      with one worker per GPU, each declaring the resource ``{"GPU": 1}``.
    * otherwise: a ``LocalCluster`` of worker processes (``config.n_workers``, default one
      per two cores) with :func:`worker_threads` threads each (default: the cores shared out).

    Local CPU workers run :func:`concurrent_model_tasks` model tasks at once (default one,
    ``ClusterConfig.model_tasks_per_worker``), each on :func:`torch_threads` torch threads
    (default: the worker's cores shared out over them), while their other threads read and
    vectorise; on 2 cores the default is 1 worker x 2 threads, one model task at a time on
    2 torch threads (``arctic_rts.model_tasks``). Their schedulers and workers run the
    periodic work of their event loops at the intervals of :func:`cluster_dask_config`.

    Clusters started here are closed when the returned client is closed.

    Raises:
        ConfigError: ``gpu="yes"`` without visible GPUs or without the ``gpu`` extra.
        ClusterError: ``config.scheduler`` cannot be reached.
    """
    from distributed import Client

    config = config or ClusterConfig()
    if config.scheduler:
        try:
            client = Client(config.scheduler)
        except (OSError, TimeoutError, ValueError) as err:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {config.scheduler} ({_one_line(err)}); "
                "check --scheduler (e.g. tcp://host:8786) and that the scheduler is running."
            ) from err
    else:
        # Nannies put pre-spawn variables into a worker's environment before it starts, where
        # glibc and the dynamic loader read them; their own default trims freed memory at 64 KiB.
        import dask

        with _spawn_environ(worker_environ(config)), dask.config.set(cluster_dask_config()):
            client = _start_local(config)
    with contextlib.suppress(KeyError, AttributeError):  # a scheduler without a dashboard
        logger.info("Dask dashboard: %s", client.dashboard_link)
    return client


def cluster_dask_config() -> dict[str, str]:
    """:data:`QUIET_DASK_CONFIG` less the keys whose value is not distributed's default (set
    by you: those win). Schedulers and nannies read them when they are created."""
    import dask
    import distributed  # noqa: F401  (its defaults must be loaded)

    defaults = dask.config.merge(*dask.config.defaults)
    return {
        key: value
        for key, value in QUIET_DASK_CONFIG.items()
        if dask.config.get(key) == dask.config.get(key, config=defaults)
    }


#: Where a local cluster's dashboard listens: loopback, like its scheduler and workers (Dask's
#: default, ":8787", listens on every interface); another free port when 8787 is taken.
LOOPBACK_DASHBOARD = "127.0.0.1:8787"


def _start_local(config: ClusterConfig) -> Client:
    from distributed import LocalCluster

    n_gpus = _gpus_visible() if config.gpu != "no" else 0
    if n_gpus:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as err:
            if config.gpu == "yes":
                raise ConfigError(
                    "gpu='yes' needs dask-cuda: pip install 'arctic-rts[gpu]'."
                ) from err
            logger.warning("GPUs visible but dask-cuda missing; using CPU workers")
        else:
            n_workers = config.n_workers or n_gpus
            cluster = LocalCUDACluster(
                n_workers=n_workers,
                threads_per_worker=worker_threads(config, n_workers),
                resources={GPU_RESOURCE: 1},
                env={TORCH_THREADS_ENV: str(torch_threads(config, n_workers))},
                dashboard_address=LOOPBACK_DASHBOARD,
                memory_limit=config.memory_limit,
                scheduler_kwargs={"allowed_failures": config.allowed_failures},
            )
            return _owning_client(cluster)
    elif config.gpu == "yes":
        raise ConfigError("gpu='yes' but no CUDA GPU is visible; use gpu='auto' or 'no'.")
    n_workers = local_workers(config)
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=worker_threads(config, n_workers),
        processes=True,
        env={
            TORCH_THREADS_ENV: str(torch_threads(config, n_workers)),
            MODEL_TASKS_ENV: str(concurrent_model_tasks(config, n_workers)),
        },
        dashboard_address=LOOPBACK_DASHBOARD,
        memory_limit=config.memory_limit,
        scheduler_kwargs={"allowed_failures": config.allowed_failures},
    )
    return _owning_client(cluster)


#: How long :func:`task_error` waits for a nanny's report that it restarted a worker for its
#: memory: the nanny sends it as it stops the worker, the scheduler may see the death first.
MEMORY_EVENT_WAIT_S = 2.0


def task_error(err: BaseException, client: Any = None) -> str:
    """One line for the exception of a scene's task: its type and first line.

    A task whose worker died on each of its tries (distributed's ``KilledWorker``, after
    ``ClusterConfig.allowed_failures`` deaths) says so, and says whether the last worker was
    restarted by its nanny for passing its memory limit (the nanny's ``worker-restart-memory``
    event on ``client``'s scheduler) with what to change.
    """
    from distributed import KilledWorker

    if not isinstance(err, KilledWorker):
        return f"{type(err).__name__}: {err}".splitlines()[0]
    worker = err.last_worker
    address = getattr(worker, "address", str(worker))
    text = (
        f"KilledWorker: the worker running task {err.task!r} died {err.allowed_failures + 1} "
        f"times (allowed_failures={err.allowed_failures}); the last, {address}, "
    )
    rss = _memory_restart(client, address)
    if rss is None:
        return text + "was killed or crashed (out of memory?): see its log."
    limit = getattr(worker, "memory_limit", 0) or 0
    return text + (
        f"was restarted by its nanny for passing its memory limit ({rss / 2**30:.2f} GiB of "
        f"{limit / 2**30:.2f} GiB). Lower tile_size, threads per worker or scenes in flight, "
        "or raise memory_limit (README, 'Worker memory')."
    )


def _memory_restart(client: Any, address: str) -> int | None:
    """The resident bytes at which the nanny restarted the worker at ``address`` for its
    memory, or None when no such restart was reported (within :data:`MEMORY_EVENT_WAIT_S`)."""
    import time

    if client is None:
        return None
    deadline = time.monotonic() + MEMORY_EVENT_WAIT_S
    while True:
        try:
            events = client.get_events("worker-restart-memory")
        except Exception:  # a scheduler that cannot answer: no reason to give
            return None
        for _, msg in events:
            if isinstance(msg, dict) and msg.get("worker") == address:
                return int(msg.get("rss", 0))
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
