"""Yearly inventory runs: ``run_inventory`` / ``arctic-rts inventory run FILE.toml``.

On a generated two-year demo catalog (two MGRS tiles, one scene per tile and year selected),
served by the embedded STAC API, with a real Dask cluster and a real weights file: the hand-set
NDVI-rule UNet of ``test_pipeline`` (bare wet soil -> slump), so detections are known without a
trained model. The kill tests run the real CLI in a subprocess and SIGKILL it: part-way through
the scenes, and inside the GeoPackage write (held there by a wrapper script that turns the
``inventory._before_replace`` seam into a pause before it calls the CLI). Inventories are
compared layer by layer, run ids and timings aside.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psutil
import pyogrio
import pytest
import shapely
from inventories import assert_same_inventory, layers, write_run_file

from arctic_rts.changes import CHANGE_CLASSES
from arctic_rts.cli import EXIT_ERROR, EXIT_PARTIAL, main
from arctic_rts.cluster import connect
from arctic_rts.config import (
    ClusterConfig,
    InventoryConfig,
    InventoryRunConfig,
    RegionConfig,
)
from arctic_rts.demo import DemoCatalog, generate_demo
from arctic_rts.errors import ConfigError, InventoryError, InventoryLockedError
from arctic_rts.inventory import lock_inventory, write_inventory
from arctic_rts.inventory_run import InventoryRunResult, run_inventory
from arctic_rts.manifest import Manifest
from arctic_rts.merge import merge_polygons
from arctic_rts.pipeline import SceneRecord
from arctic_rts.runfile import read_inventory_run

YEARS = (2021, 2022)
SIZE_PX = 120
ROOT = Path(__file__).resolve().parents[1]
#: Generous bound on one CLI run on a busy 2-core machine (it takes ~30-60 s there).
CLI_TIMEOUT = 480


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo(tmp_path_factory.mktemp("demo") / "catalog", years=YEARS, size_px=SIZE_PX)


def _regions(demo: DemoCatalog) -> list[tuple[str, list[float]]]:
    """The demo box cut in two halves: two regions whose scenes overlap (deduplicated)."""
    w, s, e, n = demo.bbox
    mid = (w + e) / 2
    return [("west", [w, s, mid, n]), ("east", [mid, s, e, n])]


def _demo_run_file(
    path: Path, demo: DemoCatalog, weights: Path, years: tuple[int, ...] = YEARS
) -> Path:
    """A run file of the demo catalog's two halves (:func:`_regions`) and ``weights``."""
    return write_run_file(
        path, stac=demo.items_dir, weights=weights, regions=_regions(demo), years=years
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (the lock file's empty bytes included)."""
    return {
        str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _records(work: Path) -> dict[str, bytes]:
    """The manifest's scene records (JSON bytes) by file name."""
    return {p.name: p.read_bytes() for p in sorted((work / "scenes").glob("*/*.json"))}


def _log(work: Path) -> list[dict[str, Any]]:
    path = work / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


#: Runs the CLI with ``inventory._before_replace`` turned into a pause of argv[1] seconds, so a
#: kill lands inside the GeoPackage write, after the new file is complete.
_PAUSED_CLI = """
import sys, time
import arctic_rts.inventory
from arctic_rts.cli import main

def pause(tmp, path):
    print(f"test pause in write of {path}", file=sys.stderr, flush=True)
    time.sleep(float(sys.argv[1]))

arctic_rts.inventory._before_replace = pause
sys.exit(main(sys.argv[2:]))
"""


def _start_cli(run_file: Path, logs: Path, pause_s: float | None = None) -> subprocess.Popen:
    """Start the CLI with stdout/stderr to files (pipes could fill and block it).

    With ``pause_s``, every inventory write holds that long before its rename.
    """
    logs.mkdir(parents=True, exist_ok=True)
    args = ["inventory", "run", str(run_file), "--quiet"]
    start = ["-m", "arctic_rts.cli"] if pause_s is None else ["-c", _PAUSED_CLI, str(pause_s)]
    return subprocess.Popen(
        [sys.executable, *start, *args],
        stdout=(logs / "stdout").open("w"),
        stderr=(logs / "stderr").open("w"),
        cwd=run_file.parent,
    )


def _wait_for(cond: Any, proc: subprocess.Popen, what: str, timeout: float = CLI_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _sigkill(proc: subprocess.Popen) -> None:
    """SIGKILL the CLI, then check that its workers and STAC server die with it."""
    children = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    _, alive = psutil.wait_procs(children, timeout=60)
    for p in alive:  # ours: started by the CLI this test started
        p.kill()
    assert not alive, f"processes outlived the killed run: {[p.pid for p in alive]}"


def _finish_cli(run_file: Path, logs: Path) -> str:
    """Run the CLI to the end; returns its stdout."""
    proc = _start_cli(run_file, logs)
    try:
        code = proc.wait(timeout=CLI_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    stdout = (logs / "stdout").read_text()
    assert code == 0, f"exit {code}\n{stdout}\n{(logs / 'stderr').read_text()[-3000:]}"
    return stdout


# ---------------------------------------------------------------------------------------------
# The run file


def test_run_file_paths_regions_and_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not the run file's folder: its paths are relative to that
    path = tmp_path / "runs" / "yearly.toml"
    path.parent.mkdir()
    path.write_text(
        "\n".join(
            [
                'out = "inv/rts.gpkg"',
                "years = [2019, 2021]",
                'stac = "catalog/items"',
                'weights = ["a.safetensors", "b.safetensors"]',
                'exports = ["summary_csv"]',
                "[[regions]]",
                'name = "herschel"',
                "bbox = [-139.4, 69.45, -138.6, 69.65]",
                "[vectorize]",
                "min_area_m2 = 500",
                "[inventory]",
                "change_ring_px = 0.5",
                "[load]",
                'asset_roots = ["cogs", "/srv/s2"]',
            ]
        )
    )
    cfg = read_inventory_run(path)
    base = path.parent
    assert cfg.out == str(base / "inv/rts.gpkg")
    assert cfg.stac == str(base / "catalog/items")
    assert cfg.weights == (str(base / "a.safetensors"), str(base / "b.safetensors"))
    assert cfg.years == (2019, 2021)
    assert [(r.name, r.bbox) for r in cfg.regions] == [("herschel", (-139.4, 69.45, -138.6, 69.65))]
    assert cfg.map.vectorize.min_area_m2 == 500
    assert cfg.map.inventory.change_ring_px == 0.5
    assert cfg.map.load.asset_roots == (str(base / "cogs"), "/srv/s2")
    assert cfg.map.search.months == (6, 7, 8)  # defaults where the file says nothing
    assert cfg.exports == ("summary_csv",)

    path.write_text('out = "x.gpkg"\nyears = [2021]\nregions = "areas.gpkg"\nstac = "demo"\n')
    cfg = read_inventory_run(path)
    assert cfg.regions_file == str(base / "areas.gpkg") and cfg.regions == ()
    assert cfg.stac == "demo" and cfg.weights == ()


def test_example_run_file_parses() -> None:
    cfg = read_inventory_run(ROOT / "deploy" / "inventory.example.toml")
    assert cfg.years == (2021, 2022)
    assert [r.name for r in cfg.regions] == ["herschel", "peel_plateau"]
    assert cfg.stac == "https://earth-search.aws.element84.com/v1"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('years = [2021]\nregions = "r.gpkg"', "no 'out'"),
        ('out = "x.gpkg"\nyears = [2022, 2021]\nregions = "r.gpkg"', "strictly increasing"),
        ('out = "x.gpkg"\nyears = [2021]', "regions"),
        ('out = "x.gpkg"\nyears = [2021]\nregions = "r.gpkg"\nexports = ["shp"]', "unknown export"),
        ('out = "x.gpkg"\nyears = [2021]\nregions = "r.gpkg"\ncolour = 1', "unknown key(s) colour"),
        ('out = "x.gpkg"\nyears = [2021]\nregions = "r.gpkg"\n[search]\nmonths = [13]', "months"),
        (
            'out = "x.gpkg"\nyears = [2021]\n[[regions]]\nname = "a"\nbbox = [1, 2, 0, 3]',
            "west < east",
        ),
        (
            'out = "x.gpkg"\nyears = [2021]\n'
            '[[regions]]\nname = "a"\nbbox = [0, 0, 1, 1]\n'
            '[[regions]]\nname = "a"\nbbox = [1, 0, 2, 1]',
            "unique",
        ),
        ("out = ", "cannot read run file"),
    ],
)
def test_bad_run_files_are_refused(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as err:
        read_inventory_run(path)
    assert needle in str(err.value)


def test_cli_bad_run_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["inventory", "run", str(tmp_path / "missing.toml")])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert err.startswith("arctic-rts: error: cannot read run file") and err.count("\n") == 1


def test_future_year_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="year"):
        cfg = InventoryRunConfig(
            out=str(tmp_path / "x.gpkg"), years=(2099,), regions_file=str(tmp_path / "r.gpkg")
        )
        run_inventory(cfg, progress=False)
    assert not (tmp_path / "x.gpkg.work").exists()


def test_a_second_run_on_the_same_inventory_is_refused_while_one_holds_it(
    tmp_path: Path, weights: Path
) -> None:
    out = tmp_path / "out" / "inv.gpkg"
    out.parent.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(out) + '.lock'!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, b'a running inventory')\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        cfg = InventoryRunConfig(
            out=str(out),
            years=(2021,),
            regions=(RegionConfig("a", (-138.1, 69.0, -137.9, 69.1)),),
            stac=str(tmp_path / "no-catalog"),
            weights=(str(weights),),
        )
        with pytest.raises(InventoryLockedError, match="a running inventory"):
            run_inventory(cfg, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert not out.with_name("inv.gpkg.work").exists()  # refused before any work


# ---------------------------------------------------------------------------------------------
# The manifest


def _scene(item_id: str) -> SceneRecord:
    return SceneRecord(
        item_id=item_id,
        mgrs_tile="07WFS",
        datetime="2021-07-13T20:49:19Z",
        epsg=32607,
        cloud_cover=4.5,
        footprint=shapely.box(-138.1, 69.0, -137.9, 69.1),
        status="done",
        n_polygons=1,
        seconds=1.5,
    )


def test_manifest_reuses_only_complete_records_of_the_same_scene_model_and_parameters(
    tmp_path: Path,
) -> None:
    gdf = gpd.GeoDataFrame(
        {"scene_id": ["a"], "mean_prob": [0.9], "touches_invalid": [False]},
        geometry=[shapely.box(500000, 7650000, 500100, 7650100)],
        crs="EPSG:32607",
    )
    props = {"datetime": "2021-07-13T20:49:19Z", "s2:processing_baseline": "05.00"}
    odd = {"id": "S2A/odd id.SAFE", "properties": props}
    plain = {"id": "S2A/odd id", "properties": props}  # differs only by the dotted suffix
    bad = {"id": "S2B_failed", "properties": props}
    items = {it["id"]: it for it in (odd, plain, bad)}
    work = tmp_path / "work"
    (work / "scenes" / "2021").mkdir(parents=True)
    (work / "scenes" / "2021" / ".S2C.json.tmp-999").write_text("{")  # a killed run's
    manifest = Manifest(work, "hash-a")
    assert not list((work / "scenes" / "2021").iterdir())
    manifest.save(2021, items, _scene(odd["id"]), gdf, run_id="run1")
    manifest.save(2021, items, _scene(plain["id"]), gdf.iloc[:0], run_id="run1")
    failed = _scene(bad["id"])
    failed.status, failed.error = "failed", "LoadError: unreadable"
    manifest.save(2021, items, failed, None, run_id="run1")

    rec = manifest.lookup(2021, odd)
    assert rec is not None and rec["run_id"] == "run1" and rec["record"]["n_polygons"] == 1
    back = manifest.polygons(2021, odd["id"])
    assert back.crs == gdf.crs and back.geometry.iloc[0].equals(gdf.geometry.iloc[0])
    assert manifest.lookup(2021, plain) is not None and not len(
        manifest.polygons(2021, "S2A/odd id")
    )
    assert manifest.lookup(2021, bad) is None  # failed scenes are retried
    assert manifest.lookup(2022, odd) is None  # another year
    assert Manifest(work, "hash-b").lookup(2021, odd) is None  # another model or parameters
    reprocessed = {**odd, "properties": {**props, "s2:processing_baseline": "05.10"}}
    assert manifest.lookup(2021, reprocessed) is None
    moved = {**odd, "assets": {"B04": {"href": "/elsewhere/B04.tif"}}}
    assert manifest.lookup(2021, moved) is not None  # hrefs (signed, moved) do not count
    # No temporary file is left, and the odd ids got safe, distinct file names.
    names = sorted(p.name for p in (work / "scenes" / "2021").iterdir())
    assert not [n for n in names if n.startswith(".")]
    assert len([n for n in names if n.startswith("S2A_odd_id") and n.endswith(".json")]) == 2
    assert [e["status"] for e in _log(work)] == ["done", "done", "failed"]

    # Polygons that changed on disk are not trusted: the scene is computed again.
    parquet = next((work / "scenes" / "2021").glob("S2A_odd_id.SAFE*.parquet"))
    parquet.write_bytes(parquet.read_bytes()[:-10])
    assert manifest.lookup(2021, odd) is None
    assert manifest.lookup(2021, plain) is not None


# ---------------------------------------------------------------------------------------------
# The change step on the generator's truth


def test_change_layer_classifies_the_generated_slumps_that_grew_appeared_and_vanished(
    demo: DemoCatalog, tmp_path: Path
) -> None:
    """The runner's change step (``write_inventory`` of consecutive years) on the truth itself.

    The generator's slumps either grow fast (x1.15-1.6 a year) or barely (x1.00-1.04) and marks
    them ``grown``/``stable``; with the ring threshold off (``change_ring_px = 0``) the layer's
    10 % rule must reproduce exactly that split, ``new`` for slumps that appeared and
    ``not_detected`` for those that vanished (no truth row in the later year).
    """
    truth = gpd.read_file(demo.truth_path)
    y1, y2 = YEARS
    config = InventoryConfig(change_ring_px=0.0)
    out = tmp_path / "truth.gpkg"
    for year in YEARS:
        rows = truth[truth["year"] == year].assign(touches_invalid=False, scene_id="truth")
        merged = merge_polygons([rows], crs=config.crs, min_overlap=config.min_overlap)
        assert len(merged) == len(rows)  # truth slumps never overlap
        write_inventory(out, merged, year=year, run={"run_id": "truth"}, scenes=[], config=config)
    changes = gpd.read_file(out, layer=f"changes_{y1}_{y2}")
    truth = truth.to_crs(changes.crs)
    before = truth[truth["year"] == y1].set_index("slump_id")
    after = truth[truth["year"] == y2].set_index("slump_id")
    expected = {i: "not_detected" for i in before.index.difference(after.index)}
    expected |= {i: "new" for i in after.index.difference(before.index)}
    expected |= {i: str(after.loc[i, "change"]) for i in after.index.intersection(before.index)}
    got = {}
    for row in changes.itertuples():
        side = before if row.change == "not_detected" else after
        overlap = side.geometry.intersection(row.geometry).area
        got[int(overlap.idxmax())] = row.change
    assert got == expected
    assert {"new", "grown", "not_detected"} <= set(got.values())


# ---------------------------------------------------------------------------------------------
# Runs on a real cluster


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with connect(ClusterConfig(n_workers=1, threads_per_worker=1, gpu="no")) as c:
        yield c


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, demo: DemoCatalog, weights: Path, client: Any
) -> InventoryRunResult:
    """One uninterrupted two-year run: the inventory the other runs must reproduce."""
    run_file = _demo_run_file(tmp_path_factory.mktemp("reference") / "run.toml", demo, weights)
    return run_inventory(run_file, progress=False, client=client)


def _selected(reference: InventoryRunResult, year: int) -> list[str]:
    return sorted(
        json.loads(p.read_text())["item_id"]
        for p in (reference.work_dir / "scenes" / str(year)).glob("*.json")
    )


@pytest.mark.slow
def test_a_run_writes_each_year_its_changes_and_the_exports(
    reference: InventoryRunResult, demo: DemoCatalog
) -> None:
    out = reference.out
    assert layers(out) == {
        "rts_2021", "rts_2022", "changes_2021_2022", "scenes", "runs", "layer_styles"
    }  # fmt: skip
    for summary in reference.years:
        # Both regions see both tiles: the union is one scene per tile, not four.
        assert (summary.n_scenes, summary.n_computed, summary.n_from_manifest) == (2, 2, 0)
        assert summary.written and not summary.failed
        rts = gpd.read_file(out, layer=f"rts_{summary.year}")
        assert len(rts) == summary.n_polygons > 0
        assert set(rts["year"]) == {summary.year}
    assert reference.years[0].changes is None
    changes = gpd.read_file(out, layer="changes_2021_2022")
    assert reference.years[1].changes == {
        c: int((changes["change"] == c).sum()) for c in CHANGE_CLASSES
    }
    assert sum(reference.years[1].changes.values()) == len(changes) > 0

    # Slumps are kept whole when their representative point is inside a region.
    w, s, e, n = demo.bbox
    area = gpd.GeoSeries([shapely.box(w, s, e, n)], crs="EPSG:4326").to_crs(changes.crs)
    for year in YEARS:
        rts = gpd.read_file(out, layer=f"rts_{year}")
        assert area.iloc[0].buffer(1.0).contains(rts.representative_point()).all()

    # Each scene was computed once and recorded once, with the run that computed it.
    log = _log(reference.work_dir)
    assert len(log) == 4 and {e["run_id"] for e in log} == {reference.run_id}
    scenes = gpd.read_file(out, layer="scenes")
    assert sorted(scenes["scene_id"]) == sorted(e["item_id"] for e in log)
    assert set(scenes["status"]) == {"done"} and set(scenes["run_id"]) == {reference.run_id}
    runs = pyogrio.read_dataframe(out, layer="runs")
    assert list(runs["layer"]) == ["rts_2021", "rts_2022"]
    info = json.loads(runs["info"].iloc[-1])
    assert info["items_used"] == ",".join(_selected(reference, 2022))

    parquet = gpd.read_parquet(out.with_suffix(".parquet"))
    assert len(parquet) == sum(y.n_polygons for y in reference.years)
    csv = pd.read_csv(out.with_name("inv_summary.csv"))
    assert sorted(set(csv["region"])) == ["east", "west"]
    assert csv.groupby("year")["n_slumps"].sum().to_dict() == {
        y.year: y.n_polygons for y in reference.years
    }
    assert reference.exports == [out.with_suffix(".parquet"), out.with_name("inv_summary.csv")]
    png = out.with_name("inv.quicklook.png").read_bytes()  # the run's picture, beside it
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


@pytest.mark.slow
def test_a_rerun_with_nothing_new_changes_nothing(
    reference: InventoryRunResult, client: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(reference.out.parent.parent, folder)
    before = _tree_hashes(folder / "out")
    mtimes = {p: p.stat().st_mtime_ns for p in (folder / "out").iterdir() if p.is_file()}

    again = run_inventory(folder / "run.toml", progress=False, client=client)

    assert [(y.n_computed, y.n_from_manifest, y.written) for y in again.years] == [
        (0, 2, False),
        (0, 2, False),
    ]
    assert _tree_hashes(folder / "out") == before
    lock = folder / "out" / "inv.gpkg.lock"
    assert {p: p.stat().st_mtime_ns for p in mtimes if p != lock} == {
        p: t for p, t in mtimes.items() if p != lock
    }
    assert again.years[1].changes == reference.years[1].changes


@pytest.mark.slow
def test_a_failed_scene_is_reported_recorded_and_retried(
    reference: InventoryRunResult,
    demo: DemoCatalog,
    catalog_copy: Path,
    weights: Path,
    client: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = next(i for i in _selected(reference, 2021) if "8WLB" in i)
    item = json.loads((catalog_copy / "items" / f"{broken}.json").read_text())
    cog = (catalog_copy / "items" / item["assets"]["nir"]["href"]).resolve()
    good = cog.read_bytes()
    cog.write_bytes(b"not a GeoTIFF")
    # Start from the reference's manifest without the broken scene's record, so only that
    # scene is computed (and fails).
    shutil.copytree(reference.work_dir, tmp_path / "out" / "inv.gpkg.work")
    for stale in (tmp_path / "out" / "inv.gpkg.work" / "scenes" / "2021").glob(f"{broken}.*"):
        stale.unlink()
    run_file = write_run_file(
        tmp_path / "run.toml",
        stac=catalog_copy / "items",
        weights=weights,
        regions=_regions(demo),
        years=YEARS,
    )

    code = main(["inventory", "run", str(run_file), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == EXIT_PARTIAL
    assert f"FAILED {broken}:" in stdout
    assert "2021      : 2 scenes (1 computed, 1 from manifest, 1 failed)" in stdout
    out = tmp_path / "out" / "inv.gpkg"
    scenes = gpd.read_file(out, layer="scenes").set_index("scene_id")
    assert scenes.loc[broken, "status"] == "failed" and scenes.loc[broken, "error"]
    assert not gpd.read_file(out, layer="rts_2021")["scene_ids"].str.contains(broken).any()
    assert layers(out) == layers(reference.out)

    cog.write_bytes(good)
    retried = run_inventory(run_file, progress=False, client=client)
    assert [(y.n_computed, y.written, y.failed) for y in retried.years] == [
        (1, True, []),
        (0, False, []),
    ]
    assert_same_inventory(out, reference.out)


@pytest.mark.slow
def test_sigkill_part_way_then_rerun_gives_the_uninterrupted_inventory(
    reference: InventoryRunResult, demo: DemoCatalog, weights: Path, tmp_path: Path
) -> None:
    run_file = _demo_run_file(tmp_path / "run.toml", demo, weights)
    out = tmp_path / "out" / "inv.gpkg"
    work = out.with_name("inv.gpkg.work")
    proc = _start_cli(run_file, tmp_path / "killed")
    _wait_for(lambda: bool(_records(work)), proc, "a first finished scene")
    _sigkill(proc)

    finished = _records(work)
    assert 1 <= len(finished) < 4, "the kill came too late to test a resume"
    assert not out.exists() or "rts_2022" not in layers(out)
    with lock_inventory(out):  # the kernel freed the dead run's lock
        pass

    stdout = _finish_cli(run_file, tmp_path / "rerun")

    assert_same_inventory(out, reference.out)
    # Nothing finished before the kill was computed again: its records are untouched, and the
    # rerun computed (and logged) only the other scenes.
    after = _records(work)
    assert {k: after[k] for k in finished} == finished
    killed_run = {json.loads(v)["run_id"] for v in finished.values()}
    rerun = [e for e in _log(work) if e["run_id"] not in killed_run]
    assert len(rerun) == 4 - len(finished)
    assert sorted(e["item_id"] for e in rerun) == sorted(
        json.loads(v)["item_id"] for k, v in after.items() if k not in finished
    )
    computed = [
        int(line.split("(")[1].split()[0]) for line in stdout.splitlines() if " scenes (" in line
    ]
    assert sum(computed) == 4 - len(finished)
    assert Counter(e["item_id"] for e in _log(work) if e["run_id"] in killed_run) == Counter(
        json.loads(v)["item_id"] for v in finished.values()
    )


@pytest.mark.slow
def test_sigkill_inside_the_write_leaves_the_previous_file_and_a_free_lock(
    reference: InventoryRunResult, demo: DemoCatalog, weights: Path, client: Any, tmp_path: Path
) -> None:
    # A previous inventory holding 2021, and every scene already in the manifest.
    shutil.copytree(reference.work_dir, tmp_path / "out" / "inv.gpkg.work")
    first = _demo_run_file(tmp_path / "first.toml", demo, weights, years=(2021,))
    run_inventory(first, progress=False, client=client)
    out = tmp_path / "out" / "inv.gpkg"
    previous = out.read_bytes()
    both = _demo_run_file(tmp_path / "run.toml", demo, weights)

    logs = tmp_path / "paused"
    proc = _start_cli(both, logs, pause_s=120)
    _wait_for(
        lambda: "test pause in write" in (logs / "stderr").read_text(), proc, "the write's pause"
    )
    _sigkill(proc)

    assert out.read_bytes() == previous
    assert [p.name for p in out.parent.glob(".inv.gpkg.tmp-*")], "the kill missed the write"
    with lock_inventory(out):  # free, and taking it clears the dead writer's temporary file
        assert not list(out.parent.glob(".inv.gpkg.tmp-*"))

    stdout = _finish_cli(both, tmp_path / "rerun")
    assert "rts_2021 unchanged" in stdout and "rts_2022 written" in stdout
    assert_same_inventory(out, reference.out)


@pytest.mark.slow
def test_regions_from_a_vector_file_clip_the_inventory(
    reference: InventoryRunResult, demo: DemoCatalog, weights: Path, client: Any, tmp_path: Path
) -> None:
    (_, west_bbox), _ = _regions(demo)
    west = gpd.GeoDataFrame(
        {"area": ["west side"]},
        geometry=[shapely.segmentize(shapely.box(*west_bbox), 0.001)],
        crs="EPSG:4326",
    ).to_crs("EPSG:3413")  # any CRS: the runner reprojects
    west.to_file(tmp_path / "regions.gpkg")
    shutil.copytree(reference.work_dir, tmp_path / "out" / "inv.gpkg.work")
    common = dict(stac=demo.items_dir, weights=weights, regions=[], years=(2021,))
    extra = 'regions = "regions.gpkg"\nname_column = "area"'
    run_file = write_run_file(tmp_path / "run.toml", **common, extra=extra)

    clipped = run_inventory(run_file, progress=False, client=client)
    assert (clipped.years[0].n_computed, clipped.years[0].written) == (0, True)
    out = clipped.out
    rts = gpd.read_file(out, layer="rts_2021")
    full = gpd.read_file(reference.out, layer="rts_2021")
    assert 0 < len(rts) < len(full)
    assert set(rts["rts_id"]) <= set(full["rts_id"])  # kept whole, not cut
    inside = west.to_crs(rts.crs).geometry.iloc[0].contains(rts.representative_point())
    assert inside.all()
    csv = pd.read_csv(out.with_name("inv_summary.csv"))
    assert list(csv["region"]) == ["west side"] and list(csv["n_slumps"]) == [len(rts)]

    whole = run_inventory(
        write_run_file(tmp_path / "run.toml", **common, extra=extra + "\nclip_to_regions = false"),
        progress=False,
        client=client,
    )
    assert (whole.years[0].n_computed, whole.years[0].written) == (0, True)
    assert whole.years[0].n_polygons >= len(full) > len(rts)


def test_scenes_mapped_for_smaller_regions_are_mapped_again_when_the_regions_grow(
    reference: InventoryRunResult, demo: DemoCatalog, weights: Path, client: Any, tmp_path: Path
) -> None:
    """A scene cropped to the regions of an earlier run is not reused for larger regions: the
    slumps in the added part would be missing. The grown run writes what a fresh run over the
    larger regions writes."""
    west, east = _regions(demo)
    common = dict(stac=demo.items_dir, weights=weights, years=(2021,))
    small = run_inventory(
        write_run_file(tmp_path / "run.toml", **common, regions=[west]),
        progress=False,
        client=client,
    )
    assert small.years[0].n_computed > 0
    grown = run_inventory(
        write_run_file(tmp_path / "run.toml", **common, regions=[west, east]),
        progress=False,
        client=client,
    )
    assert grown.years[0].n_computed == len(_selected(reference, 2021))  # every scene again
    rts = gpd.read_file(grown.out, layer="rts_2021")
    full = gpd.read_file(reference.out, layer="rts_2021")
    assert sorted(rts["rts_id"]) == sorted(full["rts_id"])
    # shrinking them again reuses every record: each covers the smaller regions
    again = run_inventory(
        write_run_file(tmp_path / "run.toml", **common, regions=[east]),
        progress=False,
        client=client,
    )
    assert again.years[0].n_computed == 0


@pytest.mark.slow
def test_year_written_by_another_command_is_not_replaced_silently(
    reference: InventoryRunResult, client: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "inv.gpkg"
    out.parent.mkdir()
    merged = merge_polygons([])
    write_inventory(out, merged, year=2021, run={"run_id": "by-map"}, scenes=[])
    before = out.read_bytes()
    shutil.copytree(reference.work_dir, out.with_name("inv.gpkg.work"))
    run_file = reference.out.parent.parent / "run.toml"
    cfg = read_inventory_run(run_file)
    cfg = dataclasses.replace(cfg, out=str(out))
    with pytest.raises(InventoryError, match="overwrite = true"):
        run_inventory(cfg, progress=False, client=client)
    assert out.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# The two-year demo with the bundled model


@pytest.mark.slow
def test_two_year_demo_with_the_bundled_model_tells_grown_new_and_vanished_slumps(
    tmp_path: Path,
) -> None:
    from arctic_rts.metrics import match_objects
    from arctic_rts.model.weights import bundled_weights

    if not bundled_weights().exists():
        pytest.skip("the bundled demo model (arctic_rts/data/demo_unet.safetensors) is not built")
    size = 360
    catalog = generate_demo(tmp_path / "catalog", years=YEARS, size_px=size)
    run_file = write_run_file(
        tmp_path / "run.toml",
        stac=catalog.items_dir,
        weights=bundled_weights(),
        regions=[("demo", list(catalog.bbox))],
        years=YEARS,
        # Whole scenes (the truth covers them), and a half-pixel ring: the demo's slumps are
        # small, and the default one-pixel ring (meant for noisy real imagery) would call
        # their 15-60 % growth stable.
        extra="clip_to_regions = false\n[inventory]\nchange_ring_px = 0.5",
    )
    result = run_inventory(run_file, progress=False)
    changes = gpd.read_file(result.out, layer="changes_2021_2022")
    truth = gpd.read_file(catalog.truth_path).to_crs(changes.crs)
    y1, y2 = YEARS
    before = truth[truth["year"] == y1].set_index("slump_id")
    after = truth[truth["year"] == y2].set_index("slump_id")
    detected = {}
    for year, frame in ((y1, before), (y2, after)):
        rts = gpd.read_file(result.out, layer=f"rts_{year}").to_crs(truth.crs)
        scores = match_objects(rts.geometry, frame.geometry.reset_index(drop=True))
        assert scores.recall >= 0.5, f"{year}: the model finds too few slumps to judge changes"
        detected[year] = {
            sid
            for sid, geom in frame.geometry.items()
            if (rts.geometry.intersection(geom).area >= 0.5 * geom.area).any()
        }
    cases = {
        "not_detected": [i for i in before.index.difference(after.index) if i in detected[y1]],
        "new": [i for i in after.index.difference(before.index) if i in detected[y2]],
        "grown": [
            i
            for i in after.index[after["change"] == "grown"]
            if i in detected[y1] and i in detected[y2]
        ],
    }
    assert sum(map(len, cases.values())) >= 2, f"too few detected changes to judge: {cases}"
    for cls, ids in cases.items():
        side = before if cls == "not_detected" else after
        right = [
            i for i in ids if (changes[changes["change"] == cls].intersects(side.geometry[i])).any()
        ]
        assert len(right) >= np.ceil(0.75 * len(ids)), f"{cls}: {len(right)} of {len(ids)}"


def test_a_record_whose_log_line_a_kill_cut_off_is_logged_by_the_next_run(tmp_path: Path) -> None:
    """The kill window between a record's rename and its log line: the next run repairs the log,
    once, and ends a torn last line first."""
    from shapely.geometry import box

    from arctic_rts.pipeline import SceneRecord

    item = {"id": "S2A_X", "properties": {"datetime": "2021-07-01T00:00:00Z"}, "assets": {}}
    rec = SceneRecord("S2A_X", "7WFS", "2021-07-01", 32607, 1.0, box(0, 0, 1, 1), status="done")
    manifest = Manifest(tmp_path, "hash")
    manifest.save(2021, {"S2A_X": item}, rec, None, run_id="killed")
    log = tmp_path / "log.jsonl"
    assert [e["run_id"] for e in _log(tmp_path)] == ["killed"]
    log.write_text('{"run_id": "older", "item_id"')  # the line lost, half of another left
    Manifest(tmp_path, "hash")
    Manifest(tmp_path, "hash")
    lines = log.read_text().splitlines()
    assert lines[0] == '{"run_id": "older", "item_id"'
    assert [json.loads(line)["run_id"] for line in lines[1:]] == ["killed"]
