"""The training loop: ``train(config) -> weights path``, with checkpoints that resume exactly.

One run: datasets -> band statistics (the card's normalisation) -> UNet with the method's heads
-> AdamW with a warmup-cosine learning rate -> ``steps`` optimiser steps, each on one labelled
(and, for semi-supervised methods, one unlabelled) batch -> periodic validation and checkpoints
-> final weights as safetensors with the metadata card.

Every random draw comes from generators whose states go into the checkpoint (batch sampling
and crops from a numpy ``Generator``, augmentations from a CPU ``torch.Generator``, network and
discriminator initialisation from the seeded global torch RNG), so a run stopped and resumed from
its checkpoint ends with the same weights as an uninterrupted one on CPU. Checkpoints hold no
pickle: tensors in safetensors, the rest as JSON (:mod:`arctic_rts.train.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from arctic_rts.bands import validate_bands
from arctic_rts.errors import ConfigError, DatasetError, TrainingError
from arctic_rts.model.unet import UNet
from arctic_rts.model.weights import resolve_device, save_weights
from arctic_rts.runfile import dataclass_from_table, read_toml
from arctic_rts.train.checkpoint import load_state, save_state
from arctic_rts.train.config import (
    AdversarialConfig,
    AugmentConfig,
    ElevationConfig,
    FixMatchConfig,
    PixelDINOConfig,
    TrainConfig,
    TrainDataConfig,
)
from arctic_rts.train.data import (
    Dataset,
    FolderDataset,
    PatchDataset,
    band_statistics,
    crop_or_pad,
)
from arctic_rts.train.evaluate import score_dataset
from arctic_rts.train.methods import Method, NormalizedNet, StepResult, build_method

logger = logging.getLogger(__name__)

#: Names of files in the run folder.
CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "weights.safetensors"
LOG = "log.jsonl"

_SECTIONS: dict[str, type] = {
    "data": TrainDataConfig,
    "augment": AugmentConfig,
    "pixeldino": PixelDINOConfig,
    "fixmatch": FixMatchConfig,
    "adversarial": AdversarialConfig,
    "elevation": ElevationConfig,
}
_PATH_KEYS = ("dataset", "images", "masks", "unlabelled", "val_images", "val_masks")
#: Configuration keys that don't change what a run trains: a finished run with other values is
#: the same run (prose about the run).
NOT_IN_RECIPE = ("notes",)
#: Keys a run may change on resuming from its checkpoint besides those: its length and where
#: and how it runs.
_RESUME_MAY_CHANGE = ("steps", "out_dir", "resume", "device", "val_every", "checkpoint_every")


# --- configuration -----------------------------------------------------------------------------


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a TOML run file into a :class:`TrainConfig`.

    Top-level keys are ``TrainConfig`` fields; tables ``[data]``, ``[augment]``, ``[pixeldino]``,
    ``[fixmatch]``, ``[adversarial]``, ``[elevation]`` its sections. Relative paths (data, and
    ``out_dir``) are relative to the run file's folder. ``overrides`` replace top-level fields.

    Example run file::

        method = "pixeldino"          # or supervised, supervised+aug, fixmatchseg, adversarial,
        out_dir = "runs/pixeldino"    # any of them + "+elevation" (needs a DEM in the dataset)
        steps = 20000
        seed = 0

        [data]
        dataset = "patches.zarr"      # from `arctic-rts dataset build` (labelled + unlabelled)
        val_images = "val/images"     # folders paired by file name, or a .zarr
        val_masks = "val/masks"
        patch_size = 192

        [pixeldino]
        beta = 0.1

    Raises:
        ConfigError: unreadable file, unknown key, or invalid value.
    """
    path = Path(path)
    doc = read_toml(path)
    base = path.resolve().parent

    def rel(v: str | None) -> str | None:
        return None if v is None else str((base / v).resolve())

    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = doc.pop(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"'{name}' in {path} must be a table ([{name}]).")
        if name == "data":
            table = {k: rel(v) if k in _PATH_KEYS else v for k, v in table.items()}
        if name != "data" or table:
            sections[name] = dataclass_from_table(cls, table, name)
    if "data" not in sections:
        raise ConfigError(f"{path} has no [data] table: say where the training patches are.")
    for key in ("out_dir", "data_root"):
        if key in doc:
            doc[key] = rel(doc[key])
    doc.setdefault("data_root", str(base))
    doc.update(overrides)
    return dataclass_from_table(TrainConfig, {**doc, **sections}, "top level")  # type: ignore[no-any-return]


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as plain JSON types (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))  # type: ignore[no-any-return]


