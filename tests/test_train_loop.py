"""The training loop end to end on tiny generated data: every method learns, saves, resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin
from safetensors.torch import load_file

from arctic_rts.errors import ConfigError
from arctic_rts.model.halo import HALO_TOLERANCE
from arctic_rts.model.weights import load_model
from arctic_rts.train.build import write_patches
from arctic_rts.train.checkpoint import load_state, save_state
from arctic_rts.train.config import AugmentConfig, TrainConfig, TrainDataConfig
from arctic_rts.train.data import PatchDataset
from arctic_rts.train.loop import load_train_config, train
from arctic_rts.train.methods import METHODS

BANDS = ("B04", "B03", "B02")
SIZE = 32
TINY = {"widths": (4, 8, 16, 32), "bottleneck": 32}
#: Gentle augmentation so that 30 steps show learning (the paper's ranges need longer runs).
MILD = AugmentConfig(rotation_deg=10, elastic_alpha=1, zoom=(1.0, 1.2), photometric_p=0, blur_p=0)


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """One intra-op thread: on a shared 2-core machine more threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _scene(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance with a bright disc (the 'slump') on darker, noisy ground."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(8, size - 8, 2)
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(16, 49)
    # slumps differ in spectral shape, not only brightness (like the real chips: red up, NIR down)
    shift = np.array([0.08, 0.02, -0.04]).reshape(3, 1, 1)
    image = rng.normal(0.1, 0.01, (3, size, size)) + shift * mask
    return image.astype(np.float32), mask


def write_folder(root: Path, n: int, seed: int, masks: bool = True) -> tuple[Path, Path]:
    """GeoTIFF images (uint16 x 10000, band descriptions) and 0/255 PNG masks."""
    rng = np.random.default_rng(seed)
    images, mask_dir = root / "images" / "site", root / "masks"
    images.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    for i in range(n):
        image, mask = _scene(rng)
        profile = {
            "driver": "GTiff",
            "width": SIZE,
            "height": SIZE,
            "count": 3,
            "dtype": "uint16",
            "crs": "EPSG:32608",
            "transform": from_origin(600000, 7600000, 10, 10),
        }
        with rasterio.open(images / f"img_{i:02d}.tif", "w", **profile) as dst:
            dst.write(np.clip(image * 10000, 0, 65535).astype(np.uint16))
            dst.descriptions = ("B4", "B3", "B2")
        if masks:
            Image.fromarray((mask * 255).astype(np.uint8)).save(mask_dir / f"img_{i:02d}.png")
    return root / "images", mask_dir


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    images, masks = write_folder(root / "train", 8, seed=1)
    val_images, val_masks = write_folder(root / "val", 4, seed=2)
    unl, _ = write_folder(root / "unl", 8, seed=3, masks=False)
    return {"images": images, "masks": masks, "val_images": val_images,
            "val_masks": val_masks, "unlabelled": unl, "root": root}  # fmt: skip


def _config(folders: dict[str, Path], out: Path, method: str, **kw: object) -> TrainConfig:
    data = TrainDataConfig(
        images=str(folders["images"]),
        masks=str(folders["masks"]),
        unlabelled=str(folders["unlabelled"]),
        val_images=str(folders["val_images"]),
        val_masks=str(folders["val_masks"]),
        patch_size=SIZE,
    )
    base: dict[str, object] = {
        "method": method, "out_dir": str(out), "steps": 30, "batch_size": 4,
        "unlabelled_batch_size": 4, "lr": 1e-2, "warmup_steps": 2, "val_every": 0,
        "checkpoint_every": 0, "log_every": 1, "device": "cpu", "augment": MILD, **TINY,
    }  # fmt: skip
    base.update(kw)
    return TrainConfig(data=data, **base)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_learns_and_its_weights_predict_identically(
    folders: dict[str, Path], tmp_path: Path, method: str
) -> None:
    logs: list[dict] = []
    cfg = _config(folders, tmp_path, method, checkpoint_every=30, val_every=30)
    weights = train(cfg, progress=False, on_log=logs.append)
    sup = [r["sup"] for r in logs if "sup" in r]
    assert len(sup) == 30
    assert np.mean(sup[-5:]) < 0.7 * np.mean(sup[:5]), sup
    # the card tells what was trained on what, with validation metrics
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["bands"] == list(BANDS)
    assert card["training"]["method"] == method and card["training"]["steps"] == 30
    assert 0 <= card["metrics"]["iou"] <= 1
    # the halo predict will use by default, measured on the trained network
    halo = card["halo"]
    diffs = card["halo_measurement"]["max_abs_prob_diff"]
    tolerance = card["halo_measurement"]["tolerance"]
    assert tolerance == HALO_TOLERANCE
    assert halo in range(0, 129, 16) and diffs[str(halo)] <= tolerance
    assert halo == 0 or diffs[str(halo - 16)] > tolerance
    # reloaded weights predict exactly as the trained network did
    from arctic_rts.model.unet import UNet
    from arctic_rts.train.methods import NormalizedNet

    state = load_state(tmp_path / "checkpoint.safetensors")["model"]
    unet = UNet(3, **TINY, **({"dino_classes": 24} if method == "pixeldino" else {}))  # type: ignore[arg-type]
    net = NormalizedNet(unet, card["normalisation"]["mean"], card["normalisation"]["std"])
    net.load_state_dict(state)
    net.eval()
    model, _ = load_model(weights, bands=BANDS)
    x = torch.rand(2, 3, SIZE, SIZE) * 0.2
    with torch.no_grad():
        assert torch.equal(model(x), net(x))


def _logged(weights: Path) -> list[tuple[int, float]]:
    """(step, loss) of every line of a run's log."""
    lines = (weights.parent / "log.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines)]


@pytest.mark.parametrize("method", ["pixeldino", "adversarial"])
def test_a_stopped_run_resumes_exactly(
    folders: dict[str, Path], tmp_path: Path, method: str
) -> None:
    straight = train(_config(folders, tmp_path / "a", method, steps=6), progress=False)
    cfg_b = _config(folders, tmp_path / "b", method, steps=6)
    ckpt = train(cfg_b, progress=False, stop_after=3)
    assert ckpt.name == "checkpoint.safetensors"
    # a stop after the checkpoint: steps logged that the resumed run takes again, one line cut
    with (ckpt.parent / "log.jsonl").open("a") as log:
        log.write('{"step": 4, "loss": 1.0}\n{"step": 5, "lo')
    resumed = train(cfg_b, progress=False)
    assert _logged(straight) == _logged(resumed)  # each step once, as the straight run's
    a, b = load_file(straight), load_file(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a different seed gives different weights (the comparison above can fail)
    other = train(_config(folders, tmp_path / "c", method, steps=6, seed=1), progress=False)
    assert any(not torch.equal(a[k], v) for k, v in load_file(other).items())


def test_elevation_pretext_trains_from_a_patch_dataset_with_dem(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    writers = write_patches(
        tmp_path / "p.zarr", bands=BANDS, patch_size=SIZE, stride=SIZE, with_dem=True,
        metadata={"source": "test"},
    )  # fmt: skip
    for group, w in writers.items():
        for i in range(6):
            image, mask = _scene(rng)
            label = mask.astype(np.uint8) if group == "labelled" else np.zeros_like(mask, np.uint8)
            label[:, :2] = 255  # a strip outside the footprint
            dem = 100 + 30 * image[0] + rng.normal(0, 0.1, image[0].shape)
            w.add(image, label, {"i": i}, dem=dem.astype(np.float32))
        w.close()
    ds = PatchDataset(tmp_path / "p.zarr")
    assert len(ds) == 6 and ds.bands == BANDS and "dem" in ds[0]
    assert ds[0]["valid"][0, :, :2].sum() == 0
    logs: list[dict] = []
    cfg = TrainConfig(
        data=TrainDataConfig(dataset=str(tmp_path / "p.zarr"), patch_size=SIZE),
        method="pixeldino+elevation", out_dir=str(tmp_path / "run"), steps=20, batch_size=4,
        unlabelled_batch_size=4, lr=1e-2, warmup_steps=2, val_every=0, checkpoint_every=0,
        log_every=1, device="cpu", **TINY,  # type: ignore[arg-type]
    )  # fmt: skip
    weights = train(cfg, progress=False, on_log=logs.append)
    elev = [r["elevation"] for r in logs]
    assert np.mean(elev[-4:]) < np.mean(elev[:4])
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["architecture"]["elevation"] is True
    assert card["training"]["hyperparameters"]["elevation"]["weight"] == 1.0


def test_toml_run_file(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r.toml"
    run.parent.mkdir()
    run.write_text(
        'method = "fixmatchseg"\nsteps = 12\nwidths = [4, 8, 16, 32]\n'
        '[data]\nimages = "../imgs"\nmasks = "../masks"\npatch_size = 64\n'
        "[fixmatch]\nupper = 0.9\n"
    )
    cfg = load_train_config(run)
    assert cfg.method == "fixmatchseg" and cfg.steps == 12 and cfg.widths == (4, 8, 16, 32)
    assert cfg.data.images == str((tmp_path / "imgs").resolve())
    assert cfg.fixmatch.upper == 0.9 and cfg.fixmatch.lower == 0.2
    assert cfg.pixeldino.beta == 0.1  # paper default untouched
    run.write_text('method = "fixmatchseg"\nstepz = 3\n[data]\ndataset = "x.zarr"\n')
    with pytest.raises(ConfigError, match="stepz"):
        load_train_config(run)
    run.write_text('[data]\ndataset = "x.zarr"\n[fixmatch]\nupper = 0.1\n')
    with pytest.raises(ConfigError, match="lower < upper"):
        load_train_config(run)


def test_semi_supervised_without_unlabelled_data_is_refused(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    cfg = _config(folders, tmp_path, "pixeldino")
    cfg = TrainConfig(**{**cfg.__dict__, "data": TrainDataConfig(
        images=cfg.data.images, masks=cfg.data.masks, patch_size=SIZE)})  # fmt: skip
    with pytest.raises(ConfigError, match="unlabelled"):
        train(cfg, progress=False)


def test_a_checkpoint_of_another_run_is_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    from arctic_rts.errors import TrainingError

    train(_config(folders, tmp_path, "supervised", steps=4), progress=False, stop_after=1)
    with pytest.raises(TrainingError, match="different run configuration"):
        train(_config(folders, tmp_path, "supervised", steps=4, lr=5e-3), progress=False)


def test_checkpoints_hold_no_pickle(tmp_path: Path) -> None:
    """Nested state (integer keys, tuples, None, NaN, tensors) round-trips through safetensors;
    a pickle under the checkpoint's name is refused with one clear error."""
    import math

    from arctic_rts.errors import TrainingError

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], betas=(0.9, 0.99))
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    state = {"optimizer": opt.state_dict(), "x": [None, math.nan, "s", (1, 2.5)], "g": True}
    path = tmp_path / "checkpoint.safetensors"
    save_state(path, state)
    assert load_file(path)  # a plain safetensors file
    back = load_state(path)
    assert back["x"][0] is None and math.isnan(back["x"][1]) and back["x"][3] == (1, 2.5)
    assert back["g"] is True and list(back["optimizer"]["state"]) == [0]  # integer keys stay
    assert torch.equal(
        back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"]
    )
    again = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))])
    again.load_state_dict(back["optimizer"])
    assert again.param_groups[0]["betas"] == (0.9, 0.99)
    torch.save(state, path)  # a pickle under the checkpoint's name
    with pytest.raises(TrainingError, match="cannot read the checkpoint"):
        load_state(path)
