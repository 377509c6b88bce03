"""The bundled real-imagery model's leave-one-site-out table in BENCHMARKS.md.

Usage (after ``make real-weights``, which writes the cross-validation beside the run)::

    .venv/bin/python bench/real_model.py [--crossval .real-train/final-crossval/crossval.json]

Rewrites this script's section of BENCHMARKS.md (from its heading to the next ``## ``
heading) from the cross-validation result: per held-out site and seed the threshold and
minimum area chosen on the training sites, and held-out pixel IoU and object precision/recall
with the chosen post-processing, with the threshold alone, and at the untuned 0.5 / no minimum.
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
    ("held_out_scores", "chosen threshold + minimum area"),
    ("held_out_threshold_only", "chosen threshold, no minimum area"),
    ("held_out_default", "threshold 0.5, no minimum area"),
    ("train_scores", "training sites, chosen post-processing"),
)


def section(result: dict[str, Any], card: dict[str, Any]) -> list[str]:
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
        "(best pixel IoU) and minimum object area (best object F1) chosen on the training sites "
        "of each fold, never on the held-out one. Pixel counts summed over each site's chips; "
        "objects matched one-to-one at IoU >= 0.5. The shipped model is trained on all labelled "
        f"sites with the folds' median choice: threshold {card['threshold']}, minimum area "
        f"{card['min_area_m2']:g} m².",
        "",
        "| held-out site | seed | threshold | min area m² | pixel IoU | object precision "
        "| object recall | objects (matched / predicted / true) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in folds:
        s = f["held_out_scores"]
        o = s["object"]
        lines.append(
            f"| {f['held_out']} | {f['seed']} | {f['threshold']} | {f['min_area_m2']:g} | "
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
    for key, label in ROWS:
        lines.append(
            f"| {label} | {mean_std([f[key]['pixel']['iou'] for f in folds])} | "
            f"{mean_std([f[key]['object']['precision'] for f in folds])} | "
            f"{mean_std([f[key]['object']['recall'] for f in folds])} |"
        )
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--crossval", type=Path, default=ROOT / ".real-train" / "final-crossval" / "crossval.json"
    )
    parser.add_argument(
        "--weights", type=Path, default=ROOT / "arctic_rts" / "data" / "real_unet.json"
    )
    args = parser.parse_args()
    result = json.loads(args.crossval.read_text())
    card = json.loads(args.weights.read_text())
    rewrite_section(HEADING, section(result, card))


if __name__ == "__main__":
    main()