# --- data ------------------------------------------------------------------------------------


def open_datasets(config: TrainConfig) -> tuple[Dataset, Dataset | None, Dataset | None]:
    """Labelled, unlabelled (or None) and validation (or None) datasets of a run."""
    data = config.data
    labelled: Dataset
    unlabelled: Dataset | None = None
    val: Dataset | None = None
    if data.dataset is not None:
        groups = PatchDataset.groups(data.dataset)
        labelled = PatchDataset(data.dataset, "labelled")
        if "unlabelled" in groups and len(PatchDataset(data.dataset, "unlabelled")):
            unlabelled = PatchDataset(data.dataset, "unlabelled")
        if "val" in groups:
            val = PatchDataset(data.dataset, "val")
    else:
        labelled = FolderDataset(data.images or "", data.masks, bands=data.bands)  # type: ignore[arg-type]
    if data.unlabelled is not None:
        unl = Path(data.unlabelled)
        unlabelled = (
            PatchDataset(unl, "unlabelled") if unl.suffix == ".zarr" else FolderDataset(unl)
        )
    if data.val_images is not None and Path(data.val_images).suffix == ".zarr":
        val = PatchDataset(data.val_images, "labelled")
    elif data.val_images is not None:
        if data.val_masks is None:
            raise ConfigError("data.val_images needs data.val_masks (or point it at a .zarr).")
        val = FolderDataset(data.val_images, data.val_masks, bands=data.bands)
    if len(labelled) == 0:
        raise DatasetError("the labelled dataset is empty.")
    return labelled, unlabelled, val


def dataset_bands(config: TrainConfig, labelled: Dataset) -> tuple[str, ...]:
    """The run's band names: the config's, else the dataset's (checked by ``validate_bands``)."""
    bands = config.data.bands or labelled.bands
    if not bands:
        raise ConfigError(
            "the images carry no band names (PNG/JPEG, or GeoTIFF without descriptions): set "
            "data.bands = ['B04', 'B03', 'B02'] (canonical names, in channel order)."
        )
    return validate_bands(bands)


