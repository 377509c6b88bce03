"""Leave-one-site-out cross-validation on tiny generated sites: no held-out pixel leaks into a
fold's training, choices are made on training sites only, and the final card carries them."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rasterio.transform import from_origin
from test_train_loop import MILD, SIZE, TINY, write_folder

from arctic_rts.errors import DatasetError
from arctic_rts.model.weights import load_model, read_card
from arctic_rts.train.config import TrainConfig, TrainDataConfig
from arctic_rts.train.crossval import (
    MIN_AREAS_M2,
    THRESHOLDS,
    choose_postprocessing,
    finished_run,
    fold_config,
    labelled_by_site,
    train_with_crossval,
    write_crossval_card,
)
from arctic_rts.train.evaluate import evaluate, score_predictions

SITES = ("s1", "s2", "s3")


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three labelled sites (``chips/<site>/``, masks in one folder) and one unlabelled site."""
    root = tmp_path_factory.mktemp("sites")
    chips, masks = root / "chips", root / "masks"
    masks.mkdir()
    for k, site in enumerate([*SITES, "u1"]):
        images, site_masks = write_folder(root / "gen" / site, 3, seed=10 + k, masks=site != "u1")
        (chips / site).mkdir(parents=True)
        for f in sorted((images / "site").iterdir()):
            shutil.move(f, chips / site / f"{site}_{f.name}")
        for f in sorted(site_masks.iterdir()):
            shutil.move(f, masks / f"{site}_{f.name}")
    return {"root": root, "chips": chips, "masks": masks}


def _config(sites: dict[str, Path], out: Path, **kw: object) -> TrainConfig:
    data = TrainDataConfig(
        images=str(sites["chips"]),
        masks=str(sites["masks"]),
        unlabelled=str(sites["chips"]),
        patch_size=SIZE,
    )
    base: dict[str, object] = {
        "method": "supervised", "out_dir": str(out), "steps": 4, "batch_size": 2,
        "unlabelled_batch_size": 2, "lr": 1e-2, "warmup_steps": 1, "val_every": 0,
        "checkpoint_every": 0, "log_every": 1, "device": "cpu", "augment": MILD,
        "data_root": str(sites["root"]), **TINY,
    }  # fmt: skip
    base.update(kw)
    return TrainConfig(data=data, **base)  # type: ignore[arg-type]


def test_sites_are_the_image_folders(sites: dict[str, Path]) -> None:
    groups = labelled_by_site(sites["chips"], sites["masks"])
    assert list(groups) == list(SITES)  # u1 has no masks: unlabelled only
    assert all(len(pairs) == 3 for pairs in groups.values())


def test_a_fold_never_sees_its_held_out_site(sites: dict[str, Path], tmp_path: Path) -> None:
    groups = labelled_by_site(sites["chips"], sites["masks"])
    cfg = fold_config(_config(sites, tmp_path / "final"), groups, "s2", 3, tmp_path)
    train_masks = sorted(p.name for p in Path(cfg.data.masks or "").iterdir())
    val_masks = sorted(p.name for p in Path(cfg.data.val_masks or "").iterdir())
    unlabelled = sorted(p.name for p in Path(cfg.data.unlabelled or "").iterdir())
    assert train_masks and all(not n.startswith("s2_") for n in train_masks)
    assert val_masks and all(n.startswith("s2_") for n in val_masks)
    assert unlabelled and all(not n.startswith("s2_") for n in unlabelled)
    assert any(n.startswith("u1_") for n in unlabelled)
    assert cfg.seed == 3 and Path(cfg.out_dir).is_relative_to(tmp_path)


def test_one_site_is_refused(sites: dict[str, Path], tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    for f in sites["masks"].glob("s1_*"):
        (masks / f.name).symlink_to(f)
    cfg = _config(sites, tmp_path / "final")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, masks=str(masks)))
    with pytest.raises(DatasetError, match="at least two labelled sites"):
        train_with_crossval(cfg, tmp_path / "cv")


def _pred(prob: np.ndarray, truth: np.ndarray) -> dict[str, object]:
    return {
        "name": "x",
        "prob": prob.astype(np.float32),
        "truth": truth,
        "invalid": np.zeros_like(truth),
        "geo": {"crs": "EPSG:32608", "transform": from_origin(600000, 7600000, 10, 10)},
    }


def test_a_finished_run_is_reused_only_for_the_same_recipe(tmp_path: Path) -> None:
    from arctic_rts.train.loop import WEIGHTS, config_to_dict

    config = TrainConfig(data=TrainDataConfig(dataset="d.zarr"), out_dir=str(tmp_path), steps=10)
    assert finished_run(config) is None
    (tmp_path / WEIGHTS).write_bytes(b"")
    (tmp_path / "recipe.json").write_text(json.dumps(config_to_dict(config), sort_keys=True))
    assert finished_run(config) == tmp_path / WEIGHTS
    # prose about the run changes nothing it trains; a step more does
    assert finished_run(dataclasses.replace(config, notes="why this method")) is not None
    assert finished_run(dataclasses.replace(config, steps=11)) is None


