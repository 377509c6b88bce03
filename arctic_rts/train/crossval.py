"""Leave-one-site-out cross-validation of a training recipe, and the final model it vouches for.

A model is only as good as its scores on places it never saw. For a recipe whose labelled
images lie in one folder per site (``chips/<site>/<name>.tif``, masks paired by file name),
:func:`train_with_crossval` trains one model per held-out site and seed on the other sites,
chooses the probability threshold and the post-processing (minimum object area, opening,
hysteresis) on those *training* sites only, and scores the held-out site with that choice. It
also trains on every labelled site, in the same pool of jobs, and writes into that final model's
card the folds' median choice and the held-out scores (``arctic-rts train --cross-validate``).
The steps are public (:func:`plan_folds`, :func:`train_runs`, :func:`score_folds`) so that a
benchmark can pool the folds of several recipes.

Unlabelled images of a fold never include the held-out site, so no held-out pixel reaches
training in any form.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import statistics
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from arctic_rts.errors import ConfigError, DatasetError
from arctic_rts.train.config import TrainConfig

logger = logging.getLogger(__name__)

#: Probability thresholds tried on the training sites of each fold.
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: Minimum object areas (m2) tried on the training sites of each fold, at the chosen threshold.
MIN_AREAS_M2 = (0.0, 1000.0, 2000.0, 5000.0)
#: File of the cross-validation result in the work folder.
RESULT = "crossval.json"


def site_of(image: Path) -> str:
    """The site of an image: the name of the folder that holds it (``chips/<site>/x.tif``)."""
    return image.parent.name


def labelled_by_site(images: str | Path, masks: str | Path) -> dict[str, list[tuple[Path, Path]]]:
    """Image/mask pairs grouped by site, sites in sorted order."""
    from arctic_rts.train.data import pair_files

    groups: dict[str, list[tuple[Path, Path]]] = {}
    for image, mask in pair_files(images, masks):
        groups.setdefault(site_of(image), []).append((image, mask))
    return dict(sorted(groups.items()))


def _link(folder: Path, files: Sequence[Path]) -> Path:
    """A folder of symbolic links to ``files``: folds select data without copying it."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for f in files:
        (folder / f.name).symlink_to(f.resolve())
    return folder


def _unlabelled_files(config: TrainConfig) -> list[Path]:
    from arctic_rts.train.data import list_images

    if config.data.unlabelled is None:
        return []
    return list_images(config.data.unlabelled)


def fold_config(
    config: TrainConfig,
    groups: Mapping[str, Sequence[tuple[Path, Path]]],
    held_out: str,
    seed: int,
    work: Path,
) -> TrainConfig:
    """The recipe for one fold: train on every site but ``held_out``, which validates."""
    fold = work / f"fold-{held_out}-seed{seed}"
    train_masks = [m for site, pairs in groups.items() if site != held_out for _, m in pairs]
    val_masks = [m for _, m in groups[held_out]]
    unlabelled = [p for p in _unlabelled_files(config) if site_of(p) != held_out]
    data = dataclasses.replace(
        config.data,
        masks=str(_link(fold / "data" / "masks", train_masks)),
        val_images=config.data.images,
        val_masks=str(_link(fold / "data" / "val_masks", val_masks)),
        unlabelled=str(_link(fold / "data" / "unlabelled", unlabelled)) if unlabelled else None,
    )
    return dataclasses.replace(
        config, data=data, seed=seed, out_dir=str(fold / "run"), name=f"{config.name}-{held_out}"
    )


def finished_run(config: TrainConfig) -> Path | None:
    """The weights of ``config``'s run when it finished with this very recipe, else None."""
    from arctic_rts.train.loop import NOT_IN_RECIPE, WEIGHTS, config_to_dict

    out = Path(config.out_dir)
    done = out / "recipe.json"
    if not (out / WEIGHTS).is_file() or not done.is_file():
        return None
    recipe = {k: v for k, v in config_to_dict(config).items() if k not in NOT_IN_RECIPE}
    try:
        earlier = {k: v for k, v in json.loads(done.read_text()).items() if k not in NOT_IN_RECIPE}
    except ValueError:
        return None
    return out / WEIGHTS if earlier == json.loads(json.dumps(recipe)) else None