def sample_batch(
    dataset: Dataset,
    size: int,
    patch: int,
    rng: np.random.Generator,
    device: torch.device,
    fill: torch.Tensor,
    weights: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """``size`` random patches (random crops of larger images) as a batch on ``device``.

    NaN reflectance is replaced by the band mean ``fill`` before augmentation (blurs and
    bilinear warps would spread NaN) and those pixels are marked invalid. ``weights`` (summing
    to 1) makes some patches likelier than others (see :func:`label_balance`).
    """
    if weights is None:
        idx = rng.integers(0, len(dataset), size)
    else:
        idx = rng.choice(len(dataset), size=size, p=weights)
    samples = [crop_or_pad(dataset[int(i)], patch, rng) for i in idx]
    batch = {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}
    image = batch["image"]
    bad = torch.isnan(image)
    batch["valid"] = batch["valid"] * (~bad.any(dim=1, keepdim=True)).float()
    batch["image"] = torch.where(bad, fill.view(1, -1, 1, 1).expand_as(image), image)
    return {k: v.to(device) for k, v in batch.items()}


def label_balance(dataset: Dataset, share: float) -> tuple[np.ndarray | None, float]:
    """Patch sampling weights and the expected slump share of the sampled labelled pixels.

    The weights (None for uniform sampling) give patches with slump pixels an expected ``share``
    of each batch. The slump share is the prior the segmentation head's bias starts from:
    with rare slumps, a head starting at 0.5 first drives every feature towards "no slump",
    and ReLUs that die on the way never come back (the network collapses to the prior).
    """
    fracs = np.empty(len(dataset))
    for i in range(len(dataset)):
        sample = dataset[i]
        valid = np.asarray(sample["valid"]) > 0
        fracs[i] = (np.asarray(sample["mask"])[valid] == 1).mean() if valid.any() else 0.0
    has = fracs > 0
    weights = None
    if share > 0 and 0 < has.sum() < len(has):
        weights = np.where(has, share / has.sum(), (1 - share) / (len(has) - has.sum()))
    probs = weights if weights is not None else np.full(len(fracs), 1 / max(len(fracs), 1))
    return weights, float(np.clip((probs * fracs).sum(), 1e-4, 0.5))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Warmup-cosine schedule as a factor of the peak learning rate."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


# --- the run -------------------------------------------------------------------------------


def _card(
    config: TrainConfig,
    method: Method,
    bands: tuple[str, ...],
    mean: list[float],
    std: list[float],
    step: int,
    metrics: dict[str, Any],
    labelled: Dataset,
    unlabelled: Dataset | None,
) -> dict[str, Any]:
    from arctic_rts.bands import domain_card
    from arctic_rts.files import relative_name

    root = Path(config.data_root) if config.data_root else Path.cwd()
    data: dict[str, Any] = dataclasses.asdict(config.data)
    for key in _PATH_KEYS:
        data[key] = relative_name(data[key], root)
    data["root"] = "names relative to the training data root"
    data["n_labelled"] = len(labelled)
    data["n_unlabelled"] = len(unlabelled) if unlabelled is not None else 0
    return {
        "name": config.name,
        "bands": list(bands),
        "normalisation": {"mean": mean, "std": std},
        "patch_size": config.data.patch_size,
        "threshold": config.threshold,
        "domain": domain_card(config.domain, bands),
        "training": {
            "method": config.method,
            "hyperparameters": {
                **method.hyperparameters(),
                "lr": config.lr,
                "weight_decay": config.weight_decay,
                "warmup_steps": config.warmup_steps,
                "batch_size": config.batch_size,
                "unlabelled_batch_size": config.unlabelled_batch_size,
                "optimizer": "AdamW",
                "schedule": "warmup-cosine",
            },
            "data": data,
            "steps": step,
            "seed": config.seed,
            **({"notes": config.notes} if config.notes else {}),
        },
        "metrics": metrics,
    }


def _measured_halo(
    net: NormalizedNet, labelled: Dataset, fill: torch.Tensor, patch: int
) -> dict[str, Any]:
    """The card's ``halo``: :func:`~arctic_rts.model.halo.measure_halo` on a mosaic of training
    patches, on the CPU, after training.

    Patches with slumps come first: context matters most where the model is unsure (bundled
    model, 16 px halo: 3e-6 on a mosaic of its first training patches, 1.5e-3 on one of
    patches with slumps, 1.8e-2 next to a slump-like feature of the benchmark's real scene).
    """
    from arctic_rts.model.halo import EXACT_HALO, HALO_TOLERANCE, measure_halo

    side = math.ceil((2 * EXACT_HALO + 64) / patch)
    with_slumps: list[np.ndarray] = []
    others: list[np.ndarray] = []
    for i in range(len(labelled)):
        sample = crop_or_pad(labelled[i], patch)
        has = bool((np.asarray(sample["mask"]) * np.asarray(sample["valid"])).any())
        (with_slumps if has else others).append(np.asarray(sample["image"]))
        if len(with_slumps) >= side * side:
            break
    chosen = (with_slumps + others)[: side * side]
    mosaic = np.empty((len(fill), side * patch, side * patch), dtype=np.float32)
    band_mean = fill.numpy()[:, None, None]
    for k in range(side * side):
        image = chosen[k % len(chosen)]
        r, c = divmod(k, side)
        tile = np.where(np.isfinite(image), image, band_mean)
        mosaic[:, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = tile
    net.eval()
    halo, diffs = measure_halo(net.cpu(), mosaic)
    return {
        "halo": halo,
        "halo_measurement": {
            "tolerance": HALO_TOLERANCE,
            "max_abs_prob_diff": {str(h): d for h, d in diffs.items()},
            "image": f"mosaic of {side} x {side} training patches of {patch} px "
            f"({min(len(with_slumps), side * side)} with slumps)",
        },
    }


@dataclass
class _Run:
    """Everything one training run holds between steps (the checkpoint's content and more)."""

    config: TrainConfig
    device: torch.device
    method: Method
    labelled: Dataset
    unlabelled: Dataset | None
    val: Dataset | None
    bands: tuple[str, ...]
    mean: list[float]
    std: list[float]
    unet: UNet
    net: NormalizedNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    rng: np.random.Generator
    aug_gen: torch.Generator
    fill: torch.Tensor
    label_weights: np.ndarray | None
    config_json: str
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def train(
    config: TrainConfig,
    *,
    progress: bool = True,
    stop_after: int | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train a model as ``config`` says and write its weights; resume from a checkpoint if any.

    Steps: open the data (:func:`open_datasets`), build the network, optimiser and random
    generators in a fixed order (:func:`_start_run`), restore a checkpoint of the same run,
    take the optimiser steps (:func:`_train_steps`), then write the weights with their card
    (:func:`_finish`).

    Args:
        config: The run (method, data, widths, steps, batch sizes, lr, seed, device...).
        progress: Log a progress line (logger ``arctic_rts.train.loop``, level INFO) every
            ``log_every`` steps.
        stop_after: Stop (after checkpointing) once this many steps are done in total, without
            writing final weights: for tests of resumption and for time-sliced runs.
        on_log: Called with every log record (step, losses, lr, time per step, validation).

    Returns:
        The path of the final ``weights.safetensors`` (card beside it as ``weights.json``), or of
        the checkpoint when ``stop_after`` ended the run early.
    """
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = _start_run(config)
    ckpt_path = out / CHECKPOINT
    if config.resume and ckpt_path.exists():
        _restore_checkpoint(run, ckpt_path)
    elif config.resume and (out / "checkpoint.pt").exists():
        logger.warning(
            "%s is a checkpoint of an earlier version (pickle), which is never read; the run "
            "starts over.",
            out / "checkpoint.pt",
        )
    _keep_log_until(out / LOG, run.step)
    with (out / LOG).open("a") as log_file:
        finished = _train_steps(run, ckpt_path, log_file, progress, stop_after, on_log)
    if not finished:
        return ckpt_path
    return _finish(run, out / WEIGHTS)


def _keep_log_until(path: Path, step: int) -> None:
    """Drop the records of steps after ``step`` from a run's log: those a stopped run wrote
    after its last checkpoint, which the resumed run takes again (all of them when it starts
    over), so that the log holds each step once. Rewritten whole and then renamed, so a stop
    in between leaves the old log."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _logged_step(line) <= step]
    if len(kept) == len(lines):
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)


def _logged_step(line: str) -> float:
    """The step of one log line; an unreadable line (cut short by a stop) counts as after
    every step."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _start_run(config: TrainConfig) -> _Run:
    """Data, network, optimiser and generators of a fresh run, seeded in a fixed order.

    The order of random draws is part of the result: the global torch RNG is seeded, then the
    UNet and the method's extra modules (``setup``) are initialised from it, then the numpy
    and augmentation generators are created. Keep it, or a seed no longer reproduces a run.
    """
    device = resolve_device(config.device)
    method = build_method(config)
    labelled, unlabelled, val = open_datasets(config)
    if method.uses_unlabelled and unlabelled is None:
        raise ConfigError(
            f"method {config.method} needs unlabelled data: set data.unlabelled (a folder of "
            "images or a .zarr) or build the dataset with unlabelled regions."
        )
    bands = dataset_bands(config, labelled)
    stats = labelled.attrs.get("normalisation") if isinstance(labelled, PatchDataset) else None
    if stats:
        mean, std = list(stats["mean"]), list(stats["std"])
    else:
        mean, std = band_statistics(labelled)

    torch.manual_seed(config.seed)
    unet = UNet(
        len(bands), widths=config.widths, bottleneck=config.bottleneck, **method.model_heads()
    )
    net = NormalizedNet(unet, mean, std, bands).to(device)
    method.setup(net)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, config.steps)
    )
    rng = np.random.default_rng(config.seed)
    aug_gen = torch.Generator().manual_seed(config.seed)
    label_weights, prior = label_balance(labelled, config.positive_share)
    with torch.no_grad():
        unet.head.bias.fill_(math.log(prior / (1 - prior)))  # type: ignore[union-attr]
    return _Run(
        config=config,
        device=device,
        method=method,
        labelled=labelled,
        unlabelled=unlabelled,
        val=val,
        bands=bands,
        mean=mean,
        std=std,
        unet=unet,
        net=net,
        optimizer=optimizer,
        scheduler=scheduler,
        rng=rng,
        aug_gen=aug_gen,
        fill=torch.tensor(mean, dtype=torch.float32),
        label_weights=label_weights,
        config_json=json.dumps(config_to_dict(config), sort_keys=True),
    )


def _restore_checkpoint(run: _Run, ckpt_path: Path) -> None:
    """Continue ``run`` from its checkpoint; refuse one written by another configuration."""
    # RNG states must stay on the CPU; load_state_dict moves the rest to the device
    state = load_state(ckpt_path)
    saved = json.loads(state["config"])
    mine = json.loads(run.config_json)
    for k in _RESUME_MAY_CHANGE + NOT_IN_RECIPE:
        saved.pop(k, None)
        mine.pop(k, None)
    if saved != mine:
        raise TrainingError(
            f"{ckpt_path} belongs to a different run configuration; use another out_dir "
            "or set resume = false to start over."
        )
    run.net.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.method.load_state_dict(state["method"])
    run.rng.bit_generator.state = json.loads(state["numpy_rng"])
    run.aug_gen.set_state(state["aug_rng"])
    torch.set_rng_state(state["torch_rng"])
    run.step = int(state["step"])
    run.history = json.loads(state["history"])


def _write_checkpoint(run: _Run, ckpt_path: Path) -> None:
    save_state(
        ckpt_path,
        {
            "step": run.step,
            "config": run.config_json,
            "model": run.net.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "method": run.method.state_dict(),
            "numpy_rng": json.dumps(run.rng.bit_generator.state),
            "aug_rng": run.aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": json.dumps(run.history),
        },
    )


def _validate(run: _Run) -> dict[str, Any]:
    if run.val is None:
        return {}
    run.net.eval()
    scores = score_dataset(run.net, run.val, device=run.device, threshold=run.config.threshold)
    run.net.train()
    return scores


def _train_steps(
    run: _Run,
    ckpt_path: Path,
    log_file: TextIO,
    progress: bool,
    stop_after: int | None,
    on_log: Callable[[dict[str, Any]], None] | None,
) -> bool:
    """Take the remaining optimiser steps; False when ``stop_after`` ended the run early."""
    config = run.config
    t0 = time.perf_counter()
    t_steps = 0
    run.net.train()
    while run.step < config.steps:
        if stop_after is not None and run.step >= stop_after:
            _write_checkpoint(run, ckpt_path)
            return False
        result = _one_step(run, ckpt_path)
        run.step += 1
        t_steps += 1
        step = run.step
        record: dict[str, Any] | None = None
        if config.logs_step(step):
            record = {
                "step": step,
                "loss": float(result.loss.detach()),
                **result.logs,
                "lr": run.scheduler.get_last_lr()[0],
                "s_per_step": (time.perf_counter() - t0) / max(t_steps, 1),
            }
        if config.val_every and (step % config.val_every == 0 or step == config.steps):
            record = record or {"step": step}
            record["val"] = _validate(run)
            run.history.append({"step": step, **record["val"]})
        if record is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            if on_log is not None:
                on_log(record)
            if progress:
                _log_progress(config, record)
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            _write_checkpoint(run, ckpt_path)
    return True


def _one_step(run: _Run, ckpt_path: Path) -> StepResult:
    """Sample the batches, compute the method's loss and take one optimiser step."""
    config = run.config
    patch = config.data.patch_size
    batch_l = sample_batch(
        run.labelled, config.batch_size, patch, run.rng, run.device, run.fill, run.label_weights
    )
    batch_u = None
    if run.method.uses_unlabelled and run.unlabelled is not None:
        batch_u = sample_batch(
            run.unlabelled, config.unlabelled_batch_size, patch, run.rng, run.device, run.fill
        )
    run.method.begin_step()
    amp = config.amp and run.device.type == "cuda"
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=amp):
        result = run.method.loss(run.net, batch_l, batch_u, run.step, run.aug_gen)
    if not torch.isfinite(result.loss):
        raise TrainingError(
            f"the loss became {float(result.loss)} at step {run.step}; lower lr or check "
            f"the data (resume restarts from {ckpt_path.name} if one was written)."
        )
    run.optimizer.zero_grad(set_to_none=True)
    result.loss.backward()  # type: ignore[no-untyped-call]
    run.optimizer.step()
    run.scheduler.step()
    run.method.after_step(run.net, run.step, config.steps)
    return result


def _log_progress(config: TrainConfig, record: dict[str, Any]) -> None:
    parts = [f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float)]
    val_part = f" val_iou={record['val'].get('iou', float('nan')):.3f}" if record.get("val") else ""
    logger.info(
        "[%s] step %d/%d %s%s", config.method, record["step"], config.steps, " ".join(parts),
        val_part,
    )  # fmt: skip


def _finish(run: _Run, weights: Path) -> Path:
    """Final validation (when none was logged), the card with the measured halo, the weights."""
    metrics = run.history[-1] if run.history else {}
    if not metrics and run.val is not None:
        metrics = {"step": run.step, **_validate(run)}
    card = _card(
        run.config, run.method, run.bands, run.mean, run.std, run.step, metrics, run.labelled,
        run.unlabelled,
    )  # fmt: skip
    card.update(_measured_halo(run.net, run.labelled, run.fill, run.config.data.patch_size))
    save_weights(run.unet, card, weights)
    return weights
