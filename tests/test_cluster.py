"""Real multi-process Dask: one model load per worker process, and a separately started
``dask scheduler`` / ``dask worker`` pair on loopback giving the same answer as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import pytest
import rioxarray  # noqa: F401  (the .rio accessor)
import torch
import xarray as xr
import yaml
from dask.utils import parse_timedelta
from distributed.diagnostics.plugin import SchedulerPlugin

import arctic_rts.cluster
from arctic_rts.cluster import (
    QUIET_DASK_CONFIG,
    WORKER_ENV,
    as_delayed,
    clear_model_cache,
    cluster_dask_config,
    concurrent_model_tasks,
    connect,
    get_model,
    mimalloc_library,
    model_loads,
    release_free_memory,
    startup_environ,
    torch_threads,
    tune_allocator,
    under_mimalloc,
    worker_allocator,
    worker_environ,
    worker_threads,
)
from arctic_rts.config import ClusterConfig, PredictConfig
from arctic_rts.errors import ConfigError, WeightsError
from arctic_rts.model import ModelRef, UNet, load_model, save_weights
from arctic_rts.model_tasks import (
    MODEL_TASKS_ENV,
    TORCH_THREADS_ENV,
    model_slot,
    model_turn,
    task_threads,
)
from arctic_rts.predict import predict

BANDS = ["B03", "B04", "B08"]
DEPLOY_DASK_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "dask"
CONFIG = PredictConfig(tile_size=96, halo=128, batch_size=1, device="cpu")


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    torch.manual_seed(11)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    card = {"bands": BANDS, "normalisation": {"mean": [0.1, 0.1, 0.2], "std": [0.1, 0.1, 0.2]}}
    save_weights(UNet(3, widths=(4, 4, 8, 8), bottleneck=8), card, path)
    return ModelRef.from_path(path)


def _scene(seed: int, size: int = 320) -> xr.DataArray:
    data = np.random.default_rng(seed).random((3, size, size), dtype=np.float32) * 0.3
    data[:, :20, :30] = np.nan
    return xr.DataArray(
        dsa.from_array(data, chunks=(3, 128, 128)),
        dims=("band", "y", "x"),
        coords={"band": BANDS, "y": np.arange(size), "x": np.arange(size)},
    )


def _whole(ref: ModelRef, da: xr.DataArray) -> np.ndarray:
    model, _ = load_model(ref.path)
    with torch.inference_mode():
        out = torch.sigmoid(model(torch.from_numpy(da.values)[None]))[0, 0].numpy()
    out[np.isnan(da.values).any(axis=0)] = np.nan
    return out


def test_get_model_loads_once_and_checks_hash(ref: ModelRef, tmp_path: Path) -> None:
    clear_model_cache()
    first = get_model(ref, "cpu")
    assert get_model(ref, "cpu") is first
    assert model_loads() == {ref.path: 1}
    stale = ModelRef(ref.path, "0" * 64)
    with pytest.raises(WeightsError, match="restart the run"):
        get_model(stale, "cpu")


def _allocator_environs(client: Any) -> dict[str, dict[str, str]]:
    """Per worker: the allocator variables it started with (what glibc and mimalloc read)."""
    if not sys.platform.startswith("linux"):
        return {}
    started = client.run(startup_environ)
    names = set(WORKER_ENV)
    return {w: {k: v for k, v in env.items() if k in names} for w, env in started.items()}


#: The periodic callbacks of a scheduler or worker that QUIET_DASK_CONFIG sets, in ms.
QUIET_MS = {
    name: parse_timedelta(QUIET_DASK_CONFIG[key]) * 1000
    for name, key in (
        ("tick", "distributed.admin.tick.interval"),
        ("monitor", "distributed.admin.system-monitor.interval"),
        ("profile", "distributed.worker.profile.interval"),
        ("profile-cycle", "distributed.worker.profile.cycle"),
    )
}


def _server_intervals(client: Any) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The running intervals (ms) of the periodic callbacks in QUIET_MS: of the scheduler,
    and of every worker."""
    names = set(QUIET_MS)

    def intervals(server: Any) -> dict[str, float]:  # by value: no import of this module
        return {n: pc.callback_time for n, pc in server.periodic_callbacks.items() if n in names}

    scheduler = client.run_on_scheduler(lambda dask_scheduler: intervals(dask_scheduler))
    workers = client.run(lambda dask_worker: intervals(dask_worker))
    return scheduler, list(workers.values())


