"""Resuming (RELIABILITY.md): ``map`` after a kill or a refused write, and
``inventory run --retry-failed``.

``map`` keeps each finished scene in ``<out>.map-work`` until its GeoPackage is written; the
same command run again computes only the scenes that did not finish. The kill test runs the
real CLI in a subprocess that pauses right after its first scene is saved (a wrapper around
``Manifest.save``) and SIGKILLs it there. Which scenes a rerun computes is read from a spy on
``pipeline.map_scenes``; results are compared with an undisturbed run, layer by layer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyogrio
import pytest
from faults import break_cog
from inventories import assert_same_inventory, write_run_file

from arctic_rts import pipeline
from arctic_rts.cli import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, main
from arctic_rts.cluster import connect
from arctic_rts.config import ClusterConfig
from arctic_rts.demo import DemoCatalog, generate_demo
from arctic_rts.manifest import NOT_RETRIED, Manifest, resume_scenes
from arctic_rts.pipeline import SceneRecord, map_work_dir

YEAR = 2021
#: Generous bound on one CLI run on a busy 2-core machine.
CLI_TIMEOUT = 300


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    # The catalog test_reliability.py maps, reused when they run in one session.
    return generate_demo(tmp_path_factory.getbasetemp() / "demo-catalog-180", size_px=180)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with connect(ClusterConfig(n_workers=1, threads_per_worker=1, gpu="no")) as c:
        yield c


def _map_argv(demo: DemoCatalog, stac: Path, weights: Path, out: Path, client: Any) -> list[str]:
    return [
        "map", "--bbox", *[str(v) for v in demo.bbox], "--year", str(YEAR), "--stac",
        str(stac), "--weights", str(weights), "--out", str(out), "--scheduler",
        client.scheduler.address, "--quiet", "--tile-size", "128", "--retries", "2",
    ]  # fmt: skip


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The item ids that ``map_scenes`` is asked to compute, in order (a spy, not a stand-in)."""
    seen: list[str] = []
    real = pipeline.map_scenes

    def spy(items: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        seen.extend(it["id"] for it in items)
        return real(items, *args, **kwargs)

    monkeypatch.setattr(pipeline, "map_scenes", spy)
    return seen


@pytest.fixture(scope="module")
def undisturbed(
    demo: DemoCatalog, weights: Path, client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("undisturbed") / "inventory.gpkg"
    assert main(_map_argv(demo, demo.items_dir, weights, out, client)) == EXIT_OK
    assert not map_work_dir(out).exists()  # removed once the GeoPackage is written
    return out


def _records(work: Path) -> dict[str, dict[str, Any]]:
    """The work folder's scene records by item id."""
    docs = [json.loads(p.read_text()) for p in sorted((work / "scenes").glob("*/*.json"))]
    return {d["item_id"]: d for d in docs}


def _seconds(out: Path) -> dict[str, float]:
    scenes = pyogrio.read_dataframe(out, layer="scenes", read_geometry=False)
    return dict(zip(scenes["scene_id"], scenes["seconds"], strict=True))


#: Runs the CLI with ``Manifest.save`` followed by a long pause, so a kill lands after the
#: first scene is recorded and before any other is.
_PAUSED_CLI = """
import sys, time
from arctic_rts import manifest
from arctic_rts.cli import main

save = manifest.Manifest.save

def save_then_pause(self, *args, **kwargs):
    save(self, *args, **kwargs)
    print("test pause after a saved scene", file=sys.stderr, flush=True)
    time.sleep(300)

manifest.Manifest.save = save_then_pause
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_map_killed_after_its_first_scene_resumes_and_writes_the_undisturbed_inventory(
    demo: DemoCatalog,
    weights: Path,
    client: Any,
    undisturbed: Path,
    computed: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out" / "inventory.gpkg"
    out.parent.mkdir()
    argv = _map_argv(demo, demo.items_dir, weights, out, client)
    stderr = tmp_path / "stderr"
    with stderr.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", _PAUSED_CLI, *argv], stderr=err)
    try:
        deadline = time.monotonic() + CLI_TIMEOUT
        while "test pause after a saved scene" not in stderr.read_text():
            assert proc.poll() is None, f"the map ended (exit {proc.returncode}) before a scene"
            assert time.monotonic() < deadline, "timed out waiting for a first finished scene"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()

    work = map_work_dir(out)
    finished = _records(work)
    assert len(finished) == 1 and next(iter(finished.values()))["status"] == "done"
    (done_id,) = finished
    assert not out.exists()  # nothing was written, and the work folder is not the output
    assert not list(work.rglob("*.gpkg"))

    code, stdout, _ = _cli(argv, capsys)  # the same command again

    assert code == EXIT_OK, stdout
    assert computed and done_id not in computed  # the finished scene was not computed again
    assert "resumed   : 1 scenes finished by an earlier, interrupted run" in stdout
    # Its row is the killed run's record, timing included.
    assert _seconds(out)[done_id] == pytest.approx(finished[done_id]["record"]["seconds"])
    assert_same_inventory(out, undisturbed)
    assert not work.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "inventory.gpkg",
        "inventory.quicklook.png",
    ]


@pytest.mark.slow
def test_a_refused_partial_write_keeps_the_finished_scenes_for_the_rerun(
    demo: DemoCatalog,
    catalog_copy: Path,
    weights: Path,
    client: Any,
    undisturbed: Path,
    computed: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out" / "inventory.gpkg"
    out.parent.mkdir()
    shutil.copy2(undisturbed, out)
    before = out.read_bytes()
    broken_id = sorted(_seconds(undisturbed))[0]
    item = json.loads((catalog_copy / "items" / f"{broken_id}.json").read_text())
    cog = (catalog_copy / "items" / item["assets"]["nir"]["href"]).resolve()
    good = cog.read_bytes()
    break_cog(cog, "random")
    argv = [*_map_argv(demo, catalog_copy / "items", weights, out, client), "--overwrite"]

    code, _, err = _cli(argv, capsys)

    assert code == EXIT_ERROR and err.count("\n") == 1
    assert "1 of 2 scenes failed" in err and "unchanged" in err
    assert f"kept in {map_work_dir(out)}" in err
    assert out.read_bytes() == before
    records = _records(map_work_dir(out))
    assert len(records) == 2 and records[broken_id]["status"] == "failed"
    assert [r["status"] for i, r in records.items() if i != broken_id] == ["done"]
    first_run = list(computed)
    computed.clear()

    cog.write_bytes(good)
    code, stdout, _ = _cli(argv, capsys)

    assert code == EXIT_OK, stdout
    assert sorted(first_run) == sorted(records) and computed == [broken_id]
    assert "resumed   : 1 scenes" in stdout
    assert_same_inventory(out, undisturbed)
    assert not map_work_dir(out).exists()


def _scene(item_id: str, status: str = "done") -> SceneRecord:
    import shapely

    return SceneRecord(
        item_id, "07WFS", "2021-07-13", 32607, 1.0, shapely.box(0, 0, 1, 1), status=status
    )


#: The footprint of the items of the manifest tests below (lon/lat).
FOOTPRINT = (-138.1, 69.0, -137.9, 69.1)


def _items(*ids: str) -> list[dict[str, Any]]:
    """STAC items of one scene footprint, one per id."""
    import shapely
    import shapely.geometry

    props = {"datetime": "2021-07-13T20:49:19Z", "s2:mgrs_tile": "07WFS"}
    footprint = shapely.geometry.mapping(shapely.box(*FOOTPRINT))
    return [{"id": i, "properties": props, "geometry": footprint} for i in ids]


def _polygons() -> Any:
    import geopandas as gpd
    import shapely

    return gpd.GeoDataFrame(
        {"scene_id": ["x"]}, geometry=[shapely.box(0, 0, 10, 10)], crs="EPSG:32607"
    )


class _Compute:
    """A stand-in for ``map_scenes`` in ``resume_scenes``: every scene it is asked for finishes
    with the same polygons; ``asked`` keeps each call's item ids."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []
        self.polygons = _polygons()

    def __call__(self, todo: list[dict[str, Any]], on_done: Any) -> list[SceneRecord]:
        self.asked.append([it["id"] for it in todo])
        recs = [_scene(it["id"]) for it in todo]
        for rec in recs:
            on_done(rec, self.polygons)
        return recs


def test_resume_scenes_with_retry_failed_computes_only_the_failed_scenes(tmp_path: Path) -> None:
    items = _items("done", "failed", "never")
    manifest = Manifest(tmp_path / "work", "hash")
    by_id = {it["id"]: it for it in items}
    manifest.save(YEAR, by_id, _scene("done"), _polygons(), run_id="first")
    failed = _scene("failed", "failed")
    failed.error = "LoadError: unreadable"
    manifest.save(YEAR, by_id, failed, None, run_id="first")
    compute = _Compute()
    asked = compute.asked

    results = resume_scenes(
        manifest, YEAR, items, run_id="retry", compute=compute, retry_failed=True
    )

    assert asked == [["failed"]]
    assert (results.n_computed, results.n_reused, results.retried) == (1, 1, ["failed"])
    assert [r.status for r in results.records] == ["done", "done", "failed"]
    assert results.failed == [("never", NOT_RETRIED)]
    assert results.run_ids == ["first", "retry", "retry"]
    assert len(results.frames) == 2

    # Without the flag, the scene no run tried is computed; finished ones never are.
    results = resume_scenes(manifest, YEAR, items, run_id="next", compute=compute)
    assert asked[-1] == ["never"] and not results.failed and results.retried == []


def test_retry_failed_recomputes_tried_scenes_whose_records_cannot_be_reused(
    tmp_path: Path,
) -> None:
    """After an upgrade (records of manifest version 1) or when the regions grew (a record of
    a smaller part of the scene), --retry-failed computes the scenes an earlier run tried
    instead of counting them as never tried; a scene no run tried is still left out."""
    import json

    import shapely

    from arctic_rts.manifest import MANIFEST_VERSION

    items = _items("old-done", "old-failed", "smaller", "never")
    by_id = {it["id"]: it for it in items}
    polygons = _polygons()
    work = tmp_path / "work"
    west = shapely.box(-138.1, 69.0, -138.0, 69.1)
    Manifest(work, "hash", area=west).save(YEAR, by_id, _scene("smaller"), polygons, run_id="1")
    old = Manifest(work, "hash")
    old.save(YEAR, by_id, _scene("old-done"), polygons, run_id="1")
    old.save(YEAR, by_id, _scene("old-failed", "failed"), None, run_id="1")
    for name in ("old-done", "old-failed"):  # as the previous layout wrote them
        path = work / "scenes" / str(YEAR) / f"{name}.json"
        doc = json.loads(path.read_text())
        doc["manifest_version"] = MANIFEST_VERSION - 1
        path.write_text(json.dumps(doc))
    compute = _Compute()

    whole = Manifest(work, "hash", area=shapely.box(*FOOTPRINT))
    results = resume_scenes(whole, YEAR, items, run_id="2", compute=compute, retry_failed=True)

    assert compute.asked == [["old-done", "old-failed", "smaller"]]
    assert results.failed == [("never", NOT_RETRIED)]


@pytest.mark.slow
def test_inventory_run_retry_failed_recomputes_only_the_failed_scene(
    demo: DemoCatalog,
    catalog_copy: Path,
    weights: Path,
    client: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = dict(weights=weights, regions=[("demo", list(demo.bbox))], years=(YEAR,))
    run_file = write_run_file(tmp_path / "run" / "run.toml", stac=catalog_copy / "items", **common)
    scheduler = ["--scheduler", client.scheduler.address]
    clean = write_run_file(tmp_path / "clean" / "run.toml", stac=demo.items_dir, **common)
    assert main(["inventory", "run", str(clean), "--quiet", *scheduler]) == EXIT_OK
    ids = sorted(_seconds(clean.parent / "out" / "inv.gpkg"))
    item = json.loads((catalog_copy / "items" / f"{ids[1]}.json").read_text())
    cog = (catalog_copy / "items" / item["assets"]["nir"]["href"]).resolve()
    good = cog.read_bytes()
    break_cog(cog, "truncated")
    capsys.readouterr()

    code, stdout, _ = _cli(["inventory", "run", str(run_file), "--quiet", *scheduler], capsys)
    assert code == EXIT_PARTIAL and f"FAILED {ids[1]}:" in stdout

    cog.write_bytes(good)
    argv = ["inventory", "run", str(run_file), "--quiet", "--retry-failed", *scheduler]
    code, stdout, _ = _cli(argv, capsys)

    assert code == EXIT_OK, stdout
    assert "retried   : 1 scenes that failed before (1 now done, 0 failed again)" in stdout
    assert f"{YEAR}      : 2 scenes (1 computed, 1 from manifest, 0 failed)" in stdout
    log = (run_file.parent / "out" / "inv.gpkg.work" / "log.jsonl").read_text().splitlines()
    first, retry = [json.loads(line) for line in log[:2]], [json.loads(line) for line in log[2:]]
    assert sorted((e["item_id"], e["status"]) for e in first) == [
        (ids[0], "done"),
        (ids[1], "failed"),
    ]
    assert [(e["item_id"], e["status"]) for e in retry] == [(ids[1], "done")]  # that one only
    assert_same_inventory(run_file.parent / "out" / "inv.gpkg", clean.parent / "out" / "inv.gpkg")
