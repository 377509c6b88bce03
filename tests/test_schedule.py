"""Scheduled yearly runs: years from the command line, the run report, the log file, dry runs.

The real runs use a generated two-year demo catalog (two MGRS tiles, 120 px scenes) and the
hand-set NDVI-rule UNet of ``conftest``, through the CLI in this process with a local cluster;
the report is parsed back and checked against the GeoPackage it describes.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import shapely

from arctic_rts.cli import EXIT_ERROR, EXIT_OK, build_parser, main
from arctic_rts.config import LATEST_RULE, latest_season_year, parse_years
from arctic_rts.demo import DemoCatalog, generate_demo
from arctic_rts.errors import ConfigError
from arctic_rts.run_report import RUN_STATUSES

SIZE_PX = 120


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo(
        tmp_path_factory.mktemp("demo") / "catalog", years=(2021, 2022), size_px=SIZE_PX
    )


def _run_file(folder: Path, demo: DemoCatalog, weights: Path, years: str = "[2021]") -> Path:
    """A run file for one year; the tests pass the years they want on the command line."""
    path = folder / "run.toml"
    path.write_text(
        "\n".join(
            [
                'out = "out/inv.gpkg"',
                f"years = {years}",
                f'stac = "{demo.items_dir}"',
                f'weights = "{weights}"',
                "[[regions]]",
                'name = "all"',
                f"bbox = {list(demo.bbox)}",
                "[predict]",
                "tile_size = 128",
                'device = "cpu"',
                "[cluster]",
                "n_workers = 1",
                'gpu = "no"',
            ]
        )
        + "\n"
    )
    return path


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ---------------------------------------------------------------------------------------------
# Years from the command line


@pytest.mark.parametrize(
    ("specs", "want"),
    [
        ("2017-2019", (2017, 2018, 2019)),
        ("2021", (2021,)),
        ("2019,2021", (2019, 2021)),
        (["2021", "2017-2018", "2018"], (2017, 2018, 2021)),
        ("latest", (2026,)),
        (["2024", "latest"], (2024, 2026)),
    ],
)
def test_years_are_ranges_lists_or_latest(specs: str | list[str], want: tuple[int, ...]) -> None:
    assert parse_years(specs, today=dt.date(2026, 9, 15)) == want


@pytest.mark.parametrize(
    ("today", "months", "want"),
    [
        (dt.date(2026, 8, 31), (6, 7, 8), 2025),  # the season is not over on its last day
        (dt.date(2026, 9, 1), (6, 7, 8), 2026),
        (dt.date(2026, 1, 10), (6, 7, 8), 2025),
        (dt.date(2026, 9, 30), (7, 8, 9), 2025),
        (dt.date(2026, 12, 31), (10, 11, 12), 2025),
        (dt.date(2027, 1, 1), (10, 11, 12), 2026),
    ],
)
def test_latest_is_the_last_year_whose_season_is_over(
    today: dt.date, months: tuple[int, ...], want: int
) -> None:
    assert latest_season_year(months, today) == want
    assert "September 1" in LATEST_RULE


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("2019-2017", "is empty"),
        ("twenty", "2017-2025"),
        ("2010-2016", "Sentinel-2 year"),
        ("2021-2099", "Sentinel-2 year"),
        (",", "no year given"),
    ],
)
def test_bad_years_are_refused(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_years(spec)


def test_cli_years_override_the_run_file(tmp_path: Path, weights: Path, demo: DemoCatalog) -> None:
    from arctic_rts.cli import _inventory_config

    run_file = _run_file(tmp_path, demo, weights)
    parser = build_parser()
    args = parser.parse_args(["inventory", "run", str(run_file), "--years", "2017-2019,2022"])
    assert _inventory_config(args).years == (2017, 2018, 2019, 2022)
    args = parser.parse_args(["inventory", "run", "--years", "2021", str(run_file)])
    assert args.run_file == run_file  # one word: the run file after it is not taken as a year
    args = parser.parse_args(["inventory", "run", str(run_file), "--year", "latest"])
    assert _inventory_config(args).years == (latest_season_year(),)
    args = parser.parse_args(["inventory", "run", str(run_file), "--scheduler", "tcp://h:8786"])
    cfg = _inventory_config(args)
    assert cfg.years == (2021,) and cfg.map.cluster.scheduler == "tcp://h:8786"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--years", "2022-2020"], "is empty"),
        (["--year", "2031"], "Sentinel-2 year"),
        (["--year", "2021", "--years", "2022"], "not allowed with argument"),
        (["--report", "missing/r.json"], "--report missing/r.json: folder missing"),
        (["--log", "."], "--log . is a folder"),
    ],
)
def test_bad_run_options_are_one_line_before_any_work(
    tmp_path: Path,
    weights: Path,
    demo: DemoCatalog,
    argv: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_file = _run_file(tmp_path, demo, weights)
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    assert _exit_code(["inventory", "run", str(run_file), *argv]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("arctic-rts: error:") and err.count("\n") == 1, err
    assert needle in err and "Traceback" not in err
    assert _files(tmp_path) == before


def _exit_code(argv: list[str]) -> int | str | None:
    """``main``'s exit code, also where argparse exits (usage errors)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