def test_deploy_dask_config_gives_workers_the_allocator_settings() -> None:
    text = (DEPLOY_DASK_CONFIG / "arctic-rts.yaml").read_text()
    loaded = yaml.safe_load(text)
    assert loaded["distributed"]["nanny"]["pre-spawn-environ"] == WORKER_ENV
    # ... and scheduler and workers the intervals of local clusters
    assert {k: dask.config.get(k, config=loaded) for k in QUIET_DASK_CONFIG} == QUIET_DASK_CONFIG
    recipe = (DEPLOY_DASK_CONFIG.parent / "slurm" / "dask-cluster.sbatch").read_text()
    assert "DASK_CONFIG=" in recipe and "deploy/dask" in recipe
    # the scheduler starts with the deploy config too
    assert recipe.index("export DASK_CONFIG=") < recipe.index("dask scheduler")
    # the recipe's workers preload mimalloc, as local workers do by default
    assert "export LD_PRELOAD" in recipe and "mimalloc_library" in recipe


def test_cluster_dask_config_keeps_what_the_user_set() -> None:
    assert cluster_dask_config() == QUIET_DASK_CONFIG
    with dask.config.set({"distributed.worker.profile.interval": "50ms"}):
        kept = cluster_dask_config()
    assert "distributed.worker.profile.interval" not in kept
    assert len(kept) == len(QUIET_DASK_CONFIG) - 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")
def test_tune_allocator_is_accepted_by_glibc() -> None:
    assert tune_allocator() is True
    assert tune_allocator() is True  # once per process; later calls report the first


