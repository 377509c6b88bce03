"""Training data: the real label files survive cleaning, folders pair, STAC builds patches."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch
from shapely.geometry import Polygon, box

from arctic_rts.errors import ConfigError, DatasetError, SkippedInputWarning, WeightsError
from arctic_rts.train.build import group_labels
from arctic_rts.train.data import (
    FolderDataset,
    PatchDataset,
    crop_or_pad,
    parse_date,
    read_footprints,
    read_labels,
)

NITZE = (
    "rts_labels_nitze/retrogressive_thaw_slumps/TrainingLabel_RTS_PlanetScope_Nitze_iteration00{i}"
)


def _messages(record: list[warnings.WarningMessage]) -> str:
    return "\n".join(str(w.message) for w in record if issubclass(w.category, SkippedInputWarning))


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("i", "kept", "said"),
    [
        (1, 2182, ["repaired 4 invalid"]),
        (2, 743, []),
        (3, 390, ["skipped 20 polygon(s) with null label", "repaired 2 invalid"]),
        (4, 204, ["repaired 3 invalid"]),
    ],
)
def test_real_nitze_labels_are_cleaned_with_reasons(
    shared_data: Path, i: int, kept: int, said: list[str]
) -> None:
    folder = shared_data / NITZE.format(i=i)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        labels = read_labels(folder / f"TrainingLabel_RTS_PlanetScope_Nitze_iteration00{i}.gpkg")
    assert len(labels) == kept
    assert labels.crs.to_epsg() == 4326
    assert labels.is_valid.all() and (labels.area > 0).all()
    assert all(d is not None for d in labels["date"])
    text = _messages(rec)
    for phrase in said:
        assert phrase in text


@pytest.mark.realdata
def test_real_footprints_with_malformed_dates_and_missing_footprints(shared_data: Path) -> None:
    folder = shared_data / NITZE.format(i=2)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fps = read_footprints(folder / "ImageFootprints_RTS_PlanetScope_Nitze_iteration002.gpkg")
    assert "202-00-722" in _messages(rec)
    assert {str(d) for d in fps["date"]} == {"2020-07-22", "2020-08-14", "2021-07-15"}
    labels = read_labels(folder / "TrainingLabel_RTS_PlanetScope_Nitze_iteration002.gpkg")
    images = group_labels(labels, fps)
    assert len(images) == 6 and sum(len(im.labels) for im in images) == 743
    for im in images:  # every label lies in its own image's footprint
        assert im.labels.geometry.within(im.footprint.buffer(1e-6)).all()
    # iteration 001 has no footprint file: a stand-in around the labels, with a warning
    it1 = shared_data / NITZE.format(i=1) / "TrainingLabel_RTS_PlanetScope_Nitze_iteration001.gpkg"
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        images = group_labels(read_labels(it1))
    assert "have no footprint" in _messages(rec)
    assert all(im.labels.geometry.within(im.footprint).all() for im in images)


def test_label_quirks_on_a_generated_file(tmp_path: Path) -> None:
    bowtie = Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])
    frame = gpd.GeoDataFrame(
        {
            "label": ["1", "1", None, "2", "x", "1"],
            "image_date": [
                "2021-07-01",
                "2021-07-02",
                "2021-07-03",
                "2021-07-04",
                "2021-07-05",
                "bad",
            ],
            "image_id": ["a", "a", "b", "b", "c", "20210709_1"],
        },
        geometry=[
            box(0, 0, 1, 1),
            bowtie,
            box(0, 0, 1, 1),
            box(0, 0, 1, 1),
            box(0, 0, 1, 1),
            box(2, 2, 3, 3),
        ],
        crs="EPSG:4326",
    )
    path = tmp_path / "labels.gpkg"
    frame.to_file(path)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        labels = read_labels(path)
    text = _messages(rec)
    assert "null label" in text and "no number" in text and "other than 1" in text
    assert "repaired 1 invalid" in text
    assert len(labels) == 3 and labels.is_valid.all()
    assert [str(d) for d in labels["date"]] == ["2021-07-01", "2021-07-02", "2021-07-09"]
    assert parse_date("202-00-722", "20200722_081437_1032").isoformat() == "2020-07-22"
    with pytest.raises(DatasetError, match="no usable"):
        read_labels(frame.iloc[2:5])


@pytest.mark.realdata
def test_real_folder_datasets(shared_data: Path) -> None:
    chips = shared_data / "s2_rts_chips_alaska_canada"
    ds = FolderDataset(chips / "chips", chips / "masks")
    assert len(ds) == 67
    assert ds.bands == ("B04", "B03", "B02", "B08", "B11")
    share = np.mean([s["mask"].mean() for s in ds.samples])
    assert 0.05 < share < 0.2  # README: slumps are 10.7 % of labelled pixels
    assert 0.02 < float(np.nanmedian(ds[0]["image"][0])) < 0.3  # reflectance, not DN
    patch = crop_or_pad(ds[0], 112)
    assert patch["image"].shape == (5, 112, 112) and patch["valid"][0, 105:].sum() == 0
    hi = shared_data / "rts_chips_highres"
    few = FolderDataset(sorted((hi / "images").glob("*.jpg"))[:3])
    assert few.bands is None and few[0]["image"].shape[0] == 3
    from arctic_rts.train.data import read_mask

    mask = read_mask(hi / "masks" / "train_nitze_000.jpg")  # JPEG ringing: > 127
    assert mask.dtype == bool and 0 < mask.mean() < 1


@pytest.mark.slow
def test_build_dataset_from_a_generated_stac_catalog(tmp_path: Path) -> None:
    from arctic_rts.catalog import serve_catalog
    from arctic_rts.demo import generate_demo
    from arctic_rts.train.build import build_dataset

    cat = generate_demo(tmp_path / "demo", seed=5, size_px=120)
    truth = gpd.read_file(cat.truth_path)
    footprint = gpd.GeoDataFrame({"image_id": [None]}, geometry=[box(*cat.bbox)], crs="EPSG:4326")
    with serve_catalog(cat.items_dir) as url:
        out = build_dataset(
            cat.truth_path, tmp_path / "p.zarr", stac_url=url, footprints=footprint,
            bands=("B02", "B03", "B04", "B08"), patch_size=32, stride=16,
            unlabelled_regions=[cat.bbox], unlabelled_year=2021, dem=cat.dem_path,
        )  # fmt: skip
    lab, unl = PatchDataset(out, "labelled"), PatchDataset(out, "unlabelled")
    assert len(lab) > 0 and len(unl) > 0
    assert lab.bands == ("B02", "B03", "B04", "B08")
    attrs = lab.attrs
    assert attrs["patch_size"] == 32 and attrs["stride"] == 16 and attrs["stac_url"] == url
    meta = lab.patches[0]
    assert meta["scene_id"] and meta["epsg"] in (32607, 32608)
    # rasterised slump pixels: all truth inside the labelled scene shows up as 1s
    slump_px = sum(float(lab[i]["mask"].sum()) for i in range(len(lab)))
    assert slump_px > 0
    sample = lab[0]
    assert set(sample) == {"image", "mask", "valid", "dem"}
    assert np.isfinite(sample["dem"]).mean() > 0.9
    assert float(truth.to_crs(6931).area.sum()) > 0


def _tiny_weights(tmp_path: Path) -> tuple[Path, Path, Path]:
    from test_train_loop import TINY, write_folder

    from arctic_rts.train.config import TrainConfig, TrainDataConfig
    from arctic_rts.train.loop import train

    images, masks = write_folder(tmp_path / "d", 4, seed=9)
    cfg = TrainConfig(
        data=TrainDataConfig(images=str(images), masks=str(masks), patch_size=32),
        method="supervised", out_dir=str(tmp_path / "run"), steps=3, batch_size=2,
        warmup_steps=1, val_every=0, checkpoint_every=0, device="cpu", **TINY,  # type: ignore[arg-type]
    )  # fmt: skip
    return train(cfg, progress=False), images, masks


def test_evaluate_sums_counts_and_writes_json(tmp_path: Path) -> None:
    from arctic_rts.metrics import pixel_scores
    from arctic_rts.train.evaluate import evaluate, format_table

    torch.set_num_threads(1)
    weights, images, masks = _tiny_weights(tmp_path)
    result = evaluate(weights, images, masks, json_out=tmp_path / "eval.json", device="cpu")
    assert result["n_images"] == 4
    per = result["images"]
    assert all(r["tp"] + r["fp"] + r["fn"] + r["tn"] == 32 * 32 for r in per)
    tp, fp, fn, tn = (sum(r[k] for r in per) for k in ("tp", "fp", "fn", "tn"))
    expected = pixel_scores(tp, fp, fn, tn)
    for key in ("iou", "precision", "recall", "f1"):
        a, b = result["pixel"][key], expected[key]
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b)
    assert result["object"]["n_true"] == 4  # one disc per generated image
    assert json.loads((tmp_path / "eval.json").read_text())["pixel"]["tp"] == tp
    table = format_table(result)
    assert "pixel IoU" in table and "object recall" in table
    # images whose bands differ from the card are refused
    import rasterio

    odd = tmp_path / "odd"
    odd.mkdir()
    for f in sorted(images.rglob("*.tif"))[:1]:
        with rasterio.open(f) as src:
            profile, data = src.profile, src.read()
        with rasterio.open(odd / f.name, "w", **profile) as dst:
            dst.write(data)
            dst.descriptions = ("B08", "B03", "B02")
    with pytest.raises(WeightsError):
        evaluate(weights, odd, masks, device="cpu")
    _ = shapely  # keep the import for readers of polygons above


@pytest.mark.realdata
def test_unlabelled_regions_from_the_real_study_sites(shared_data: Path) -> None:
    from arctic_rts.train.build import region_boxes

    boxes = region_boxes(shared_data / "rts_study_sites_nitze2021" / "study_sites.geojson")
    assert len(boxes) == 9
    assert all(w < e and s < n and 60 < s < 80 for w, s, e, n in boxes)
    assert region_boxes([(1, 2, 3, 4)]) == [(1.0, 2.0, 3.0, 4.0)]
    with pytest.raises(ConfigError, match="bbox"):  # the one bbox rule, config.validate_bbox
        region_boxes([(1, 2, 3)])
