"""``dataset build --dry-run``: the scenes a training set would be cut from, listed from a local
catalog of real Planetary Computer items, without reading a pixel or writing a file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import shape

from arctic_rts.catalog import serve_catalog
from arctic_rts.cli import EXIT_OK, main
from arctic_rts.errors import SkippedInputWarning
from arctic_rts.train.build import plan_dataset

ITEM = "S2B_MSIL2A_20240418T202849_R114_T10XFF_20240419T002101"


@pytest.fixture(scope="module")
def real_catalog(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 461 real Planetary Computer items above 60 N, one JSON file each."""
    doc = json.loads(
        (
            shared_data
            / "stac_items"
            / "items_planetarycomputer_sentinel-2-l2a_ARCTIC_lat_gt60.geojson"
        ).read_text()
    )
    folder = tmp_path_factory.mktemp("pc-items")
    for feature in doc["features"]:
        (folder / f"{feature['id']}.json").write_text(json.dumps(feature))
    return folder


@pytest.fixture(scope="module")
def labels(shared_data: Path, real_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real Nitze et al. slump outlines on Banks Island under tile 10XFF, dated as if they had
    been drawn two days after that tile's scene (the real labels predate these items; the scene
    is 90 % cloudy, and no clearer item here covers any of the real labels)."""
    item = json.loads((real_catalog / f"{ITEM}.json").read_text())
    nitze = gpd.read_file(
        shared_data / "rts_labels_nitze" / "retrogressive_thaw_slumps"
        / "TrainingLabel_RTS_PlanetScope_Nitze_iteration001"
        / "TrainingLabel_RTS_PlanetScope_Nitze_iteration001.gpkg"
    )  # fmt: skip
    under = nitze[nitze.intersects(shape(item["geometry"]))].head(5).copy()
    assert len(under) == 5
    under["image_id"] = "banks_2024"
    under["image_date"] = "2024-04-20"
    path = tmp_path_factory.mktemp("labels") / "labels.gpkg"
    under.to_file(path)
    return path


@pytest.mark.realdata
def test_the_plan_lists_the_closest_scenes_over_the_labels(
    real_catalog: Path, labels: Path
) -> None:
    with serve_catalog(real_catalog) as url, pytest.warns(SkippedInputWarning, match="footprint"):
        [cloudy] = plan_dataset(labels, stac_url=url)  # default: at most 60 % cloud
        [row] = plan_dataset(labels, stac_url=url, tolerance_days=21, max_cloud_cover=95)
    assert cloudy["scenes"] == []
    assert row["image"] == "banks_2024" and row["n_labels"] == 5
    assert ITEM in row["scenes"]
    items = {p.stem: json.loads(p.read_text()) for p in real_catalog.glob("*.json")}
    for scene in row["scenes"]:
        when = dt.date.fromisoformat(items[scene]["properties"]["datetime"][:10])
        assert abs((when - dt.date(2024, 4, 20)).days) <= 21


@pytest.mark.realdata
def test_dry_run_writes_nothing(
    real_catalog: Path, labels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train.zarr"
    argv = ["dataset", "build", "--labels", str(labels), "--stac", str(real_catalog)]
    with pytest.warns(SkippedInputWarning, match="footprint"):
        code = main([*argv, "--out", str(out), "--max-cloud", "95", "--dry-run"])
    printed = capsys.readouterr().out
    assert code == EXIT_OK
    assert ITEM in printed and "nothing written" in printed
    assert not out.exists()