def _resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim (Linux)")
def test_release_free_memory_returns_what_collected_and_no_more() -> None:
    # the settings model processes run with: without them glibc unmaps these blocks on free,
    # and nothing is left to hand back (the test must not depend on another test's call)
    assert tune_allocator() is True
    release_free_memory()  # the baseline: what this process holds free now
    blocks = [np.ones(300 * 2**20 // 8) for _ in range(5)]  # 1.5 GB, touched
    last = blocks.pop()  # stays in use above the others: they cannot be trimmed from the top
    blocks.clear()
    before = _resident_mib()
    assert release_free_memory() is True
    assert before - _resident_mib() > 1000  # the 1.2 GB freed below `last` went back
    assert release_free_memory() is False  # nothing collected since
    del last


def test_worker_environ_preloads_mimalloc_by_default_and_glibc_when_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lib = mimalloc_library()
    if sys.platform.startswith("linux"):
        assert lib is not None and Path(lib).is_file()  # installed with arctic-rts on Linux
    # another preload stays; mimalloc (left by an earlier cluster's nanny) is not doubled
    monkeypatch.setenv("LD_PRELOAD", f"/opt/other.so {lib or ''}")
    for allocator in ("auto", "mimalloc"):
        env = worker_environ(ClusterConfig(allocator=allocator))
        assert {k: env[k] for k in WORKER_ENV} == WORKER_ENV
        assert env["LD_PRELOAD"] == (f"/opt/other.so {lib}" if lib else "/opt/other.so")
    assert worker_allocator(ClusterConfig()) == ("mimalloc" if lib else "glibc")
    glibc = ClusterConfig(allocator="glibc")
    assert worker_environ(glibc)["LD_PRELOAD"] == "/opt/other.so"
    assert worker_allocator(glibc) == "glibc"
    # without the wheel: the default falls back to glibc, an explicit mimalloc is refused
    monkeypatch.setattr(arctic_rts.cluster, "mimalloc_library", lambda: None)
    monkeypatch.setenv("LD_PRELOAD", "/opt/other.so")
    assert worker_environ(ClusterConfig())["LD_PRELOAD"] == "/opt/other.so"
    assert worker_allocator(ClusterConfig()) == "glibc"
    with pytest.raises(ConfigError, match="cmeel-mimalloc"):
        worker_environ(ClusterConfig(allocator="mimalloc"))
    with pytest.raises(ConfigError, match="allocator must be"):
        ClusterConfig(allocator="jemalloc")


@pytest.mark.slow
def test_allocator_choice_holds_for_clusters_started_one_after_another() -> None:
    """Nannies write their workers' variables into this process's environment and read them
    from there first: a cluster started after another must still get its own allocator, and
    this process's environment is left as it was."""
    before = dict(os.environ)
    if mimalloc_library() is None:
        pytest.skip("cmeel-mimalloc is not installed here")
    for allocator, preloaded in (("mimalloc", True), ("glibc", False), ("mimalloc", True)):
        config = ClusterConfig(n_workers=1, threads_per_worker=1, allocator=allocator)
        with connect(config) as client:
            assert list(client.run(under_mimalloc).values()) == [preloaded], allocator
            environs = _allocator_environs(client)
        assert all(env == WORKER_ENV for env in environs.values()), environs
        assert dict(os.environ) == before


@pytest.mark.slow
def test_a_gdal_cache_size_exported_before_the_cluster_starts_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers get GDAL_CACHEMAX from WORKER_ENV unless it is in this process's environment
    (what docs/yearly-runs.md tells users of remote stores to do)."""
    config = ClusterConfig(n_workers=1, threads_per_worker=1)
    for exported, expected in ((None, WORKER_ENV["GDAL_CACHEMAX"]), ("256", "256")):
        if exported is None:
            monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
        else:
            monkeypatch.setenv("GDAL_CACHEMAX", exported)
        with connect(config) as client:
            got = client.run(startup_environ)
        assert [env.get("GDAL_CACHEMAX") for env in got.values()] == [expected]


@pytest.mark.slow
def test_a_local_cluster_listens_on_loopback_only() -> None:
    """Scheduler, dashboard, nannies and workers: nothing a local run starts is reachable from
    another machine (Dask's own default puts the dashboard on every interface)."""
    import psutil

    def listening(proc: psutil.Process) -> set[str]:
        return {
            c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
        }

    me = psutil.Process()
    before = listening(me)
    with connect(ClusterConfig(n_workers=1, threads_per_worker=1)) as client:
        assert "127.0.0.1" in client.dashboard_link
        procs = [me, *me.children(recursive=True)]
        addresses = set().union(*(listening(p) for p in procs)) - before
    assert addresses == {"127.0.0.1"}, addresses


def test_connect_refuses_gpu_yes_without_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        connect(ClusterConfig(gpu="yes"))


@pytest.mark.slow
def test_one_model_load_per_worker_process_over_three_scenes(ref: ModelRef) -> None:
    scenes = [_scene(seed) for seed in range(3)]
    with connect(ClusterConfig(n_workers=2, threads_per_worker=1)) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        probs = [predict(da, ref, CONFIG) for da in scenes]
        results = client.compute([p.data for p in probs], sync=True)
        loads = client.run(model_loads)
        pids = client.run(lambda: __import__("os").getpid())
        environs = _allocator_environs(client)
        mimalloc = client.run(under_mimalloc)
        scheduler_ms, workers_ms = _server_intervals(client)
    assert len(set(pids.values())) == 2  # two real processes
    # scheduler and workers run their periodic work at the quiet intervals
    assert scheduler_ms == {k: QUIET_MS[k] for k in ("tick", "monitor")}, scheduler_ms
    assert workers_ms == [QUIET_MS] * 2, workers_ms
    # mimalloc by default where its wheel is installed (Linux)
    assert list(mimalloc.values()) == [mimalloc_library() is not None] * 2
    # the workers started with the allocator settings (not the nanny's 64 KiB trim threshold)
    assert len(environs) == (2 if sys.platform.startswith("linux") else 0)
    assert all(env == WORKER_ENV for env in environs.values()), environs
    # 75 model tasks over 2 single-thread workers: both work, each loads the weights once
    assert [v.get(ref.path, 0) for v in loads.values()] == [1, 1], loads
    for da, got in zip(scenes, results, strict=True):
        want = _whole(ref, da)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        m = 128
        assert np.nanmax(np.abs(got[:-m, :-m] - want[:-m, :-m])) < 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def loopback_scheduler() -> Iterator[str]:
    """A real ``dask scheduler`` and ``dask worker`` (2 processes) started as subprocesses,
    the workers configured as the deployment recipes do (``DASK_CONFIG=deploy/dask``)."""
    dask_cli = Path(sys.executable).with_name("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask_args = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = [str(dask_cli), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
    worker = [str(dask_cli), "worker", address, "--nworkers", "2", "--nthreads", "1"]
    worker += ["--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "60"]
    # as deploy/slurm/dask-cluster.sbatch: the deploy config, for the workers mimalloc preloaded
    deploy_env = {**os.environ, "DASK_CONFIG": str(DEPLOY_DASK_CONFIG)}
    procs = [subprocess.Popen([*scheduler, "--no-dashboard"], env=deploy_env, **dask_args)]  # type: ignore[call-overload]
    try:
        env = {**deploy_env, "LD_PRELOAD": mimalloc_library() or ""}
        procs.append(subprocess.Popen(worker, env=env, **dask_args))  # type: ignore[call-overload]
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_separate_scheduler_and_workers_on_loopback(
    ref: ModelRef, loopback_scheduler: str, caplog: pytest.LogCaptureFixture
) -> None:
    scenes = [_scene(seed, size=288) for seed in (21, 22)]
    deadline = time.monotonic() + 90
    with caplog.at_level("INFO", logger="arctic_rts.cluster"):
        client = connect(ClusterConfig(scheduler=loopback_scheduler))
    # where to watch the run: the dashboard's address, logged once on connecting
    assert [r.getMessage() for r in caplog.records] == [f"Dask dashboard: {client.dashboard_link}"]
    with client:
        client.wait_for_workers(2, timeout=max(1.0, deadline - time.monotonic()))
        results = client.compute([predict(da, ref, CONFIG).data for da in scenes], sync=True)
        loads = client.run(model_loads)
        environs = _allocator_environs(client)
        mimalloc = client.run(under_mimalloc)
        scheduler_ms, workers_ms = _server_intervals(client)
    assert len(loads) == 2
    assert scheduler_ms == {k: QUIET_MS[k] for k in ("tick", "monitor")}, scheduler_ms
    assert workers_ms == [QUIET_MS] * 2, workers_ms
    assert list(mimalloc.values()) == [mimalloc_library() is not None] * 2
    assert len(environs) == (2 if sys.platform.startswith("linux") else 0)
    assert all(env == WORKER_ENV for env in environs.values()), environs
    assert all(v.get(ref.path, 0) <= 1 for v in loads.values()), loads
    assert sum(v.get(ref.path, 0) for v in loads.values()) >= 1
    for da, got in zip(scenes, results, strict=True):
        want = _whole(ref, da)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        m = 128
        assert np.nanmax(np.abs(got[:-m, :-m] - want[:-m, :-m])) < 1e-5


def _model_task_resources(dask_scheduler: object) -> list[dict | None]:
    tasks = dask_scheduler.tasks  # type: ignore[attr-defined]
    return [ts.resource_restrictions for k, ts in tasks.items() if "rts-predict" in str(k)]


@pytest.mark.slow
def test_model_tasks_ask_for_a_gpu_when_workers_have_one() -> None:
    from distributed import Client, LocalCluster, wait

    da = _scene(3, size=160)
    stand_in = torch.nn.Conv2d(3, 1, 1)
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, resources={"GPU": 1}) as cluster,
        Client(cluster) as client,
    ):
        prob = predict(da, stand_in, PredictConfig(tile_size=64, halo=16))
        kept = client.persist(prob.data, optimize_graph=False)
        wait(kept)
        restrictions = client.run_on_scheduler(_model_task_resources)
        assert restrictions and all(r == {"GPU": 1} for r in restrictions)
        assert np.isfinite(kept.compute()[20:, 30:]).all()


def test_as_delayed_keeps_values_coords_crs_and_annotations() -> None:
    import dask
    from dask.base import collections_to_expr

    data = np.arange(2 * 40 * 30, dtype=np.float32).reshape(2, 40, 30)
    da = xr.DataArray(
        dsa.from_array(data, chunks=(1, 16, 16)),
        dims=("band", "y", "x"),
        coords={"band": ["a", "b"], "y": np.arange(40) * -10.0, "x": np.arange(30) * 10.0},
        attrs={"item_id": "S2X"},
        name="refl",
    ).rio.write_crs("EPSG:32606")
    with dask.annotate(resources={"GPU": 1}):
        doubled = da.copy(data=da.data.map_blocks(lambda b: 2 * b, dtype=np.float32))
    kept = as_delayed(doubled, optimize_graph=False)
    resources = collections_to_expr(kept).__dask_annotations__()["resources"]
    gpu_keys = [key for key, value in resources.items() if value == {"GPU": 1}]
    assert len(gpu_keys) == 2 * 3 * 2  # every block of the annotated layer, nothing else
    assert all("lambda" in str(key) for key in gpu_keys)
    got = kept.compute(scheduler="synchronous")
    np.testing.assert_array_equal(got.values, 2 * data)
    assert got.dims == da.dims and got.name == "refl" and got.attrs["item_id"] == "S2X"
    np.testing.assert_array_equal(got["y"].values, da["y"].values)
    assert got.rio.crs == da.rio.crs
    assert got.rio.transform() == da.rio.transform()


class _ProcessingRecorder(SchedulerPlugin):
    """Scheduler plugin: the resource restrictions of every task when it starts processing."""

    name = "arctic-rts-test-recorder"

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.seen: dict[str, dict | None] = {}

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "processing":
            ts = self.scheduler.tasks.get(key)
            self.seen[str(key)] = None if ts is None else ts.resource_restrictions


def _add_recorder(dask_scheduler: Any) -> None:
    recorder = _ProcessingRecorder(dask_scheduler)
    dask_scheduler.add_plugin(recorder, name=_ProcessingRecorder.name, idempotent=False)


def _recorded(dask_scheduler: Any) -> dict[str, dict | None]:
    return dict(dask_scheduler.plugins[_ProcessingRecorder.name].seen)


@pytest.mark.slow
def test_map_scenes_model_tasks_reach_the_scheduler_asking_for_a_gpu(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from distributed import Client, LocalCluster

    from arctic_rts.bands import L2A_BANDS
    from arctic_rts.config import MapConfig
    from arctic_rts.demo import generate_demo
    from arctic_rts.model import resolve_weights
    from arctic_rts.pipeline import map_scenes
    from arctic_rts.search import normalize_item

    # The session's demo catalog of test_pipeline.py / test_cli.py, reused when present.
    demo = generate_demo(tmp_path_factory.getbasetemp() / "demo-catalog-180", size_px=180)
    path = demo.item_paths[0]
    item = normalize_item(json.loads(path.read_text()), base=path.parent)
    bands = list(L2A_BANDS)
    n = len(bands)
    card = {
        "bands": bands,
        "normalisation": {"mean": [0.1] * n, "std": [0.1] * n},
        "threshold": 0.5,
    }
    weights = tmp_path_factory.mktemp("gpu-weights") / "tiny.safetensors"
    torch.manual_seed(3)
    save_weights(UNet(n, widths=(4, 4), bottleneck=4), card, weights)
    config = MapConfig(predict=PredictConfig(tile_size=64, halo=32, device="cpu"))
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, resources={"GPU": 1}) as cluster,
        Client(cluster) as client,
    ):
        client.run_on_scheduler(_add_recorder)
        records, frames = map_scenes(
            [item], resolve_weights(weights), config, client, run_id="t", progress=False
        )
        seen = client.run_on_scheduler(_recorded)
    assert [r.status for r in records] == ["done"], records[0].error
    assert len(frames) == 1
    model_tasks = {k: v for k, v in seen.items() if "rts-predict" in k}
    # 180 px scene, 64 px tiles: 3 x 3 model tasks, every one restricted to a GPU slot
    assert len(model_tasks) == 9, sorted(seen)
    assert all(v == {"GPU": 1} for v in model_tasks.values()), model_tasks
    # reading and vectorising never wait for a GPU slot
    others = [v for k, v in seen.items() if "rts-predict" not in k]
    assert others and not any(others)


Span = tuple[int, float, float, int]


def _model_spans(
    config: ClusterConfig, tmp_path: Path, tile: int = 128
) -> tuple[dict[str, tuple[str | None, str | None]], list[Span]]:
    """Model tasks over a 256^2 scene in ``tile`` px tiles on a fresh cluster of ``config``,
    run by a stand-in that sleeps and logs its process, start, end and torch threads: each
    worker's (:data:`MODEL_TASKS_ENV`, :data:`TORCH_THREADS_ENV`) and the logged spans."""

    def sleepy(x: torch.Tensor) -> torch.Tensor:
        # Sleeping, not computing: concurrency shows even on a loaded machine.
        import os
        import time

        start = time.time()
        time.sleep(0.3)
        with open(tmp_path / "spans.log", "a") as log:
            log.write(f"{os.getpid()} {start} {time.time()} {torch.get_num_threads()}\n")
        return x[:, :1]

    with connect(config) as client:
        env = client.run(
            lambda: (os.environ.get(MODEL_TASKS_ENV), os.environ.get(TORCH_THREADS_ENV))
        )
        prob = predict(_scene(5, size=256), sleepy, PredictConfig(tile_size=tile, halo=32))
        assert np.isfinite(client.compute(prob.data, sync=True)[20:, 30:]).all()
    lines = (tmp_path / "spans.log").read_text().splitlines()
    spans = [(int(p), float(a), float(b), int(n)) for p, a, b, n in (ln.split() for ln in lines)]
    return env, spans


@pytest.mark.slow
def test_two_worker_processes_run_model_tasks_at_the_same_time(
    ref: ModelRef, tmp_path: Path
) -> None:
    config = ClusterConfig(n_workers=2, threads_per_worker=1, gpu="no")
    env, spans = _model_spans(config, tmp_path, tile=64)
    assert {threads for _, threads in env.values()} == {str(torch_threads(config, 2))}
    # every model task ran torch on the threads its worker was started with
    assert {n for *_, n in spans} == {torch_threads(config, 2)}
    by_pid: dict[int, list[Span]] = {}
    for span in spans:
        by_pid.setdefault(span[0], []).append(span)
    assert len(by_pid) == 2, spans  # both worker processes ran model tasks
    assert len(spans) == 16  # 4 x 4 blocks, one model call each
    first, second = by_pid.values()
    assert _overlaps(first + second) > _overlaps(first) + _overlaps(second), spans  # ... at once


def _overlaps(spans: list[Span]) -> int:
    """Pairs of spans that overlap in time."""
    return sum(
        1 for i, a in enumerate(spans) for b in spans[i + 1 :] if a[1] < b[2] and b[1] < a[2]
    )


@pytest.mark.slow
def test_a_cpu_worker_runs_one_model_task_at_a_time_on_all_its_cores(tmp_path: Path) -> None:
    config = ClusterConfig(n_workers=1, threads_per_worker=2, gpu="no")
    env, spans = _model_spans(config, tmp_path)
    assert {tasks for tasks, _ in env.values()} == {"1"}
    assert len(spans) == 4
    assert _overlaps(spans) == 0, spans  # two threads, yet the model tasks took turns
    assert {n for *_, n in spans} == {torch_threads(config, 1)} == {len(os.sched_getaffinity(0))}


@pytest.mark.slow
def test_model_tasks_run_side_by_side_when_asked(tmp_path: Path) -> None:
    config = ClusterConfig(n_workers=1, threads_per_worker=2, gpu="no", model_tasks_per_worker=2)
    env, spans = _model_spans(config, tmp_path)
    assert {tasks for tasks, _ in env.values()} == {"2"}
    assert len(spans) == 4 and _overlaps(spans) > 0, spans


def test_model_slot_limits_cpu_tasks_as_the_environment_says(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import contextlib
    import threading

    monkeypatch.delenv(MODEL_TASKS_ENV, raising=False)
    assert isinstance(model_slot(), contextlib.nullcontext)  # no limit
    monkeypatch.setenv(MODEL_TASKS_ENV, "1")
    slot = model_slot()
    assert model_slot() is slot  # one per process: every task waits on the same
    with slot:
        other = threading.Thread(
            target=lambda: slot.__enter__() and slot.__exit__(None, None, None)
        )
        other.start()
        other.join(timeout=0.3)
        assert other.is_alive()  # the second task waits for the first one's slot
    other.join(timeout=5)
    assert not other.is_alive()
    monkeypatch.setenv(MODEL_TASKS_ENV, "0")
    with caplog.at_level("WARNING"):
        assert isinstance(model_slot(), contextlib.nullcontext)
    assert MODEL_TASKS_ENV in caplog.text


def test_model_turn_is_one_lock_per_gpu_and_nothing_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    monkeypatch.setenv(MODEL_TASKS_ENV, "1")  # CPU tasks are limited by model_slot, not here
    assert isinstance(model_turn(torch.device("cpu")), contextlib.nullcontext)
    assert model_turn(torch.device("cuda", 0)) is model_turn(torch.device("cuda", 0))
    assert model_turn(torch.device("cuda", 0)) is not model_turn(torch.device("cuda", 1))


def test_a_model_task_waiting_for_its_slot_has_not_built_its_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A task that waits holds only its read pieces, not a second window's copies beside the
    running task's activations."""
    import importlib
    import threading

    predict_module = importlib.import_module("arctic_rts.predict")  # the package exports predict()
    built = threading.Event()
    real_assemble = predict_module._assemble

    def assemble(pieces: Any) -> Any:
        built.set()
        return real_assemble(pieces)

    monkeypatch.setattr(predict_module, "_assemble", assemble)
    monkeypatch.setenv(MODEL_TASKS_ENV, "1")
    piece = np.ones((3, 16, 16), dtype=np.float32)
    stand_in = torch.nn.Conv2d(3, 1, 1)
    result: list[np.ndarray] = []
    with model_slot():  # another model task runs
        task = threading.Thread(
            target=lambda: result.append(
                predict_module._predict_window(
                    [[piece]], 0, 0, 0, 0, models=[stand_in], config=PredictConfig(), tasks=1
                )
            )
        )
        task.start()
        task.join(timeout=0.3)
        assert task.is_alive() and not built.is_set()
    task.join(timeout=30)
    assert built.is_set() and result[0].shape == (16, 16)


def test_task_threads_env_main_thread_and_local_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from dask.system import CPU_COUNT

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv(TORCH_THREADS_ENV, raising=False)
    assert task_threads(8) is None  # main thread: the synchronous scheduler keeps the caller's

    seen: dict[str, int | None] = {}

    def in_thread(key: str, tasks: int) -> None:
        t = threading.Thread(target=lambda: seen.__setitem__(key, task_threads(tasks)))
        t.start()
        t.join()

    in_thread("many", 1000)
    in_thread("one", 1)
    with dask.config.set(num_workers=1):
        in_thread("pool of one", 1000)
    assert seen["many"] == max(1, cores // min(1000, CPU_COUNT))
    assert seen["one"] == cores  # a single model task gets every core
    assert seen["pool of one"] == cores
    monkeypatch.setenv(TORCH_THREADS_ENV, "3")
    assert task_threads(8) == 3
    monkeypatch.setenv(TORCH_THREADS_ENV, "zero")
    assert task_threads(8) is None  # ignored with a warning


def test_threaded_scheduler_runs_model_tasks_on_shared_out_threads(ref: ModelRef) -> None:
    seen: list[int] = []

    def recording(x: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return x[:, :1]

    before = torch.get_num_threads()
    prob = predict(_scene(6, size=256), recording, PredictConfig(tile_size=64, halo=32))
    with dask.config.set(scheduler="threads", num_workers=2):
        prob.compute()
    cores = len(os.sched_getaffinity(0))
    assert len(seen) == 16 and set(seen) == {max(1, cores // 2)}
    assert torch.get_num_threads() == before  # the caller's own setting is left alone


def test_local_worker_threads_share_out_the_cores() -> None:
    cores = len(os.sched_getaffinity(0))
    assert worker_threads(ClusterConfig(), 1) == cores
    assert worker_threads(ClusterConfig(threads_per_worker=3), 1) == 3
    # by default one model task at a time per worker, on all of its cores
    assert concurrent_model_tasks(ClusterConfig(), 1) == 1
    assert torch_threads(ClusterConfig(), 1) == cores
    assert torch_threads(ClusterConfig(), 2) == max(1, cores // 2)
    # one model task per thread, each on its share of the cores
    side_by_side = ClusterConfig(model_tasks_per_worker=None, threads_per_worker=4)
    assert concurrent_model_tasks(side_by_side, 1) == 4
    assert torch_threads(side_by_side, 1) == max(1, cores // 4)
    # never more tasks at once than threads
    assert (
        concurrent_model_tasks(ClusterConfig(model_tasks_per_worker=8, threads_per_worker=2), 1)
        == 2
    )
    assert torch_threads(ClusterConfig(threads_per_worker=1), 1) == cores
    with pytest.raises(ConfigError, match="model_tasks_per_worker"):
        ClusterConfig(model_tasks_per_worker=0)
    with pytest.raises(ConfigError, match="threads_per_worker"):
        ClusterConfig(threads_per_worker=0)
