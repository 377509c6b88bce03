"""Benchmark of the training methods on the real data in ../shared/data (not part of make test).

Usage::

    .venv/bin/python bench/train_methods.py [--steps 300] [--only s2,highres,elevation,timing]

Datasets:

* ``s2``: the real Sentinel-2 chips (~101 px, bands B04 B03 B02 B08 B11); labelled sites s002 and
  s003 train, the labelled site s004 (never seen in training) validates, sites s001, s005, s008
  are the unlabelled set. Training patches are random 96 px crops; validation runs on whole chips.
* ``highres``: the high-resolution RGB RTS chips; a fixed 20 % of the images validate, 10 % of
  the rest are the labelled training set and the other 90 % the unlabelled set.
* ``elevation``: generated demo scenes with their DEM (the real chips come without one):
  methods with and without the elevation pretext.
* ``timing``: seconds per training step of every method, measured in this one process on the
  ``s2`` data, as a ratio to ``supervised``.

Each run's result is written as it finishes to ``bench/results/<dataset>/<method>/seed<k>.json``
(weights beside it as ``.safetensors``, git-ignored), so the benchmark resumes where it stopped
and can be completed over several invocations. The table in BENCHMARKS.md (between this
script's heading, up to the next ``## `` heading) is rewritten from whatever results exist.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import mean_std, rewrite_section  # noqa: E402

from arctic_rts.train.config import (  # noqa: E402
    AdversarialConfig,
    PixelDINOConfig,
    TrainConfig,
    TrainDataConfig,
)
from arctic_rts.train.loop import train  # noqa: E402

SHARED = Path(os.environ.get("ARCTIC_RTS_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"
#: This script's section of BENCHMARKS.md: from this heading to the next "## " heading.
HEADING = "## Training methods (bench/train_methods.py)"
#: The sections of the leave-one-site-out comparison and of the step times: each is rewritten
#: only from its own results, so one part can run without erasing another's figures.
HEADING_LOSO = "## Training methods on real chips, leave-one-site-out (bench/train_methods.py)"
HEADING_TIMING = "## Time per training step (bench/train_methods.py)"

#: Methods and seeds per dataset: >= 3 seeds for the two methods compared most.
PLAN: dict[str, list[tuple[str, int]]] = {
    name: [
        ("supervised", 0),
        *[("supervised+aug", s) for s in (0, 1, 2)],
        ("fixmatchseg", 0),
        ("adversarial", 0),
        *[("pixeldino", s) for s in (0, 1, 2)],
    ]
    for name in ("highres",)
}
PLAN["elevation"] = [
    ("supervised+aug", 0),
    ("supervised+aug+elevation", 0),
    ("pixeldino", 0),
    ("pixeldino+elevation", 0),
]

#: Version of the run recipe in :func:`make_config`; results of another recipe are ignored
#: (recipe 1 lacked ``positive_share`` and collapsed to the class prior at 200 steps).
RECIPE = 2

#: A CPU-sized UNet (the paper's is 16/32/64/128 + 256): half the widths.
WIDTHS, BOTTLENECK = (8, 16, 32, 64), 128


def _link_split(folder: Path, files: list[Path]) -> Path:
    """A folder of symlinks to ``files`` (the real data is never copied)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for f in files:
        (folder / f.name).symlink_to(f)
    return folder


def split_s2() -> dict[str, str]:
    """Labelled s002+s003 for training, s004 for validation, s001/s005/s008 unlabelled."""
    base = SHARED / "s2_rts_chips_alaska_canada"
    chips = base / "chips"
    masks = sorted((base / "masks").glob("*.tif"))
    split = RESULTS / "_splits" / "s2"
    train_masks = [m for m in masks if m.name[:4] in ("s002", "s003")]
    val_masks = [m for m in masks if m.name[:4] == "s004"]
    train_images = [chips / m.name[:4] / m.name for m in train_masks]
    val_images = [chips / m.name[:4] / m.name for m in val_masks]
    unlabelled = [
        f for site in ("s001", "s005", "s008") for f in sorted((chips / site).glob("*.tif"))
    ]
    return {
        "images": str(_link_split(split / "train_images", train_images)),
        "masks": str(_link_split(split / "train_masks", train_masks)),
        "val_images": str(_link_split(split / "val_images", val_images)),
        "val_masks": str(_link_split(split / "val_masks", val_masks)),
        "unlabelled": str(_link_split(split / "unlabelled", unlabelled)),
    }


