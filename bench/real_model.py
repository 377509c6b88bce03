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
import math
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
HEADING = "## The bundled real-imagery model (make real-weights, bench/real_model.py)"
ROWS = (
    ("held_out_scores", "chosen threshold + minimum area"),
    ("held_out_threshold_only", "chosen threshold, no minimum area"),
    ("held_out_default", "threshold 0.5, no minimum area"),
    ("train_scores", "training sites, chosen post-processing"),
)


def _fmt(values: list[float]) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.fmean(vals):.3f} ± {statistics.stdev(vals):.3f}"


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
            f"| {label} | {_fmt([f[key]['pixel']['iou'] for f in folds])} | "
            f"{_fmt([f[key]['object']['precision'] for f in folds])} | "
            f"{_fmt([f[key]['object']['recall'] for f in folds])} |"
        )
    lines.append("")
    return lines


def rewrite(lines: list[str]) -> None:
    """Replace this script's section of BENCHMARKS.md (or append it)."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    old = text.splitlines()
    if HEADING in old:
        start = old.index(HEADING)
        end = next((i for i in range(start + 1, len(old)) if old[i].startswith("## ")), len(old))
        new = old[:start] + lines + old[end:]
    else:
        new = [*old, "", *lines]
    BENCHMARKS.write_text("\n".join(new).rstrip("\n") + "\n")


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
    rewrite(section(result, card))


if __name__ == "__main__":
    main()
