"""The bundled real-imagery model's leave-one-site-out table in BENCHMARKS.md.

Usage (after ``make real-weights``, which writes the cross-validation beside the run)::

    .venv/bin/python bench/real_model.py [--crossval .real-train/final-crossval/crossval.json]

Rewrites this script's section of BENCHMARKS.md (from its heading to the next ``## ``
heading) from the cross-validation result: per held-out site and seed the threshold and
post-processing chosen on the training sites, and held-out pixel IoU and object
precision/recall with the chosen post-processing, with each step alone on top of the chosen
threshold (the folds' models are rerun for those), with the threshold alone, and at 0.5.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from report import mean_std, rewrite_section

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## The bundled real-imagery model (make real-weights, bench/real_model.py)"
ROWS = (
    ("held_out_scores", "chosen post-processing (all steps as chosen)"),
    ("held_out_threshold_only", "chosen threshold alone"),
    ("held_out_default", "threshold 0.5 alone"),
    ("train_scores", "training sites, chosen post-processing"),
)
#: One post-processing step at a time on top of each fold's chosen threshold (held-out site).
STEPS = (
    ("+ minimum area only (the fold's choice)", lambda f: {"min_area_m2": f["min_area_m2"]}),
    ("+ opening 1 px only", lambda f: {"opening_px": 1}),
    (
        "+ hysteresis only (lower cut threshold - 0.2)",
        lambda f: {"hysteresis_low": f["threshold"] - 0.2},
    ),
)
CHIPS = ROOT.parent / "shared" / "data" / "s2_rts_chips_alaska_canada" / "chips"


def step_scores(result: dict[str, Any], images: Path) -> dict[str, list[dict[str, Any]]]:
    """Held-out scores of each fold with one post-processing step at a time (model rerun)."""
    from arctic_rts.train.crossval import predictions, score

    out: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in STEPS}
    for fold in result["folds"]:
        val_masks = Path(fold["weights"]).parents[1] / "data" / "val_masks"
        held = predictions(fold["weights"], images, val_masks)
        for label, step in STEPS:
            out[label].append(score(held, {"threshold": fold["threshold"], **step(fold)}))
    return out


def section(
    result: dict[str, Any], card: dict[str, Any], steps: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """The Markdown lines of the section."""
    folds = result["folds"]
    training = card["training"]
    hyper = training["hyperparameters"]
    lines = [
        HEADING,
        "",
        f"Model `{card['name']}` ({training['method']}, UNet widths "
        f"{'/'.join(map(str, card['architecture']['widths']))} + "
        f"{card['architecture']['bottleneck']}, {training['steps']} steps, batch "
        f"{hyper['batch_size']}, {card['patch_size']} px patches), bands "
        f"{' '.join(card['bands'])}, Sentinel-2 L2A chips of "
        "`../shared/data/s2_rts_chips_alaska_canada`. One model per held-out labelled site "
        f"(seeds {', '.join(map(str, result['seeds']))}), trained on the other sites; threshold "
        "(best pixel IoU), then minimum object area, opening and hysteresis together (best "
        "object F1) chosen on the training sites of each fold, never on the held-out one. Pixel "
        "scores compare the kept objects' pixels with the whole truth, counts summed over each "
        "site's chips; objects matched one-to-one at IoU >= 0.5. The shipped model is trained "
        "on all labelled sites with the folds' median choice: threshold "
        f"{card['threshold']}, minimum area {card['min_area_m2']:g} m², opening "
        f"{card.get('opening_px', 0)} px, hysteresis lower cut "
        f"{card.get('hysteresis_low') or 'off'}.",
        "",
        "| held-out site | seed | threshold | min area m² | opening px | hysteresis low "
        "| pixel IoU | object precision | object recall | objects (matched / predicted / true) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in folds:
        s = f["held_out_scores"]
        o = s["object"]
        lines.append(
            f"| {f['held_out']} | {f['seed']} | {f['threshold']} | {f['min_area_m2']:g} | "
            f"{f.get('opening_px', 0)} | {f.get('hysteresis_low') or 'off'} | "
            f"{s['pixel']['iou']:.3f} | {o['precision']:.3f} | {o['recall']:.3f} | "
            f"{o['n_matched']} / {o['n_pred']} / {o['n_true']} |"
        )
    lines += [
        "",
        "Mean ± std over folds, by post-processing step:",
        "",
        "| post-processing | pixel IoU | object precision | object recall |",
        "|---|---|---|---|",
    ]
    rows = [(label, [f[key] for f in folds]) for key, label in ROWS]
    rows[2:2] = list(steps.items())
    for label, scores in rows:
        lines.append(
            f"| {label} | {mean_std([s['pixel']['iou'] for s in scores])} | "
            f"{mean_std([s['object']['precision'] for s in scores])} | "
            f"{mean_std([s['object']['recall'] for s in scores])} |"
        )
    lines += [
        "",
        "Not measured here: dropping slumps that no scene saw whole (`--drop-cut`) and the SCL "
        "water mask (`--water-mask`): the chips carry no SCL and no cloud or nodata, so both "
        "stay off by default.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--crossval", type=Path, default=ROOT / ".real-train" / "final-crossval" / "crossval.json"
    )
    parser.add_argument(
        "--weights", type=Path, default=ROOT / "arctic_rts" / "data" / "real_unet.json"
    )
    parser.add_argument("--images", type=Path, default=CHIPS, help="the chips, one folder per site")
    args = parser.parse_args()
    result = json.loads(args.crossval.read_text())
    card = json.loads(args.weights.read_text())
    rewrite_section(HEADING, section(result, card, step_scores(result, args.images)))


if __name__ == "__main__":
    main()