def split_highres(label_share: float = 0.1, val_share: float = 0.2) -> dict[str, str]:
    """A fixed shuffle: 20 % validation; of the rest 10 % labelled, 90 % unlabelled."""
    base = SHARED / "rts_chips_highres"
    images = sorted((base / "images").glob("*.jpg"))
    order = list(range(len(images)))
    random.Random(0).shuffle(order)
    n_val = round(val_share * len(images))
    val = [images[i] for i in order[:n_val]]
    rest = [images[i] for i in order[n_val:]]
    n_lab = round(label_share * len(rest))
    lab, unl = rest[:n_lab], rest[n_lab:]
    split = RESULTS / "_splits" / "highres"
    return {
        "images": str(_link_split(split / "train_images", lab)),
        "masks": str(_link_split(split / "train_masks", [base / "masks" / f.name for f in lab])),
        "val_images": str(_link_split(split / "val_images", val)),
        "val_masks": str(_link_split(split / "val_masks", [base / "masks" / f.name for f in val])),
        "unlabelled": str(_link_split(split / "unlabelled", unl)),
    }


def elevation_data() -> dict[str, str]:
    """Patch datasets with DEM from generated demo scenes (built once): train and validation.

    Training: the slumps of one generated landscape (seed 101) as labels, its least cloudy
    scene per tile as patches, and that area's scenes again as the unlabelled set; validation:
    another landscape (seed 102), never seen in training.
    """
    import geopandas as gpd
    from shapely.geometry import box

    from arctic_rts.catalog import serve_catalog
    from arctic_rts.demo import generate_demo
    from arctic_rts.train.build import build_dataset

    base = RESULTS / "_splits" / "elevation"

    def build(seed: int, name: str) -> Path:
        out = base / f"{name}.zarr"
        if (out / "zarr.json").exists():
            return out
        cat = generate_demo(base / f"demo{seed}", seed=seed, size_px=480)
        footprint = gpd.GeoDataFrame({"image_id": [None]}, geometry=[box(*cat.bbox)], crs=4326)
        with serve_catalog(cat.items_dir) as url:
            build_dataset(
                cat.truth_path,
                out,
                stac_url=url,
                footprints=footprint,
                bands=("B04", "B03", "B02", "B08", "B11"),
                patch_size=96,
                stride=48,
                unlabelled_regions=[cat.bbox],
                unlabelled_year=cat.years[0],
                dem=cat.dem_path,
            )
        return out

    return {"dataset": str(build(101, "train")), "val_images": str(build(102, "val"))}


