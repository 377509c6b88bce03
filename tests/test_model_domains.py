"""Which model maps which catalog, end to end: the real model by default on real catalogs, the
demo model refused there with one line and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arctic_rts.catalog import serve_catalog
from arctic_rts.cli import EXIT_ERROR, main
from arctic_rts.config import LoadConfig, MapConfig, SearchConfig
from arctic_rts.model.domain import demo_weights, real_weights
from arctic_rts.model.weights import read_card
from arctic_rts.pipeline import map_region
from arctic_rts.train.loop import load_train_config
from arctic_rts.train.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]

PREFIX = "arctic-rts: error: "


@pytest.fixture(scope="module")
def earth_search_folder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real Earth Search L2A item (tile 30VXR, 2025-07-17, cloud-free) as a local catalog."""
    doc = json.loads(
        (shared_data / "stac_items" / "items_earth-search_sentinel-2-l2a.geojson").read_text()
    )
    [item] = [f for f in doc["features"] if f["id"] == "S2B_30VXR_20250717_0_L2A"]
    folder = tmp_path_factory.mktemp("earth-search")
    (folder / "item.json").write_text(json.dumps(item))
    return folder


@pytest.mark.realdata
def test_the_demo_model_is_refused_on_a_real_catalog(
    earth_search_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rts.gpkg"
    argv = ["map", "--bbox", "0.8", "63.2", "0.9", "63.3", "--year", "2025", "--quiet"]
    argv += [
        "--stac",
        str(earth_search_folder),
        "--weights",
        str(demo_weights()),
        "--out",
        str(out),
    ]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert err.startswith(PREFIX) and err.count("\n") == 1, err
    assert "generated demo scenes only" in err and real_weights().name in err
    assert not out.exists()


@pytest.mark.realdata
def test_a_real_catalog_is_mapped_with_the_real_model_by_default(
    rkh_folder: Path, shared_data: Path, tmp_path: Path
) -> None:
    config = MapConfig(
        search=SearchConfig(months=(2,), max_cloud_cover=20.0),
        # the COGs were decimated 10x by their publisher; they lie outside the catalog folder
        load=LoadConfig(resolution=100.0, asset_roots=(str(shared_data / "s2_l2a_cogs_29RKH"),)),
    )
    with serve_catalog(rkh_folder) as url:
        result = map_region(
            (-11.45, 24.75, -11.35, 24.85),
            2020,
            stac=url,
            out=tmp_path / "rts.gpkg",
            config=config,
            progress=False,
        )
    card = read_card(real_weights())
    assert card["domain"]["name"] == "sentinel-2-l2a"
    assert result.run["weights"] == f"{real_weights()}#{card['sha256']}"
    assert [s.status for s in result.scenes] == ["done"]


def test_the_bundled_real_model_card() -> None:
    """The card says what a user must know, with scores from sites it never trained on."""
    card = read_card(real_weights())
    assert card["bands"] == ["B04", "B03", "B02", "B08", "B11"]
    assert card["domain"]["name"] == "sentinel-2-l2a" and card["domain"]["bands"] == card["bands"]
    assert "offset" in card["domain"]["reflectance"]
    assert 0 < card["threshold"] < 1 and card["min_area_m2"] >= 0
    assert card["opening_px"] >= 0 and 0 <= card["hysteresis_low"] < card["threshold"]
    loso = card["metrics"]["leave_one_site_out"]
    assert len(loso["sites"]) >= 3 and len(loso["folds"]) == len(loso["sites"]) * len(loso["seeds"])
    for key in ("threshold", "min_area_m2", "opening_px", "hysteresis_low"):
        assert card[key] == loso["summary"][key], key
    for fold in loso["folds"]:
        held = fold["held_out_scores"]
        assert 0 <= held["pixel_iou"] <= 1
        assert {"object_precision", "object_recall"} <= set(held)
    data = card["training"]["data"]
    names = [v for v in data.values() if isinstance(v, str)]
    assert names and not any(n.startswith("/") or ":\\" in n for n in names)
    assert "never tested" in card["tested"]
    assert card["halo"] is not None and card["sha256"]
    # the recipe's reason for its method, as make real-weights writes it
    recipe = load_train_config(ROOT / "deploy" / "real_weights" / "train.toml")
    assert card["training"]["method"] == recipe.method
    assert card["training"]["notes"] == recipe.notes and "PixelDINO" in recipe.notes
    # a semi-supervised model names its unlabelled data as well
    if METHODS[recipe.method].uses_unlabelled:
        assert data["n_unlabelled"] > 0 and not data["unlabelled"].startswith("/")


@pytest.mark.realdata
def test_an_inventory_run_refuses_the_demo_model_on_a_real_catalog(
    earth_search_folder: Path, tmp_path: Path
) -> None:
    from arctic_rts.errors import WeightsError
    from arctic_rts.inventory_run import run_inventory

    run_file = tmp_path / "run.toml"
    run_file.write_text(
        "\n".join(
            [
                'out = "rts.gpkg"',
                "years = [2025]",
                f'stac = "{earth_search_folder}"',
                f'weights = "{demo_weights()}"',
                "[[regions]]",
                'name = "trondelag"',
                "bbox = [0.8, 63.2, 0.9, 63.3]",
            ]
        )
        + "\n"
    )
    with pytest.raises(WeightsError, match="generated demo scenes only"):
        run_inventory(run_file, progress=False)
    assert not (tmp_path / "rts.gpkg").exists()