def _train_one(config: TrainConfig) -> str:
    """Train in a worker process on one torch thread (folds run side by side).

    A fold whose weights exist from the same recipe is reused; an interrupted one resumes from
    its checkpoint (``train`` does that).
    """
    import torch

    from arctic_rts.train.loop import config_to_dict, train

    finished = finished_run(config)
    if finished is not None:
        return str(finished)
    torch.set_num_threads(1)
    weights = train(config, progress=False)
    (Path(config.out_dir) / "recipe.json").write_text(
        json.dumps(config_to_dict(config), sort_keys=True)
    )
    return str(weights)


def train_runs(configs: Sequence[TrainConfig], jobs: int) -> list[Path]:
    """Train every config (``jobs`` at a time), logging each finished run; results in order."""
    done: dict[int, Path] = {}

    def finished(index: int, weights: str) -> None:
        done[index] = Path(weights)
        logger.info("ready: %s (%d of %d)", configs[index].out_dir, len(done), len(configs))

    if jobs <= 1:
        for i, config in enumerate(configs):
            finished(i, _train_one(config))
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_train_one, c): i for i, c in enumerate(configs)}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    return [done[i] for i in range(len(configs))]


# --- scoring -----------------------------------------------------------------------------------


def predictions(
    weights: str | Path, images: str | Path, masks: str | Path, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Probabilities of ``weights`` on the images that ``masks`` pair with (model run once)."""
    from arctic_rts.model.weights import load_model, resolve_device
    from arctic_rts.train.data import FolderDataset
    from arctic_rts.train.evaluate import predict_dataset

    dev = resolve_device(device)
    model, _ = load_model(weights, device=dev)
    return predict_dataset(model, FolderDataset(images, masks), dev)


#: Post-processing steps tried on the training sites of each fold, at the chosen threshold:
#: opening radii (px) and how far below the threshold the hysteresis lower cut lies (0: off).
OPENINGS_PX = (0, 1)
HYSTERESIS_DROPS = (0.0, 0.2)


def score(preds: Sequence[Mapping[str, Any]], post: Mapping[str, Any]) -> dict[str, Any]:
    """Pixel and object scores at one post-processing (``threshold``, ``min_area_m2`` and
    optionally ``opening_px``, ``hysteresis_low``), without per-image rows."""
    from arctic_rts.train.evaluate import score_predictions

    result = score_predictions(
        preds,
        post["threshold"],
        post.get("min_area_m2", 0.0),
        opening_px=post.get("opening_px", 0),
        hysteresis_low=post.get("hysteresis_low", 0.0),
    )
    result.pop("images")
    return result


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -1.0


def choose_postprocessing(
    preds: Sequence[Mapping[str, Any]],
    thresholds: Sequence[float] = THRESHOLDS,
    min_areas_m2: Sequence[float] = MIN_AREAS_M2,
) -> dict[str, Any]:
    """The threshold with the best pixel IoU, then the minimum area, opening and hysteresis
    with the best object F1 (every combination of :data:`MIN_AREAS_M2`, :data:`OPENINGS_PX`
    and :data:`HYSTERESIS_DROPS`).

    Call it on training data only: a choice made on the data it is scored on is no score.
    Ties go to the lower threshold, the smaller area, no opening and no hysteresis (the least
    aggressive choice).

    Returns:
        ``{"threshold", "min_area_m2", "opening_px", "hysteresis_low"}`` (0: step off).
    """
    from arctic_rts.train.evaluate import pixel_totals

    best_t = max(thresholds, key=lambda t: (_finite(pixel_totals(preds, t)["iou"]), -t))
    candidates = [
        {
            "threshold": float(best_t),
            "min_area_m2": float(a),
            "opening_px": int(r),
            "hysteresis_low": round(best_t - d, 6) if d and best_t - d > 0 else 0.0,
        }
        for a in min_areas_m2
        for r in OPENINGS_PX
        for d in HYSTERESIS_DROPS
    ]
    candidates = list({json.dumps(c, sort_keys=True): c for c in candidates}.values())
    return max(
        candidates,
        key=lambda c: (
            _finite(score(preds, c)["object"]["f1"]),
            -c["min_area_m2"],
            -c["opening_px"],
            -c["hysteresis_low"],
        ),
    )


# --- the whole procedure -----------------------------------------------------------------------


def train_with_crossval(
    config: TrainConfig,
    work_dir: str | Path,
    *,
    seeds: Sequence[int] = (1,),
    jobs: int = 1,
) -> tuple[Path, dict[str, Any]]:
    """Cross-validate ``config`` leave-one-site-out and train it on every labelled site.

    The final model trains beside the folds, in one pool of jobs (it does not depend on them);
    once all are done its card gets the folds' choices and held-out scores
    (:func:`write_crossval_card`).

    Args:
        config: The recipe. ``data.images`` holds one folder per site, ``data.masks`` the masks
            of the labelled sites, ``data.unlabelled`` (optional) more images whose folder names
            are sites too.
        work_dir: Fold folders (links to the data, runs, weights) and ``crossval.json``.
        seeds: One model per held-out site and seed.
        jobs: Runs trained side by side, each on one torch thread.

    Returns:
        The final weights file and the cross-validation result: ``{"sites", "seeds", "folds":
        [{held_out, seed, weights, threshold, min_area_m2, train_scores, held_out_scores,
        held_out_threshold_only, held_out_default}], "summary"}``, also written to
        ``work_dir/crossval.json``.

    Raises:
        ConfigError: the recipe reads a patch dataset.
        DatasetError: fewer than two labelled sites.
    """
    folds = plan_folds(config, Path(work_dir), seeds)
    *weights, final = train_runs([*(c for _, c in folds), config], jobs)
    result = score_folds(folds, weights, Path(work_dir))
    write_crossval_card(final, result)
    return final, result


def plan_folds(
    config: TrainConfig, work: Path, seeds: Sequence[int]
) -> list[tuple[str, TrainConfig]]:
    """``(held-out site, fold recipe)`` per site and seed."""
    if config.data.images is None or config.data.masks is None:
        raise ConfigError(
            "cross-validation needs data.images (one folder per site) and data.masks; "
            "a built .zarr dataset carries no sites."
        )
    groups = labelled_by_site(config.data.images, config.data.masks)
    if len(groups) < 2:
        raise DatasetError(
            f"leave-one-site-out needs at least two labelled sites; found {list(groups)} "
            f"(a site is the folder an image lies in)."
        )
    folds = [(s, fold_config(config, groups, s, seed, work)) for s in groups for seed in seeds]
    logger.info("%d fold models for sites %s", len(folds), ", ".join(groups))
    return folds


def score_folds(
    folds: Sequence[tuple[str, TrainConfig]], weights: Sequence[Path], work: Path
) -> dict[str, Any]:
    """Choose each fold's post-processing on its training sites, then score its held-out site.

    A fold's recipe already holds the links that select its data: ``data.masks`` pairs the
    training sites' images, ``data.val_masks`` the held-out site's.
    """
    results = []
    for (held_out, cfg), w in zip(folds, weights, strict=True):
        images = cfg.data.images or ""
        train_preds = predictions(w, images, cfg.data.masks or "")
        post = choose_postprocessing(train_preds)
        _write_card(w, post)
        held = predictions(w, images, cfg.data.val_masks or "")
        results.append(
            {
                "held_out": held_out,
                "seed": cfg.seed,
                "weights": str(w),
                **post,
                "train_scores": score(train_preds, post),
                "held_out_scores": score(held, post),
                "held_out_threshold_only": score(held, {"threshold": post["threshold"]}),
                "held_out_default": score(held, {"threshold": 0.5}),
            }
        )
    sites = list(dict.fromkeys(site for site, _ in folds))
    result = {"sites": sites, "seeds": sorted({c.seed for _, c in folds}), "folds": results}
    result["summary"] = summarise(results)
    work.mkdir(parents=True, exist_ok=True)
    (work / RESULT).write_text(json.dumps(result, indent=2) + "\n")
    return result


def summarise(folds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over folds of the held-out scores, per post-processing."""

    def stats(values: list[float]) -> dict[str, float]:
        vals = [v for v in values if math.isfinite(v)]
        return {
            "mean": statistics.fmean(vals) if vals else math.nan,
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        }

    threshold = statistics.median(f["threshold"] for f in folds)
    # hysteresis as the folds chose it relative to their own threshold, so that the lower cut
    # stays below the median threshold
    drop = statistics.median_low(
        f["threshold"] - f["hysteresis_low"] if f.get("hysteresis_low") else 0.0 for f in folds
    )
    out: dict[str, Any] = {
        "threshold": threshold,
        "min_area_m2": statistics.median(f["min_area_m2"] for f in folds),
        "opening_px": int(statistics.median_low(f.get("opening_px", 0) for f in folds)),
        "hysteresis_low": round(threshold - drop, 6) if 0 < drop < threshold else 0.0,
    }
    for key in ("held_out_scores", "held_out_threshold_only", "held_out_default"):
        out[key] = {
            "pixel_iou": stats([f[key]["pixel"]["iou"] for f in folds]),
            "object_precision": stats([f[key]["object"]["precision"] for f in folds]),
            "object_recall": stats([f[key]["object"]["recall"] for f in folds]),
        }
    return out


def write_crossval_card(weights: str | Path, crossval: Mapping[str, Any]) -> dict[str, Any]:
    """Write the cross-validation into the card of the final ``weights`` (rewritten in place).

    Each fold's own card already carries its fold's choice, so ``arctic-rts evaluate`` on a
    fold's weights and held-out site reproduces that fold's held-out scores. The final card's
    ``threshold``, ``min_area_m2``, ``opening_px`` and ``hysteresis_low`` become the median
    (the lower median for the last two; hysteresis by its distance below each fold's
    threshold) of the folds' choices (made on
    training sites only); ``metrics.leave_one_site_out`` carries the held-out scores with and
    without post-processing, per fold and summarised, so a user sees what to expect on a place
    the model never saw; ``tested`` says where that was and where it never was.

    Returns:
        The card as written.
    """
    from arctic_rts.model.weights import read_card

    summary = crossval["summary"]
    sites = list(crossval["sites"])
    card = read_card(weights)
    earlier = card.get("metrics") or {}
    # Rewriting a card that already carries a cross-validation keeps the training run's metrics.
    run_metrics = earlier.get("final_model", {}) if "leave_one_site_out" in earlier else earlier
    card["threshold"] = summary["threshold"]
    card["min_area_m2"] = summary["min_area_m2"]
    card["opening_px"] = summary["opening_px"]
    card["hysteresis_low"] = summary["hysteresis_low"]
    card["metrics"] = {
        "leave_one_site_out": {
            "protocol": "one model per held-out labelled site and seed, trained on the other "
            "sites; threshold (best pixel IoU) and minimum area (best object F1) chosen on the "
            "training sites of each fold; objects matched one-to-one at IoU >= 0.5",
            "sites": sites,
            "seeds": list(crossval["seeds"]),
            "summary": summary,
            "folds": [_card_fold(f) for f in crossval["folds"]],
        },
        "final_model": run_metrics,
    }
    per_site = {
        site: statistics.fmean(
            f["held_out_scores"]["pixel"]["iou"] for f in crossval["folds"] if f["held_out"] == site
        )
        for site in sites
    }
    spread = ", ".join(f"{site} {iou:.2f}" for site, iou in per_site.items())
    card["tested"] = (
        f"Scored only on the held-out labelled sites {', '.join(sites)} (leave-one-site-out; "
        f"mean held-out pixel IoU per site: {spread}); never tested elsewhere: not on other "
        "regions, other sensors or processing levels, scenes with snow, cloud or smoke, nor on "
        "full Sentinel-2 tiles."
    )
    return _write_card(weights, card)


#: The score sets of a fold that a card keeps (crossval.json keeps every count).
_SCORE_SETS = ("held_out_scores", "held_out_threshold_only", "held_out_default", "train_scores")


def _card_fold(fold: Mapping[str, Any]) -> dict[str, Any]:
    """A fold as the card records it: its choice and, per score set, the headline scores."""
    keys = ("held_out", "seed", "threshold", "min_area_m2", "opening_px", "hysteresis_low")
    out: dict[str, Any] = {k: fold.get(k, 0) for k in keys}
    for key in _SCORE_SETS:
        obj = fold[key]["object"]
        out[key] = {
            "pixel_iou": fold[key]["pixel"]["iou"],
            **{f"object_{k}": obj[k] for k in ("precision", "recall", "n_matched", "n_pred")},
            "object_n_true": obj["n_true"],
        }
    return out


def _write_card(weights: str | Path, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite the card of ``weights`` with ``updates`` (tensors unchanged, hash checked)."""
    from safetensors.torch import load_file

    from arctic_rts.model.unet import build_unet
    from arctic_rts.model.weights import read_card, save_weights

    card = {**read_card(weights), **updates}
    unet = build_unet(card["architecture"])
    unet.load_state_dict(load_file(str(weights)), strict=True)
    written = save_weights(unet, card, weights)
    if written["sha256"] != card["sha256"]:  # pragma: no cover - the tensors were not touched
        raise RuntimeError(f"the tensors of {weights} changed while its card was rewritten.")
    return written
