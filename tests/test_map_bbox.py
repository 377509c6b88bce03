"""What ``map --bbox`` maps and writes: only the bbox's pixels (plus the model's halo and a
margin), and the slumps whose representative point lies in the bbox, whole; the rule
``inventory run`` applies to its regions.

A real two-process Dask cluster maps the generated demo catalog, served by the embedded STAC
API, with the hand-set stand-in model of ``conftest.py`` (its detections are known: bare, wet
soil), once with the selected scenes whole and once clipped to a small bbox.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import shapely

from arctic_rts.cli import EXIT_OK, main
from arctic_rts.cluster import connect
from arctic_rts.config import ClusterConfig, MapConfig, PredictConfig, SearchConfig
from arctic_rts.demo import DemoCatalog, generate_demo
from arctic_rts.pipeline import MapResult, map_region

pytestmark = pytest.mark.slow

CONFIG = MapConfig(
    search=SearchConfig(months=(6, 7, 8), max_cloud_cover=60.0),
    predict=PredictConfig(tile_size=128, halo=16, device="cpu"),
    cluster=ClusterConfig(n_workers=2, threads_per_worker=1, gpu="no"),
    area_margin_m=300.0,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo(tmp_path_factory.mktemp("demo") / "catalog", seed=5, size_px=360)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with connect(CONFIG.cluster) as c:
        yield c


@pytest.fixture(scope="module")
def bbox(demo: DemoCatalog) -> tuple[float, float, float, float]:
    """The middle fifth of the demo area, east to west, and its middle half north to south."""
    w, s, e, n = demo.bbox
    dx, dy = (e - w) / 5, (n - s) / 4
    return (w + 2 * dx, s + dy, w + 3 * dx, n - dy)


@pytest.fixture(scope="module")
def runs(
    demo: DemoCatalog,
    weights: Path,
    client: Any,
    bbox: tuple[float, float, float, float],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[MapResult, MapResult]:
    out = tmp_path_factory.mktemp("out")
    common: dict[str, Any] = {
        "stac": demo.items_dir,
        "weights": weights,
        "config": CONFIG,
        "client": client,
        "progress": False,
    }
    whole = map_region(bbox, 2021, out=out / "whole.gpkg", clip=False, **common)
    clipped = map_region(bbox, 2021, out=out / "clipped.gpkg", **common)
    return whole, clipped


def _inside(polygons: gpd.GeoDataFrame, bbox: tuple[float, ...]) -> gpd.GeoDataFrame:
    points = polygons.geometry.representative_point().to_crs(4326)
    return polygons[points.within(shapely.box(*bbox)).to_numpy()]


def test_the_written_slumps_are_those_of_the_bbox_whole(
    runs: tuple[MapResult, MapResult], bbox: tuple[float, float, float, float]
) -> None:
    whole, clipped = runs
    written = gpd.read_file(clipped.out, layer="rts_2021")
    assert len(written) == len(clipped.polygons) > 0
    # Every written slump has its representative point in the bbox ...
    assert len(_inside(written, bbox)) == len(written)
    # ... and they are exactly the whole-scene run's slumps there, with the same outlines
    # (kept whole: a slump across the bbox's edge is not cut).
    expected = _inside(whole.polygons, bbox)
    assert len(whole.polygons) > len(expected)  # the scenes show slumps outside the bbox
    assert sorted(written["rts_id"]) == sorted(expected["rts_id"])
    for _, row in expected.iterrows():
        got = written[written["rts_id"] == row["rts_id"]].geometry.iloc[0]
        assert got.symmetric_difference(row.geometry).area < 1e-6 * row.geometry.area + 1.0


def test_only_the_pixels_around_the_bbox_are_mapped(runs: tuple[MapResult, MapResult]) -> None:
    whole, clipped = runs
    # Each scene is cropped to the bbox plus halo and margin before the model runs: it finds
    # fewer objects than the whole scene does.
    per_scene = {r.item_id: r.n_polygons for r in whole.scenes}
    assert all(r.status == "done" for r in clipped.scenes)
    assert all(r.n_polygons <= per_scene[r.item_id] for r in clipped.scenes)
    assert sum(r.n_polygons for r in clipped.scenes) < sum(per_scene.values())
    assert clipped.run["clip"] == "bbox" and whole.run["clip"] == "none"
    assert "representative point lies in the bbox" in clipped.summary()


def test_the_cli_says_which_rule_applies(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["map", "--help"])
    assert done.value.code == EXIT_OK
    text = " ".join(capsys.readouterr().out.split())
    assert "--whole-scenes" in text and "representative point lies in the bbox" in text


def test_the_dry_run_counts_the_pixels_a_clipped_run_maps(
    demo: DemoCatalog, weights: Path, bbox: tuple[float, float, float, float]
) -> None:
    from arctic_rts.plan import plan_map

    kwargs: dict[str, Any] = {"stac": demo.items_dir, "weights": weights, "config": CONFIG}
    clipped = plan_map(bbox, 2021, estimate=False, **kwargs).rows
    whole = plan_map(bbox, 2021, clip=False, estimate=False, **kwargs).rows
    assert [r["item_id"] for r in clipped] == [r["item_id"] for r in whole]
    assert all(c["pixels"] <= w["pixels"] for c, w in zip(clipped, whole, strict=True))
    assert sum(r["pixels"] for r in clipped) < sum(r["pixels"] for r in whole)
