# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Training a model: data, a short run, learning curves, predictions
#
# Training in arctic-rts is a second flow beside mapping that meets it only at the weights
# file:
#
# ```
# label polygons + STAC scenes ─► dataset build (zarr patches) ─► train ─► weights (.safetensors + card)
# ```
#
# This notebook goes through it on generated scenes, offline: it builds a patch dataset from
# one synthetic catalog and a validation set from another, trains a *tiny* UNet for a few
# dozen steps on the CPU, draws the learning curves from the run's log and looks at the
# model's predictions next to the true outlines. A few dozen steps teach the network little:
# the point is the tour, not the score. Real runs use the same calls with the paper's widths
# and tens of thousands of steps (`deploy/real_weights/train.toml`).

# %%
import json
import shutil
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")  # figures are written to files; the notebook also shows them inline
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import arctic_rts
from arctic_rts.catalog import serve_catalog
from arctic_rts.demo import generate_demo
from arctic_rts.model.domain import demo_weights
from arctic_rts.model.weights import load_model, read_card
from arctic_rts.train import PatchDataset, build_dataset, load_train_config, train

# Everything this notebook writes goes into one folder beside it (ignored by git).
WORK = Path("demo-out") / "training"
FIGURES = WORK / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
# One torch thread: a tiny network on small patches gains nothing from more, and OpenMP threads
# that wait for each other on a busy machine slow every step down.
torch.set_num_threads(1)
print("arctic-rts", arctic_rts.__version__, "- writing to", WORK.resolve())

# %% [markdown]
# ## 1. Labelled scenes
#
# Two generated catalogs with different seeds: different terrain, slumps, look-alikes and
# clouds over the same two MGRS tiles. Seed 7 is for training, seed 9 for validation; neither
# is the seed of the demo itself (2021). Each catalog comes with the true slump outlines
# (`truth.gpkg`), which serve as the labels, as a hand-digitised inventory would.

# %%
train_catalog = generate_demo(WORK / "seed7", seed=7, size_px=240)
val_catalog = generate_demo(WORK / "seed9", seed=9, size_px=240)
labels = pd.DataFrame(
    {
        "seed": [7, 9],
        "use": ["training", "validation"],
        "true slumps": [len(gpd.read_file(c.truth_path)) for c in (train_catalog, val_catalog)],
    }
)
labels

# %% [markdown]
# ## 2. Patch datasets
#
# `build_dataset` (the `arctic-rts dataset build` command) finds for each labelled image the
# Sentinel-2 scene of each MGRS tile over it (labels with only a year take the least cloudy
# summer scene), rasterises the labels onto the scene's grid, marks pixels outside the
# labelled footprint and invalid pixels as *ignore*, and cuts patches into a zarr store. It
# talks to a STAC API, here the embedded one over each catalog's item folder.

# %%
datasets = {}
for name, catalog in (("train", train_catalog), ("val", val_catalog)):
    out = WORK / f"{name}.zarr"
    shutil.rmtree(out, ignore_errors=True)  # a rerun builds it again
    with serve_catalog(catalog.items_dir) as url:
        datasets[name] = build_dataset(
            catalog.truth_path, out, stac_url=url, patch_size=64, stride=48
        )
    patches = PatchDataset(datasets[name])
    share = np.mean([patches[i]["mask"].mean() for i in range(len(patches))])
    print(f"{name}: {len(patches)} patches of 64 px, {share:.1%} slump pixels")

# %% [markdown]
# ## 3. The run file
#
# A training run is a TOML file (what `arctic-rts train --config run.toml` reads); its
# relative paths are relative to the file. This one trains `supervised` (cross-entropy on the
# labelled patches) on a tiny UNet (widths 4-32) for 100 steps, validates on the seed 9 patches
# every 20 steps, and draws half of each batch from patches with slumps (`positive_share`),
# since slumps cover only a few percent of the pixels. So short a run leaves the network
# unsure, with slump probabilities well below 0.5, so its card gets a threshold of 0.2; real
# runs choose it by cross-validation on training sites (`arctic-rts train --cross-validate`).
# `domain = "generated-demo"` marks the weights as knowing generated scenes only: the map run
# refuses them on real imagery. The other methods (`fixmatchseg`, `adversarial`, `pixeldino`,
# any of them `+elevation`) take unlabelled patches as well.

# %%
run_file = WORK / "run.toml"
run_file.write_text(
    """
method = "supervised"
domain = "generated-demo"
out_dir = "run"
name = "notebook-tiny-unet"
widths = [4, 8, 16, 32]
bottleneck = 32
steps = 100
batch_size = 8
lr = 0.01
threshold = 0.2
warmup_steps = 5
positive_share = 0.5
val_every = 20
checkpoint_every = 0
log_every = 5
device = "cpu"
seed = 0

[data]
dataset = "train.zarr"
val_images = "val.zarr"
patch_size = 64
"""
)
config = load_train_config(run_file)
print(config.method, config.steps, "steps, widths", config.widths)