# ---------------------------------------------------------------------------------------------
# Real runs: report, log, rerun, failure


@pytest.mark.slow
def test_years_from_the_cli_report_and_log_match_the_geopackage(
    tmp_path: Path, weights: Path, demo: DemoCatalog, capsys: pytest.CaptureFixture[str]
) -> None:
    run_file = _run_file(tmp_path, demo, weights)  # the file says 2021 only
    report, log = tmp_path / "r.json", tmp_path / "run.log"
    # 2020 has no scenes in the demo catalog: a year of the range that is reported, not written
    argv = ["inventory", "run", str(run_file), "--years", "2020-2022", "--quiet"]
    assert main([*argv, "--report", str(report), "--log", str(log)]) == EXIT_OK
    assert "done" not in capsys.readouterr().err  # --quiet: the scenes go to the log only

    doc = json.loads(report.read_text())
    out = Path(doc["out"])
    assert doc["status"] == "complete" and doc["status"] in RUN_STATUSES and doc["error"] is None
    assert doc["years_requested"] == [2020, 2021, 2022] and doc["run_file"] == str(run_file)
    assert [y["year"] for y in doc["years"]] == [2020, 2021, 2022]
    empty = doc["years"][0]
    assert (empty["status"], empty["n_scenes"], empty["written"], empty["scenes"]) == (
        "no_scenes",
        0,
        False,
        [],
    )
    assert "rts_2020" not in {name for name, _ in pyogrio.list_layers(out)}
    scenes_layer = gpd.read_file(out, layer="scenes")
    for year in doc["years"][1:]:
        rts = gpd.read_file(out, layer=f"rts_{year['year']}")
        assert year["n_polygons"] == len(rts) > 0
        assert year["status"] == "complete" and year["written"] and year["seconds"] > 0
        assert (year["n_scenes"], year["n_computed"], year["n_failed"]) == (2, 2, 0)
        ids = {s["item_id"] for s in year["scenes"]}
        assert ids <= set(scenes_layer["scene_id"]) and len(ids) == 2
        for scene in year["scenes"]:
            assert scene["status"] == "computed" and scene["run_id"] == doc["run_id"]
            assert scene["tile"] in {"07WFS", "08WLB"} and scene["seconds"] > 0
            assert scene["datetime"].startswith(str(year["year"]))
    assert doc["totals"]["n_polygons"] == sum(
        len(gpd.read_file(out, layer=f"rts_{y}")) for y in (2021, 2022)
    )
    assert doc["totals"]["n_scenes"] == len(scenes_layer) == 4
    assert doc["years"][2]["changes"] is not None and doc["seconds"] > 0

    text = log.read_text()
    for row in scenes_layer.itertuples():
        assert f"scene {row.scene_id} done" in text
    assert "2021: 2 scenes (2 computed, 0 reused, 0 failed)" in text
    assert f"inventory run {doc['run_id']}" in text and "changes 2021->2022" in text

    # A rerun reuses every scene; its report says so and the log grows.
    again = tmp_path / "r2.json"
    assert main([*argv, "--report", str(again), "--log", str(log)]) == EXIT_OK
    doc2 = json.loads(again.read_text())
    assert doc2["totals"] == {**doc["totals"], "n_computed": 0, "n_from_manifest": 4}
    assert {s["status"] for y in doc2["years"] for s in y["scenes"]} == {"reused"}
    assert {s["run_id"] for y in doc2["years"] for s in y["scenes"]} == {doc["run_id"]}
    assert not any(y["written"] for y in doc2["years"])
    assert log.read_text().startswith(text) and f"inventory run {doc2['run_id']}" in log.read_text()


def test_a_run_that_stops_with_an_error_still_writes_its_report_and_log(
    tmp_path: Path, demo: DemoCatalog, capsys: pytest.CaptureFixture[str]
) -> None:
    run_file = _run_file(tmp_path, demo, tmp_path / "missing.safetensors")
    report, log = tmp_path / "r.json", tmp_path / "run.log"
    code = main(["inventory", "run", str(run_file), "--report", str(report), "--log", str(log)])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and err.count("\n") == 1
    doc = json.loads(report.read_text())
    assert doc["status"] == "error" and doc["years_requested"] == [2021]
    assert doc["error"]["type"] == "WeightsError"
    assert doc["error"]["message"] in err
    assert "ERROR arctic_rts: run stopped: WeightsError" in log.read_text()


