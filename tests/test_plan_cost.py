"""Before the work, what it will cost: tile counts that match the model tasks predict runs,
the dry run's time estimate from a measured forward pass, and the area guard (``--max-area``,
``--yes``) that refuses a large bbox or large regions before any work.

The dry runs search a generated demo catalog (two MGRS tiles, 120 px scenes) with the hand-set
NDVI-rule UNet of ``conftest``; the guard's refusals point ``--stac`` at a closed port, so any
work done past the guard would show as a different error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from arctic_rts.cli import EXIT_ERROR, EXIT_OK, main
from arctic_rts.config import MapConfig, PredictConfig, SearchConfig
from arctic_rts.demo import DemoCatalog, generate_demo
from arctic_rts.predict import block_tiles, predict, window_pixels

SIZE_PX = 120
#: Closed port: a STAC request there fails at once with "cannot reach".
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo(
        tmp_path_factory.mktemp("demo") / "catalog", years=(2021,), size_px=SIZE_PX
    )


@pytest.mark.parametrize(
    ("shape", "config"),
    [
        ((120, 120), PredictConfig(tile_size=32, halo=16)),
        ((130, 75), PredictConfig(tile_size=32, halo=16, batch_size=2)),
        ((64, 200), PredictConfig(tile_size=48, halo=0, batch_size=3)),
    ],
)
def test_tile_counts_are_the_windows_predict_runs(
    shape: tuple[int, int], config: PredictConfig
) -> None:
    """block_tiles has one entry per model task of the graph, and its sum and window_pixels
    are what a counting model is actually fed."""
    seen: list[int] = []
    seen_px: list[int] = []

    def model(x: torch.Tensor) -> torch.Tensor:
        seen.append(int(x.shape[0]))
        seen_px.append(int(x.shape[0] * x.shape[2] * x.shape[3]))
        return x[:, :1]

    da = xr.DataArray(np.random.default_rng(0).random((2, *shape), dtype=np.float32),
                      dims=("band", "y", "x"))  # fmt: skip
    prob = predict(da, model, config)
    counts = block_tiles(*shape, config)
    assert counts.shape == prob.data.numblocks
    prob.compute(scheduler="synchronous")
    assert sum(seen) == counts.sum() > 1
    # the model sees windows padded to the 16 px grid; window_pixels counts them unpadded
    assert window_pixels(*shape, config) <= sum(seen_px)
    assert window_pixels(*shape, config) >= shape[0] * shape[1]


def test_map_dry_run_estimates_the_time_from_a_measured_pass(
    tmp_path: Path,
    weights: Path,
    demo: DemoCatalog,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["map", "--bbox", *map(str, demo.bbox), "--year", "2021", "--stac", str(demo.items_dir)]
    argv += ["--weights", str(weights), "--tile-size", "64", "--dry-run"]
    assert main([*argv, "--format", "geojson"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    props = [f["properties"] for f in doc["features"]]
    assert len(props) == 2
    est = doc["estimate"]
    assert est["device"] == "cpu" and est["seconds_per_px"] > 0 and est["parallel"] == 1
    assert "reading imagery and vectorising come on top" in est["basis"]
    for p in props:
        # the card gives no halo: 128 px, so a 64 px tile is read in 128 px blocks
        assert p["tiles"] == math.ceil(p["height"] / 128) * math.ceil(p["width"] / 128)
        assert p["est_seconds"] == pytest.approx(p["window_px"] * est["seconds_per_px"])
    assert est["seconds"] == pytest.approx(sum(p["est_seconds"] for p in props))

    assert main(argv) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-4:] == ["tiles", "est.", "s", "item"]
    assert lines[-1].startswith("estimated model time: about ")
    assert "an estimate" in lines[-1] and "measured on this machine (cpu)" in lines[-1]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_plan_without_an_estimate_times_nothing(weights: Path, demo: DemoCatalog) -> None:
    from arctic_rts.plan import format_plan, plan_geojson, plan_map

    plan = plan_map(demo.bbox, 2021, stac=demo.items_dir, weights=weights, estimate=False)
    assert plan.calibration is None and plan.seconds is None
    assert {r["est_seconds"] for r in plan.rows} == {None}
    assert "estimated" not in format_plan(plan)
    assert json.loads(plan_geojson(plan))["estimate"] is None


def _ellipsoid_box_km2(w: float, s: float, e: float, n: float) -> float:
    """Area of a lon/lat box on the WGS84 ellipsoid in closed form (the authalic-latitude
    formula), an independent check of the geodesic area of the densified box."""
    a, f = 6378.137, 1 / 298.257223563
    ecc = math.sqrt(f * (2 - f))

    def q(lat: float) -> float:
        x = ecc * math.sin(math.radians(lat))
        return math.sin(math.radians(lat)) / (1 - x * x) + math.log((1 + x) / (1 - x)) / (2 * ecc)

    return a * a * (1 - ecc * ecc) / 2 * math.radians(e - w) * (q(n) - q(s))


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("arctic-rts: error: ") and "Traceback" not in err
    return err


def test_a_large_bbox_is_refused_before_any_work_unless_yes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    bbox = ["-150", "60", "-130", "70"]
    argv = ["map", "--bbox", *bbox, "--year", "2021", "--stac", NOWHERE]
    assert main(argv) == EXIT_ERROR
    err = _error(capsys)
    assert "--yes" in err and "--max-area" in err and "50,000 km2" in err
    km2 = float(err.split("covers ")[1].split(" km2")[0].replace(",", ""))
    assert km2 == pytest.approx(_ellipsoid_box_km2(-150, 60, -130, 70), rel=1e-5)
    assert list(tmp_path.iterdir()) == []
    # past the guard, the run meets the closed port: the guard was what stopped it
    for extra in (["--yes"], ["--max-area", "2e6"]):
        assert main([*argv, *extra]) == EXIT_ERROR
        assert "127.0.0.1:9" in _error(capsys)
    # a lower limit refuses a small box, saying the limit it was given
    small = ["map", "--bbox", "-138.1", "69.0", "-137.9", "69.1", "--year", "2021"]
    assert main([*small, "--stac", NOWHERE, "--max-area", "10"]) == EXIT_ERROR
    assert "more than the limit of 10 km2" in _error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_the_limit_is_a_validated_config_field() -> None:
    from arctic_rts.errors import ConfigError

    assert MapConfig().search.max_area_km2 == SearchConfig().max_area_km2 > 0
    with pytest.raises(ConfigError, match="max_area_km2"):
        SearchConfig(max_area_km2=0)


def test_inventory_regions_over_the_run_files_limit_are_refused(
    tmp_path: Path, weights: Path, demo: DemoCatalog, capsys: pytest.CaptureFixture[str]
) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text(
        f'out = "out/inv.gpkg"\nyears = [2021]\nstac = "{NOWHERE}"\nweights = "{weights}"\n'
        f'[[regions]]\nname = "all"\nbbox = {list(demo.bbox)}\n[search]\nmax_area_km2 = 1\n'
    )
    report = tmp_path / "r.json"
    argv = ["inventory", "run", str(run_file), "--report", str(report)]
    assert main(argv) == EXIT_ERROR
    assert "the area of the run's regions covers" in _error(capsys)
    doc = json.loads(report.read_text())  # a scheduler reads why
    assert doc["status"] == "error" and "--yes" in doc["error"]["message"]
    report.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]
    # --max-area on the command line wins over the run file's; past it, the closed port
    assert main([*argv, "--max-area", "1e5"]) == EXIT_ERROR
    assert "127.0.0.1:9" in capsys.readouterr().err.splitlines()[-1]
