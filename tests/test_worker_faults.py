"""Worker faults on a real multi-process Dask cluster (RELIABILITY.md, "Workers").

A worker process killed while a model task runs costs a recomputation and nothing else; a
worker that outgrows its memory limit is restarted by its nanny, the task is tried again
``allowed_failures`` times, then its scene fails with the reason and the run goes on. The faults
come from :class:`faults.FaultOnTask`, a worker plugin that acts when a model task
(``rts-predict-...``) begins to execute. Every map runs through the CLI on the demo catalog
with the hand-set NDVI-rule UNet, and the GeoPackage is read back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyogrio
import pytest
import yaml
from faults import FaultOnTask
from inventories import assert_same_inventory

from arctic_rts import pipeline
from arctic_rts.cli import EXIT_OK, EXIT_PARTIAL, main
from arctic_rts.cluster import connect
from arctic_rts.config import ClusterConfig
from arctic_rts.demo import DemoCatalog, generate_demo
from arctic_rts.errors import ConfigError

pytestmark = pytest.mark.slow

YEAR = 2021
#: The key of every model task starts with this (``predict._probability_graph``).
MODEL_TASK = "rts-predict-"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    # The catalog test_reliability.py maps, reused when they run in one session.
    return generate_demo(tmp_path_factory.getbasetemp() / "demo-catalog-180", size_px=180)


def _map(demo: DemoCatalog, weights: Path, out: Path, client: Any) -> int:
    bbox = [str(v) for v in demo.bbox]
    return main([
        "map", "--bbox", *bbox, "--year", str(YEAR), "--stac", str(demo.items_dir),
        "--weights", str(weights), "--out", str(out), "--scheduler", client.scheduler.address,
        "--quiet", "--tile-size", "128", "--retries", "2",
    ])  # fmt: skip


def _worker_pids(client: Any) -> set[int]:
    return set(client.run(os.getpid).values())


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with connect(ClusterConfig(n_workers=1, threads_per_worker=1, gpu="no")) as c:
        yield c


@pytest.fixture(scope="module")
def undisturbed(
    demo: DemoCatalog, weights: Path, client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("undisturbed") / "inventory.gpkg"
    assert _map(demo, weights, out, client) == EXIT_OK
    return out


def test_a_worker_killed_mid_predict_costs_a_recomputation_and_nothing_else(
    demo: DemoCatalog,
    weights: Path,
    client: Any,
    undisturbed: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = _worker_pids(client)
    faults = tmp_path / "faults"
    faults.mkdir()
    client.register_plugin(FaultOnTask(MODEL_TASK, faults, "kill"), name="kill-once")
    try:
        out = tmp_path / "inventory.gpkg"
        code = _map(demo, weights, out, client)
    finally:
        client.unregister_worker_plugin("kill-once")
    stdout = capsys.readouterr().out

    (killed_pid, key), *more = FaultOnTask.claimed(faults)
    assert not more and MODEL_TASK in key
    assert killed_pid in before  # the first worker, killed while its model task ran ...
    client.wait_for_workers(1, timeout=120)
    assert killed_pid not in _worker_pids(client)  # ... and replaced by its nanny
    assert code == EXIT_OK, stdout
    assert "(0 failed)" in stdout
    assert_same_inventory(out, undisturbed)


def test_a_worker_past_its_memory_limit_is_restarted_then_its_scene_fails_cleanly(
    demo: DemoCatalog,
    weights: Path,
    undisturbed: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # One scene at a time: a dying worker counts against every task it holds, so a second
    # scene in flight beside the one that eats the memory could share its fate.
    monkeypatch.setattr(pipeline, "scenes_in_flight", lambda config, client: 1)
    config = ClusterConfig(
        n_workers=1, threads_per_worker=1, gpu="no", memory_limit="2GiB", allowed_failures=1
    )
    faults = tmp_path / "faults"
    faults.mkdir()
    out = tmp_path / "inventory.gpkg"
    with connect(config) as client:
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) == 1
        limits = client.run(lambda dask_worker: dask_worker.memory_manager.memory_limit)
        assert list(limits.values()) == [2 * 2**30]
        # The first model task and its retry (allowed_failures = 1) each eat up to 3 GiB.
        hog = FaultOnTask(MODEL_TASK, faults, "memory", times=2, cap_bytes=3 * 2**30)
        client.register_plugin(hog, name="memory-hog")
        code = _map(demo, weights, out, client)
        restarts = client.get_events("worker-restart-memory")
    stdout = capsys.readouterr().out

    assert len(FaultOnTask.claimed(faults)) == 2
    assert len(restarts) == 2  # the nanny stopped the worker for its memory, twice
    assert code == EXIT_PARTIAL, stdout
    scenes = pyogrio.read_dataframe(out, layer="scenes", read_geometry=False)
    status = dict(zip(scenes["scene_id"], scenes["status"], strict=True))
    errors = dict(zip(scenes["scene_id"], scenes["error"], strict=True))
    (first,) = [i for i, st in status.items() if st == "failed"]
    (second,) = [i for i, st in status.items() if st == "done"]  # the run went on after it
    assert "KilledWorker" in errors[first] and "2 times" in errors[first]
    assert "passing its memory limit" in errors[first] and "of 2.00 GiB" in errors[first]
    rts = pyogrio.read_dataframe(out, layer=f"rts_{YEAR}")
    assert len(rts) > 0 and set(rts["scene_ids"]) == {second}
    # What the second scene found is what it found in the undisturbed run.
    clean = pyogrio.read_dataframe(undisturbed, layer="scenes", read_geometry=False)
    assert int(scenes.set_index("scene_id").loc[second, "n_polygons"]) == int(
        clean.set_index("scene_id").loc[second, "n_polygons"]
    )
    assert not out.with_name(out.name + ".map-work").exists()


def test_own_schedulers_get_the_same_allowed_failures_as_local_clusters() -> None:
    loaded = yaml.safe_load((ROOT / "deploy" / "dask" / "arctic-rts.yaml").read_text())
    allowed = loaded["distributed"]["scheduler"]["allowed-failures"]
    assert allowed == ClusterConfig().allowed_failures


@pytest.mark.parametrize("limit", ["4GiB", "1.5 GB", 0.5, 2**30, "auto"])
def test_memory_limits_dask_understands_are_accepted(limit: str | float) -> None:
    assert ClusterConfig(memory_limit=limit).memory_limit == limit


@pytest.mark.parametrize("limit", ["lots", "0B", 0, -1, True])
def test_memory_limits_that_mean_nothing_are_refused(limit: str | float) -> None:
    with pytest.raises(ConfigError, match="memory_limit"):
        ClusterConfig(memory_limit=limit)
    with pytest.raises(ConfigError, match="allowed_failures"):
        ClusterConfig(allowed_failures=-1)