# %% [markdown]
# ## 4. Train
#
# `train` writes `weights.safetensors` with its card (`weights.json`) into `out_dir`, a log
# line per `log_every` steps into `log.jsonl`, and, in longer runs, checkpoints from which a
# stopped run resumes exactly. At the end it measures the halo of context the model needs for
# tiled inference to match whole-image inference and writes it into the card.

# %%
shutil.rmtree(config.out_dir, ignore_errors=True)  # start afresh on a rerun (no resume)
weights = train(config, progress=False)
card = read_card(weights)
print("weights:", weights)
print("card: bands", card["bands"][:4], "... threshold", card["threshold"], "halo", card["halo"])

# %% [markdown]
# ## 5. Learning curves
#
# Each line of `log.jsonl` holds the step, the loss, the learning rate, the time per step and,
# every `val_every` steps, the validation scores (pixel IoU, precision, recall, F1 summed over
# the whole validation set at the card's threshold).

# %%
log = [json.loads(line) for line in (Path(config.out_dir) / "log.jsonl").read_text().splitlines()]
steps = pd.DataFrame([r for r in log if "loss" in r])
val = pd.DataFrame([{"step": r["step"], **r["val"]} for r in log if r.get("val")])
val[["step", "iou", "precision", "recall", "f1"]]

# %%
fig, (ax_loss, ax_lr, ax_val) = plt.subplots(1, 3, figsize=(13, 3.6))
ax_loss.plot(steps["step"], steps["loss"], marker="o")
ax_loss.set_xlabel("step")
ax_loss.set_ylabel("training loss")
ax_loss.set_title("Loss")
ax_lr.plot(steps["step"], steps["lr"])
ax_lr.set_xlabel("step")
ax_lr.set_ylabel("learning rate")
ax_lr.set_title("Warmup-cosine schedule")
for metric in ("iou", "precision", "recall"):
    ax_val.plot(val["step"], val[metric], marker="o", label=metric)
ax_val.set_xlabel("step")
ax_val.set_ylim(0, 1)
ax_val.set_title("Validation (seed 9)")
ax_val.legend()
fig.tight_layout()
fig.savefig(FIGURES / "learning_curves.png", dpi=100)
plt.show()

# %% [markdown]
# ## 6. A look at predictions
#
# `load_model` returns the network behind its card's normalisation: raw reflectance in (NaN
# where invalid), logits out. Below, the validation patches with the most slump pixels: a
# false-colour view (SWIR, NIR, red: bare wet mud shows dark against the tundra), the true
# mask, the probabilities of the model just trained and those of the bundled demo model
# (PixelDINO, 1000 steps, threshold 0.7) for comparison.

# %%
val_patches = PatchDataset(datasets["val"])
order = np.argsort([-val_patches[i]["mask"].sum() for i in range(len(val_patches))])[:3]
models = {
    "this run": load_model(weights, bands=val_patches.bands)[0],
    "bundled demo model": load_model(demo_weights(), bands=val_patches.bands)[0],
}
band_index = {b: i for i, b in enumerate(val_patches.bands or ())}


def false_colour(image: np.ndarray) -> np.ndarray:
    rgb = image[[band_index["B11"], band_index["B08"], band_index["B04"]]].transpose(1, 2, 0)
    lo, hi = np.nanpercentile(rgb, [2, 98])
    return np.clip((np.nan_to_num(rgb, nan=lo) - lo) / (hi - lo), 0, 1)


fig, axes = plt.subplots(
    len(order), 2 + len(models), figsize=(12, 3.2 * len(order)), layout="constrained"
)
for row, index in zip(axes, order):
    sample = val_patches[int(index)]
    row[0].imshow(false_colour(sample["image"]))
    row[1].imshow(sample["mask"][0], cmap="gray", vmin=0, vmax=1)
    x = torch.from_numpy(sample["image"])[None]
    for ax, (name, model) in zip(row[2:], models.items()):
        with torch.no_grad():
            prob = torch.sigmoid(model(x))[0, 0].numpy()
        shown = ax.imshow(prob, cmap="magma", vmin=0, vmax=1)
        ax.contour(sample["mask"][0], levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(name)
    for ax in row:
        ax.set_xticks([])
        ax.set_yticks([])
    row[0].set_title(f"patch {int(index)}: B11/B08/B04")
    row[1].set_title("true mask")
fig.colorbar(shown, ax=axes, shrink=0.6, label="slump probability")
fig.savefig(FIGURES / "predictions.png", dpi=90)
plt.show()

# %% [markdown]
# ## Next
#
# * The same from a shell: `arctic-rts dataset build --labels truth.gpkg --stac URL --out
#   train.zarr`, then `arctic-rts train --config run.toml`, then `arctic-rts evaluate` on
#   image and mask chips.
# * `arctic-rts train --config run.toml --cross-validate --seeds 1 2 3` runs leave-one-site-out
#   cross-validation and chooses the threshold and minimum area on training sites only.
# * Map with the new weights: `arctic-rts map ... --weights demo-out/training/run/weights.safetensors`.