def test_the_threshold_and_area_come_from_the_scores() -> None:
    truth = np.zeros((40, 40), dtype=bool)
    truth[5:25, 5:25] = True  # 400 px = 40,000 m2
    prob = np.full((40, 40), 0.1)
    prob[5:25, 5:25] = 0.65  # found only at thresholds <= 0.6
    prob[30:40, 30:40] = 0.55  # a false 10 x 10 object, dropped from 0.6 up
    prob[0:3, 35:38] = 0.9  # a tiny false object (900 m2) that an opening only shrinks
    post = choose_postprocessing([_pred(prob, truth)])
    assert post["threshold"] == 0.6
    assert post["min_area_m2"] == min(x for x in MIN_AREAS_M2 if x > 900)
    # neither opening nor hysteresis helps here, so the least aggressive choice stays
    assert post["opening_px"] == 0 and post["hysteresis_low"] == 0.0
    best = score_predictions([_pred(prob, truth)], 0.6, post["min_area_m2"])
    assert best["object"]["precision"] == 1.0 and best["object"]["recall"] == 1.0


def test_hysteresis_is_chosen_where_it_finds_the_whole_slump() -> None:
    """A slump whose rim is only moderately probable: the threshold that keeps false pixels out
    finds its core only (object IoU < 0.5); hysteresis grows the core to the whole slump."""
    truth = np.zeros((40, 40), dtype=bool)
    truth[5:25, 5:25] = True
    prob = np.full((40, 40), 0.05)
    prob[5:25, 5:25] = 0.45  # the rim
    prob[8:22, 8:22] = 0.9  # the core, 196 of the slump's 400 px
    prob[30:40, :] = 0.45  # false patches as probable as the rim (700 px), with no core
    prob[:30, 30:] = 0.45
    post = choose_postprocessing([_pred(prob, truth)])
    assert post["threshold"] == 0.5
    assert post["hysteresis_low"] == pytest.approx(0.3)
    chosen = score_predictions([_pred(prob, truth)], 0.5, hysteresis_low=0.3)
    plain = score_predictions([_pred(prob, truth)], 0.5)
    assert chosen["object"]["f1"] == 1.0 and plain["object"]["n_matched"] == 0
    assert chosen["pixel"]["iou"] == 1.0 and plain["pixel"]["iou"] == pytest.approx(196 / 400)


def test_train_with_crossval_writes_an_honest_card(sites: dict[str, Path], tmp_path: Path) -> None:
    config = _config(sites, tmp_path / "final")
    weights, result = train_with_crossval(config, tmp_path / "cv", seeds=(0,), jobs=2)
    assert [f["held_out"] for f in result["folds"]] == list(SITES)
    assert json.loads((tmp_path / "cv" / "crossval.json").read_text()) == json.loads(
        json.dumps(result)
    )
    card = read_card(weights)
    assert card["threshold"] in THRESHOLDS and card["min_area_m2"] in MIN_AREAS_M2
    assert card["threshold"] == result["summary"]["threshold"]
    loso = card["metrics"]["leave_one_site_out"]
    assert loso["sites"] == list(SITES) and len(loso["folds"]) == 3
    for fold in loso["folds"]:
        assert fold["threshold"] in THRESHOLDS
        iou = fold["held_out_scores"]["pixel_iou"]
        assert math.isnan(iou) or 0 <= iou <= 1
    assert "never tested" in card["tested"]
    assert card["domain"]["name"] == "sentinel-2-l2a"
    assert card["domain"]["bands"] == card["bands"] == ["B04", "B03", "B02"]
    data = card["training"]["data"]
    assert data["images"] == "chips" and data["masks"] == "masks"
    assert not any(str(v).startswith("/") for v in data.values() if isinstance(v, str))
    load_model(weights, device="cpu")  # tensors still match the card's hash
    again = write_crossval_card(weights, result)  # a rerun writes the same card (NaN-safe compare)
    assert json.dumps(again, sort_keys=True) == json.dumps(card, sort_keys=True)
    # each fold's held-out scores are what evaluate gives on its weights by default
    for fold in result["folds"]:
        val_masks = Path(fold["weights"]).parents[1] / "data" / "val_masks"
        again = evaluate(fold["weights"], sites["chips"], val_masks, device="cpu")
        assert again["pixel"] == fold["held_out_scores"]["pixel"]
        assert again["object"]["n_matched"] == fold["held_out_scores"]["object"]["n_matched"]
    # evaluate takes the card's threshold and post-processing by default
    scored = evaluate(weights, sites["chips"], sites["masks"], device="cpu")
    for key in ("threshold", "min_area_m2", "opening_px", "hysteresis_low"):
        assert scored[key] == card[key], key