def make_config(
    dataset: str, data: dict[str, str], method: str, seed: int, steps: int, out: Path
) -> TrainConfig:
    """The run configuration shared by every method of a dataset (only method and seed vary)."""
    bands = ("B04", "B03", "B02") if dataset == "highres" else None
    return TrainConfig(
        data=TrainDataConfig(**data, bands=bands, patch_size=96),  # type: ignore[arg-type]
        method=method,
        out_dir=str(out),
        widths=WIDTHS,
        bottleneck=BOTTLENECK,
        steps=steps,
        batch_size=8,
        unlabelled_batch_size=8,
        lr=2e-3,
        warmup_steps=max(1, steps // 20),
        seed=seed,
        device="auto",
        val_every=steps,
        checkpoint_every=max(10, steps // 4),
        log_every=max(1, steps // 10),
        # slumps cover a few % of the pixels: half of each labelled batch from patches with
        # slumps, and the head's bias starts at the prior (see TrainConfig.positive_share)
        positive_share=0.5,
        # short runs: a teacher that averages over ~100 steps, not ~250 (paper: 0.996 for 200k)
        pixeldino=PixelDINOConfig(teacher_momentum=0.99),
        adversarial=AdversarialConfig(semi_start=steps // 4),
    )


# --- leave-one-site-out on the real Sentinel-2 chips -------------------------------------------

#: In the order they run: PixelDINO first (the bundled model's own cross-validation, reused when
#: ``make real-weights`` has run), compared with supervised+aug.
LOSO_METHODS = ("pixeldino", "supervised+aug", "supervised", "fixmatchseg", "adversarial")
LOSO_SEEDS = (1, 2, 3)
#: The bundled real-imagery model's recipe: every method trains with it, only the method (and,
#: for the semi-supervised ones, the unlabelled chips) differ.
RECIPE_TOML = ROOT / "deploy" / "real_weights" / "train.toml"
#: Where ``make real-weights`` trains (its cross-validation is the PixelDINO arm).
REAL_TRAIN = (ROOT / ".real-train").resolve()


def loso_config(method: str) -> TrainConfig:
    """The bundled model's recipe with ``method``; semi-supervised methods read every chip as
    unlabelled data (each fold drops its held-out site's), the others none."""
    import dataclasses

    from arctic_rts.train.loop import load_train_config
    from arctic_rts.train.methods import METHODS

    config = load_train_config(RECIPE_TOML)
    if method == config.method:
        return config
    unlabelled = config.data.images if METHODS[method].uses_unlabelled else None
    data = dataclasses.replace(config.data, unlabelled=unlabelled)
    out = REAL_TRAIN / "methods" / method.replace("+", "_") / "final"
    # the recipe's notes say why the bundled model is its method: not these runs' story
    return dataclasses.replace(config, method=method, data=data, out_dir=str(out), notes="")


def loso_work(config: TrainConfig) -> Path:
    """The cross-validation folder of a recipe (as ``arctic-rts train --cross-validate``)."""
    out = Path(config.out_dir)
    return out.parent / f"{out.name}-crossval"


def run_loso(
    jobs: int, score_finished: bool = False, methods: tuple[str, ...] = LOSO_METHODS
) -> dict[str, Any]:
    """Cross-validate every method leave-one-site-out, ``jobs`` runs side by side.

    Runs go seed by seed (every site of seed 1 first), so that an interrupted benchmark has
    whole seeds to compare. Thresholds and post-processing are chosen on each fold's training
    sites (:func:`arctic_rts.train.crossval.score_folds`); finished runs are reused on a rerun.
    Each method is scored and the table rewritten as soon as its runs are done;
    ``score_finished`` trains nothing and scores the runs that have finished.
    """
    from arctic_rts.train.crossval import finished_run, plan_folds, score_folds, train_runs

    summary = {}
    for method in methods:
        config = loso_config(method)
        work = loso_work(config)
        folds = sorted(plan_folds(config, work, LOSO_SEEDS), key=lambda f: (f[1].seed, f[0]))
        if score_finished:
            folds = [f for f in folds if finished_run(f[1]) is not None]
            if not folds:
                continue
            weights = [w for _, c in folds if (w := finished_run(c)) is not None]
        else:
            weights = train_runs([cfg for _, cfg in folds], jobs)
        summary[method] = score_folds(folds, weights, work)["summary"]
        print(f"loso {method}: {json.dumps(summary[method]['held_out_scores'])}", flush=True)
        write_table()
    return summary


def _loso_results() -> dict[str, dict[str, Any]]:
    out = {}
    for method in LOSO_METHODS:
        path = loso_work(loso_config(method)) / "crossval.json"
        if path.is_file():
            out[method] = json.loads(path.read_text())
    return out


def _paired_difference(a: dict[str, Any], b: dict[str, Any], level: str, key: str) -> str:
    """Mean and 95 % t-interval of a - b in the held-out score ``[level][key]``, paired by
    (site, seed)."""
    from scipy import stats

    def by_run(result: dict[str, Any]) -> dict[tuple[str, int], float]:
        return {
            (f["held_out"], f["seed"]): f["held_out_scores"][level][key] for f in result["folds"]
        }

    ra, rb = by_run(a), by_run(b)
    diffs = [ra[k] - rb[k] for k in sorted(ra.keys() & rb.keys())]
    if len(diffs) < 2:
        return "n/a"
    mean = statistics.fmean(diffs)
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return f"{mean:+.3f} (95 % interval {mean - half:+.3f} to {mean + half:+.3f}, n = {len(diffs)})"


def _last_logged(log: Path, key: str) -> float:
    """The last value of ``key`` in a run's ``log.jsonl`` (NaN when none)."""
    values = (
        [json.loads(line).get(key) for line in log.read_text().splitlines()]
        if log.is_file()
        else []
    )
    found = [float(v) for v in values if v is not None]
    return found[-1] if found else math.nan


def _fold_curve(result: dict[str, Any]) -> str:
    """Held-out pixel IoU at each tenth of training, mean over the runs (from their logs)."""
    curves: dict[int, list[float]] = {}
    for fold in result["folds"]:
        log = Path(fold["weights"]).parent / "log.jsonl"
        for line in log.read_text().splitlines() if log.is_file() else []:
            record = json.loads(line)
            if "val" in record and "iou" in record["val"]:
                curves.setdefault(int(record["step"]), []).append(float(record["val"]["iou"]))
    return ", ".join(f"{step}: {statistics.fmean(v):.3f}" for step, v in sorted(curves.items()))


def _site_iou(folds: list[dict[str, Any]], site: str) -> float:
    """Mean held-out pixel IoU of ``site`` over its seeds."""
    ious = [f["held_out_scores"]["pixel"]["iou"] for f in folds if f["held_out"] == site]
    return statistics.fmean(ious) if ious else math.nan


def loso_table() -> list[str]:
    """The leave-one-site-out table (BENCHMARKS.md lines) from the saved cross-validations."""
    results = _loso_results()
    if not results:
        return []
    any_result = next(iter(results.values()))
    sites = any_result["sites"]
    recipe = loso_config("supervised+aug")
    lines = [
        f"`bench/train_methods.py --only loso`, {recipe.steps} steps per run: labelled sites "
        f"{', '.join(sites)} of "
        "`s2_rts_chips_alaska_canada` (bands B04 B03 B02 B08 B11), one model per held-out site "
        f"and seed ({', '.join(map(str, LOSO_SEEDS))}), trained on the other two sites with the "
        "bundled model's recipe (`deploy/real_weights/train.toml`: UNet widths "
        f"{'/'.join(map(str, recipe.widths))} + {recipe.bottleneck}, {recipe.data.patch_size} px "
        f"patches, batch {recipe.batch_size} labelled (+ {recipe.unlabelled_batch_size} "
        f"unlabelled), AdamW lr {recipe.lr:g} warmup-cosine, the paper's PixelDINO settings); "
        "the PixelDINO rows are the bundled model's own cross-validation. The "
        "semi-supervised methods also see every chip of the other sites (s001, s005, s008 and "
        "the labelled sites' images) as unlabelled data. Threshold (best pixel IoU), then "
        "minimum area, opening and hysteresis (best object F1) chosen on each fold's training "
        "sites, then applied to its held-out site. Mean ± std over the n (site, seed) runs; "
        "per-site columns are pixel IoU means over seeds.",
        "",
        "| method | n | pixel IoU | object precision | object recall | "
        + " | ".join(f"IoU {s}" for s in sites)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(sites),
    ]
    for method, result in results.items():
        folds = result["folds"]
        held = [f["held_out_scores"] for f in folds]
        cells = [
            mean_std([h["pixel"]["iou"] for h in held]),
            mean_std([h["object"]["precision"] for h in held]),
            mean_std([h["object"]["recall"] for h in held]),
        ]
        per_site = [f"{_site_iou(folds, site):.3f}" for site in sites]
        lines.append(f"| {method} | {len(folds)} | {' | '.join(cells + per_site)} |")
    lines.append("")
    counts = {m: len(r["folds"]) for m, r in results.items()}
    if len(set(counts.values())) > 1:
        lines += [
            "Not every run has finished ("
            + ", ".join(f"{m}: {n} of {len(sites) * len(LOSO_SEEDS)}" for m, n in counts.items())
            + "): means over different mixes of sites are not comparable (the sites differ far "
            "more than the methods); compare the paired difference below, over the runs both "
            "methods have.",
            "",
        ]
    if "pixeldino" in results and "supervised+aug" in results:
        pair = results["pixeldino"], results["supervised+aug"]
        lines += [
            "PixelDINO minus supervised+aug, paired by held-out site and seed: pixel IoU "
            f"{_paired_difference(*pair, 'pixel', 'iou')}; object F1 "
            f"{_paired_difference(*pair, 'object', 'f1')}.",
            "",
        ]
    for method in ("supervised", "fixmatchseg", "adversarial"):
        if method in results and "supervised+aug" in results:
            pair = results[method], results["supervised+aug"]
            lines += [
                f"{method} minus supervised+aug, paired likewise: pixel IoU "
                f"{_paired_difference(*pair, 'pixel', 'iou')}; object F1 "
                f"{_paired_difference(*pair, 'object', 'f1')}.",
                "",
            ]
    if "pixeldino" in results:
        logs = [Path(f["weights"]).parent / "log.jsonl" for f in results["pixeldino"]["folds"]]
        last = {
            key: [_last_logged(log, key) for log in logs]
            for key in ("dino", "teacher_entropy", "teacher_marginal_entropy")
        }
        information = [
            m - p
            for m, p in zip(last["teacher_marginal_entropy"], last["teacher_entropy"], strict=True)
        ]
        k = loso_config("pixeldino").pixeldino.classes
        lines += [
            f"PixelDINO's self-distillation loss at the end of training: {mean_std(last['dino'])} "
            f"over the runs; ln {k} = {math.log(k):.3f} is its value for uniform teacher targets "
            "(no signal). The teacher's targets at the last logged step: entropy per pixel "
            f"{mean_std(last['teacher_entropy'])}, of their batch mean "
            f"{mean_std(last['teacher_marginal_entropy'])}, the difference (what the targets tell "
            f"about the pixel; 0 when every pixel gets the same distribution) "
            f"{mean_std(information)} nats. What the teacher's targets carry at other "
            'temperatures: the section "PixelDINO\'s teacher targets on the real chips".',
            "",
        ]
    for method in ("supervised", "supervised+aug"):
        if method in results:
            curve = _fold_curve(results[method])
            lines += [
                f"Held-out pixel IoU at threshold 0.5 along training, {method} "
                f"(step: mean over runs): {curve}.",
                "",
            ]
    return lines


def _claim(work: Path) -> bool:
    """Mark ``work`` as being trained by this process; False if a live process holds it."""
    work.mkdir(parents=True, exist_ok=True)
    flag = work / "RUNNING"
    if flag.exists():
        try:
            os.kill(int(flag.read_text()), 0)
            return False
        except (ProcessLookupError, ValueError):
            pass  # its process died: resume from its checkpoint
    flag.write_text(str(os.getpid()))
    return True


def run_one(
    dataset: str, data: dict[str, str], method: str, seed: int, steps: int
) -> dict[str, Any] | None:
    """Train one (method, seed) unless its result exists or another process is on it."""
    slug = method.replace("+", "_")
    target = RESULTS / dataset / slug / f"seed{seed}.json"
    if target.exists():
        record = json.loads(target.read_text())
        if record.get("steps") == steps and record.get("recipe") == RECIPE:
            return record  # type: ignore[no-any-return]
    work = RESULTS / "_runs" / dataset / slug / f"steps{steps}_seed{seed}"
    if not _claim(work):
        return None  # another invocation is training this one right now
    cfg = make_config(dataset, data, method, seed, steps, work)
    t0 = time.perf_counter()
    try:
        weights = train(cfg, progress=True)
    finally:
        (work / "RUNNING").unlink(missing_ok=True)
    card = json.loads(weights.with_suffix(".json").read_text())
    record = {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "steps": steps,
        "recipe": RECIPE,
        "metrics": card["metrics"],
        "wall_s": time.perf_counter() - t0,
        "device": str(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(weights, target.with_suffix(".safetensors"))
    shutil.copy(weights.with_suffix(".json"), target.with_suffix(".card.json"))
    target.write_text(json.dumps(record, indent=2) + "\n")
    return record


#: Rounds of the step-time measurement (the methods take turns in each).
TIMING_ROUNDS = 5


def measure_timing(
    data: dict[str, str], steps: int = 20, rounds: int = TIMING_ROUNDS
) -> dict[str, float]:
    """Median seconds per step of every method on the s2 data, all in this process.

    The methods take turns for ``rounds`` rounds, so that load from other processes on the
    machine hits every method alike; each run is ``steps`` optimiser steps on one thread. The
    per-round times are kept too: ratios are taken within a round, then their median.
    """
    from arctic_rts.train.methods import METHODS

    runs: dict[str, list[float]] = {m: [] for m in METHODS}
    parts: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, seconds in _pass_times().items():
            parts.setdefault(name, []).append(seconds)
        for method in METHODS:
            logs: list[dict[str, Any]] = []
            work = RESULTS / "_timing" / method.replace("+", "_")
            shutil.rmtree(work, ignore_errors=True)
            cfg = make_config("s2", data, method, 0, steps, work)
            cfg = TrainConfig(
                **{**cfg.__dict__, "val_every": 0, "checkpoint_every": 0, "log_every": steps}
            )
            train(cfg, progress=False, on_log=logs.append)
            runs[method].append(float(logs[-1]["s_per_step"]))
    out = {m: statistics.median(v) for m, v in runs.items()}
    record = {
        **out,
        "_parts": {k: statistics.median(v) for k, v in parts.items()},
        "_rounds": runs,
    }
    (RESULTS / "timing.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def _pass_times(reps: int = 20) -> dict[str, float]:
    """Seconds of the two network passes a PixelDINO step adds to a supervised one, as PixelDINO
    runs them on a batch of 8 patches of 96 px (the recipe's network): the student's forward and
    backward to its DINO head, and the teacher's forward to its DINO head without gradient; and
    the student's two passes (labelled, unlabelled) against one pass over both batches joined."""
    from arctic_rts.model.unet import UNet
    from arctic_rts.train.methods.base import NormalizedNet

    net = NormalizedNet(
        UNet(5, widths=WIDTHS, bottleneck=BOTTLENECK, dino_classes=24), [0.1] * 5, [0.1] * 5
    )
    x, u = torch.rand(8, 5, 96, 96), torch.rand(8, 5, 96, 96)

    def student() -> None:  # the unlabelled pass: the DINO head alone
        net.forward_heads(u, ("dino",))["dino"].mean().backward()

    def student_all_heads() -> None:  # the same loss, the forward through every head and stage
        net.forward_heads(u)["dino"].mean().backward()

    def teacher() -> None:
        with torch.no_grad():
            net.forward_dino(x)

    def two_passes() -> None:  # the student as PixelDINO runs it: labelled, then unlabelled
        a, b = net.forward_heads(x, ("logits",)), net.forward_heads(u, ("dino",))
        (a["logits"].mean() + b["dino"].mean()).backward()

    def joined_pass() -> None:  # both batches in one pass (the network is per sample)
        heads = net.forward_heads(torch.cat([x, u]), ("logits", "dino"))
        (heads["logits"][:8].mean() + heads["dino"][8:].mean()).backward()

    out = {}
    for name, fn in (
        ("student_pass", student),
        ("student_pass_all_heads", student_all_heads),
        ("teacher_pass", teacher),
        ("two_passes", two_passes),
        ("joined_pass", joined_pass),
    ):
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        out[name] = (time.perf_counter() - t0) / reps
    return out


def _verdict(records: list[dict[str, Any]]) -> str:
    """One honest sentence per dataset: which method has the best mean IoU, or that none learnt."""
    ious: dict[str, list[float]] = {}
    for r in records:
        ious.setdefault(r["method"], []).append(float(r["metrics"].get("iou", math.nan)))
    means = {m: statistics.mean(v) for m, v in ious.items()}
    if all(v == 0 or math.isnan(v) for v in means.values()):
        return (
            "Every run predicts no slump at threshold 0.5 (IoU 0): at this step budget no "
            "probability on the validation set reaches 0.5, so this table ranks nothing; rerun "
            "with more --steps."
        )
    best = max(means, key=lambda m: means[m])
    return f"Best mean IoU: **{best}** ({means[best]:.3f})."


def write_table() -> str:
    """Rewrite this script's sections of BENCHMARKS.md, each from its own saved results."""
    out = ""
    loso = loso_table()
    if loso:
        out += rewrite_section(HEADING_LOSO, [HEADING_LOSO, "", *loso])
    timing = timing_table()
    if timing:
        out += rewrite_section(HEADING_TIMING, [HEADING_TIMING, "", *timing])
    small = small_budget_tables()
    if small:
        out += rewrite_section(HEADING, small)
    return out


def small_budget_tables() -> list[str]:
    """The short-budget tables of the generated and high-resolution data (empty without any)."""
    lines = [
        HEADING,
        "",
        "Validation on data never seen in training; pixel metrics with TP/FP/FN summed over the "
        "whole validation set; mean ± std over seeds (n = number of seeds). CPU-sized runs: UNet "
        f"widths {'/'.join(map(str, WIDTHS))} + {BOTTLENECK}, batch 8 labelled + 8 unlabelled, "
        "96 px patches (half of each labelled batch from patches with slumps), AdamW lr 2e-3 "
        "warmup-cosine, teacher EMA 0.99 -> 1, the paper's augmentation ranges. These are a few "
        "hundred steps, against the paper's 200k: they compare methods at a tiny budget and say "
        "nothing about converged accuracy.",
        "",
    ]
    found = False
    for dataset in ("highres", "elevation"):
        records = [
            json.loads(p.read_text())
            for p in sorted((RESULTS / dataset).glob("*/seed*.json"))
            if not p.name.endswith(".card.json")
        ]
        records = [r for r in records if r.get("recipe") == RECIPE]
        if not records:
            continue
        found = True
        steps = sorted({r["steps"] for r in records})
        lines += [
            f"### {dataset} ({', '.join(map(str, steps))} steps per run)",
            "",
            "| method | n | IoU | F1 | precision | recall |",
            "|---|---|---|---|---|---|",
        ]
        for method in dict.fromkeys(m for m, _ in PLAN[dataset]):
            rs = [r for r in records if r["method"] == method]
            if not rs:
                continue
            cells = [
                mean_std([float(r["metrics"].get(k, math.nan)) for r in rs])
                for k in ("iou", "f1", "precision", "recall")
            ]
            lines.append(f"| {method} | {len(rs)} | {' | '.join(cells)} |")
        lines.append("")
        lines.append(_verdict(records))
        lines.append("")
    return lines if found else []


def _round_ratio(rounds: dict[str, list[float]], method: str, base: str) -> str:
    """Median over rounds of ``method``'s time per step over ``base``'s in the same round."""
    if base not in rounds or method not in rounds:
        return ""
    pairs = zip(rounds[method], rounds[base], strict=True)
    return f"{statistics.median(m / b for m, b in pairs):.2f}"


def timing_table() -> list[str]:
    """The step-time table from ``timing.json`` (empty without it)."""
    timing_file = RESULTS / "timing.json"
    lines: list[str] = []
    if timing_file.exists():
        timing = json.loads(timing_file.read_text())
        rounds = timing.pop("_rounds", None) or {m: [s] for m, s in timing.items() if m[0] != "_"}
        base = timing.get("supervised")
        n_rounds = len(next(iter(rounds.values())))
        lines += [
            "One process, one thread, the real chips (s002+s003 labelled, s001/s005/s008 "
            "unlabelled), UNet widths 8/16/32/64 + 128, batch 8 + 8, 96 px. Median of "
            f"{n_rounds} rounds of 20 steps, the methods taking turns in one process; the "
            "ratios are the median over rounds of the ratio within a round. The "
            "semi-supervised methods also pass a batch of 8 unlabelled patches through the "
            "student each step, so their floor is about 2x a supervised step before any teacher, "
            "discriminator or augmentation work (PixelDINO's a little less: its unlabelled pass "
            "stops at the half-resolution decoder stage that its DINO head reads).",
            "",
            "| method | s/step | ratio to supervised | ratio to supervised+aug |",
            "|---|---|---|---|",
        ]
        parts = timing.pop("_parts", None)
        for method, s in timing.items():
            ratio, ratio_aug = (
                _round_ratio(rounds, method, b) for b in ("supervised", "supervised+aug")
            )
            lines.append(f"| {method} | {s:.3f} | {ratio} | {ratio_aug} |")
        lines.append("")
        if parts and base:
            student, teacher = parts["student_pass"], parts["teacher_pass"]
            floor = 1 + (student + teacher) / base
            lines += [
                "Measured in the same rounds: the student's forward and backward to its DINO head "
                f"on 8 patches takes {student:.3f} s, the teacher's forward to its DINO head "
                f"{teacher:.3f} s. A "
                "PixelDINO step is a supervised step plus both (eqs. 1-4: the student sees the "
                "unlabelled batch, the teacher labels it), so without augmentation, warping or "
                f"EMA it costs at least 1 + ({student:.3f} + {teacher:.3f}) / {base:.3f} = "
                f"{floor:.2f}x a supervised step.",
                "",
            ]
            if "student_pass_all_heads" in parts:
                lines += [
                    "The student's unlabelled pass stops at the half-resolution decoder stage "
                    "that the DINO head reads; with its forward through every stage and head "
                    "(the backward from the same loss) it takes "
                    f"{parts['student_pass_all_heads']:.3f} s against {student:.3f} s, in the "
                    "same rounds.",
                    "",
                ]
            if "joined_pass" in parts:
                joined, two = parts["joined_pass"], parts["two_passes"]
                verdict = "lowers" if joined < two else "does not lower"
                lines += [
                    "One student pass over both batches (16 patches; the network treats each "
                    f"sample alone) instead of two over 8 each: {joined:.3f} s against "
                    f"{two:.3f} s, forward and backward, in the same rounds: joining the "
                    f"batches {verdict} that floor on this CPU.",
                    "",
                ]
    return lines


def shared_data_missing() -> bool:
    """True, with a line on stderr, when the real data folder is absent."""
    if (SHARED / "README.md").is_file():
        return False
    print(f"real data folder {SHARED} is absent (set ARCTIC_RTS_SHARED_DATA)", file=sys.stderr)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run what is missing of the benchmark, then rewrite the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--only", default="timing,loso,highres,elevation")
    parser.add_argument("--jobs", type=int, default=2, help="loso runs trained side by side")
    parser.add_argument(
        "--score-finished",
        action="store_true",
        help="loso: train nothing, score the runs that have finished",
    )
    parser.add_argument(
        "--methods",
        default=",".join(LOSO_METHODS),
        help="loso: the methods to train, in this order",
    )
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if shared_data_missing():
        return 2
    parts = args.only.split(",")
    if not args.table_only:
        splits = {"highres": split_highres, "elevation": elevation_data}
        for part in parts:
            if part == "timing":
                print("timing:", measure_timing(split_s2()), flush=True)
                continue
            if part == "loso":
                methods = tuple(m for m in args.methods.split(",") if m)
                unknown = sorted(set(methods) - set(LOSO_METHODS))
                if unknown:
                    parser.error(f"--methods: unknown {', '.join(unknown)}")
                run_loso(args.jobs, args.score_finished, methods)
                continue
            data = splits[part]()
            for method, seed in PLAN[part]:
                record = run_one(part, data, method, seed, args.steps)
                if record is None:
                    print(f"{part} {method} seed{seed}: running elsewhere, skipped", flush=True)
                    continue
                print(f"{part} {method} seed{seed}: {record['metrics']}", flush=True)
                write_table()
    print(write_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