def test_unusable_years_are_reported_for_the_scheduler(
    tmp_path: Path, weights: Path, demo: DemoCatalog, capsys: pytest.CaptureFixture[str]
) -> None:
    run_file = _run_file(tmp_path, demo, weights)
    report = tmp_path / "r.json"
    argv = ["inventory", "run", str(run_file), "--years", "2031", "--report", str(report)]
    assert main(argv) == EXIT_ERROR
    assert capsys.readouterr().err.count("\n") == 1
    doc = json.loads(report.read_text())
    assert doc["status"] == "error" and doc["error"]["type"] == "ConfigError"
    assert "Sentinel-2 year" in doc["error"]["message"] and doc["years_requested"] == []
    assert _files(tmp_path) == {"run.toml", "r.json"}


# ---------------------------------------------------------------------------------------------
# Dry runs


def test_inventory_dry_run_lists_scenes_and_pixels_and_writes_nothing(
    tmp_path: Path, weights: Path, demo: DemoCatalog, capsys: pytest.CaptureFixture[str]
) -> None:
    run_file = _run_file(tmp_path, demo, weights)
    before = _files(tmp_path)
    assert main(["inventory", "run", str(run_file), "--years", "2021-2022", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "year", "tile", "date", "cloud", "%", "size", "px", "pixels", "tiles", "est.", "s", "item"
    ]  # fmt: skip
    assert out[-1].startswith("estimated model time: about ") and "an estimate" in out[-1]
    out = out[:-1]
    rows = [line.split() for line in out[1:-1]]
    assert [(r[0], r[1]) for r in rows] == [
        ("2021", "07WFS"),
        ("2021", "08WLB"),
        ("2022", "07WFS"),
        ("2022", "08WLB"),
    ]
    assert {r[4] for r in rows} == {f"{SIZE_PX}x{SIZE_PX}"}
    assert out[-1].startswith(f"4 scenes, {4 * SIZE_PX**2:,} pixels")
    assert _files(tmp_path) == before  # no out/, no work folder, no lock


def test_inventory_dry_run_with_retry_failed_lists_only_the_scenes_that_failed(
    tmp_path: Path, weights: Path, demo: DemoCatalog, capsys: pytest.CaptureFixture[str]
) -> None:
    from arctic_rts.catalog import stac_endpoint
    from arctic_rts.inventory_run import inventory_work_dir
    from arctic_rts.manifest import Manifest, scene_hash
    from arctic_rts.model.weights import resolve_weights
    from arctic_rts.pipeline import scene_record
    from arctic_rts.runfile import read_inventory_run
    from arctic_rts.search import search_scenes

    run_file = _run_file(tmp_path, demo, weights)
    argv = ["inventory", "run", str(run_file), "--years", "2021-2022", "--dry-run"]

    def listed(*extra: str) -> list[tuple[str, str, str]]:
        assert main([*argv, *extra]) == 0
        lines = capsys.readouterr().out.splitlines()
        return [(r[0], r[1], r[-1]) for r in (line.split() for line in lines[1:-2])]

    assert len(listed()) == 4
    assert listed("--retry-failed") == []  # no earlier run: nothing to retry
    # One 2022 scene recorded as failed, as a run that failed on it records it.
    cfg = read_inventory_run(run_file)
    work = inventory_work_dir(Path(cfg.out))
    manifest = Manifest(work, scene_hash(cfg.map, resolve_weights([weights])))
    failed_id = next(r[2] for r in listed() if r[:2] == ("2022", "08WLB"))
    # The item as a run gets it from the search (which writes ``updated`` its own way)
    with stac_endpoint(cfg.stac) as url:
        found = search_scenes(demo.bbox, 2022, stac_url=url, config=cfg.map.search)
    item = next(it for it in found if it["id"] == failed_id)
    record = scene_record(item)
    record.status, record.error = "failed", "LoadError: unreadable"
    manifest.save(2022, {failed_id: item}, record, None, run_id="earlier")
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}

    assert listed("--retry-failed") == [("2022", "08WLB", failed_id)]
    assert len(listed()) == 4  # without the flag: every scene, as before
    assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before


def test_map_dry_run_as_geojson(
    tmp_path: Path,
    weights: Path,
    demo: DemoCatalog,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    bbox = [str(v) for v in demo.bbox]
    argv = ["map", "--bbox", *bbox, "--year", "2022", "--stac", str(demo.items_dir)]
    argv += ["--weights", str(weights), "--dry-run", "--format", "geojson"]
    assert main(argv) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    frame = gpd.GeoDataFrame.from_features(doc["features"], crs="EPSG:4326")
    assert sorted(frame["tile"]) == ["07WFS", "08WLB"] and set(frame["year"]) == {2022}
    assert doc["pixels"] == frame["pixels"].sum() == 2 * SIZE_PX**2
    assert frame.union_all().intersects(shapely.box(*demo.bbox))
    assert all(d.startswith("2022-") for d in frame["date"])
    assert list(tmp_path.iterdir()) == []  # no rts_inventory.gpkg, no lock
