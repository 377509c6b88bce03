"""Why PixelDINO does not beat supervised+aug on the real chips: its teacher's targets.

Usage::

    .venv/bin/python bench/pixeldino_teacher.py [--steps 400] [--temperatures 0.5,0.25,0.1]

Trains PixelDINO with the bundled recipe (``deploy/real_weights/train.toml``) on the labelled
sites s003 and s004 and the unlabelled chips of every site but s002, once per teacher
temperature, and records what the teacher hands the student: the entropy of its targets per
pixel and of their mean over the batch (both in nats; ``ln K`` is uniform), and the
self-distillation loss. Nothing here looks at a held-out label: validation is off, and the
quantities are properties of the unlabelled batches, so a temperature chosen from them is not
chosen on held-out scores. Results go to ``bench/results/pixeldino_teacher/t<T>.json`` (a rerun
skips what exists) and into this script's section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from report import rewrite_section  # noqa: E402
from train_methods import loso_config, shared_data_missing  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "pixeldino_teacher"
HEADING = "## PixelDINO's teacher targets on the real chips (bench/pixeldino_teacher.py)"
KEYS = ("dino", "teacher_entropy", "teacher_marginal_entropy", "sup")


def run(temperature: float, steps: int) -> dict[str, Any]:
    """One short PixelDINO run at ``temperature``; its logged entropies by step."""
    from arctic_rts.train.crossval import fold_config, labelled_by_site
    from arctic_rts.train.loop import train

    config = loso_config("pixeldino")
    groups = labelled_by_site(config.data.images, config.data.masks)
    work = RESULTS / f"work-t{temperature:g}"
    fold = fold_config(config, groups, "s002", 1, work)
    fold = dataclasses.replace(
        fold,
        steps=steps,
        val_every=0,
        checkpoint_every=0,
        log_every=50,
        pixeldino=dataclasses.replace(fold.pixeldino, teacher_temperature=temperature),
    )
    logs: list[dict[str, Any]] = []
    train(fold, progress=False, on_log=logs.append)
    return {
        "teacher_temperature": temperature,
        "steps": steps,
        "classes": fold.pixeldino.classes,
        "log": [{k: r[k] for k in ("step", *KEYS) if k in r} for r in logs],
    }


def table() -> list[str]:
    """This script's BENCHMARKS.md section from the saved results."""
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("t*.json"))]
    if not results:
        return []
    results.sort(key=lambda r: -r["teacher_temperature"])
    k = results[0]["classes"]
    lines = [
        HEADING,
        "",
        f"`bench/pixeldino_teacher.py`: PixelDINO with the bundled recipe, {results[0]['steps']} "
        "steps on labelled sites s003 and s004 and the unlabelled chips of every site but s002, "
        "one run per teacher temperature (the paper's is 0.5, student 1). Columns: the last "
        "100 steps' mean of the entropy of the teacher's targets per pixel, of their batch mean, "
        "their difference (the information the targets carry about the pixel: 0 when every "
        "pixel gets the same distribution) and the self-distillation loss; all in nats, "
        f"ln {k} = {math.log(k):.3f} is uniform. No held-out label is read.",
        "",
        "| teacher temperature | per-pixel entropy | entropy of the mean | information "
        "(difference) | self-distillation loss |",
        "|---|---|---|---|---|",
    ]
    infos = []
    for r in results:
        tail = [e for e in r["log"] if e["step"] > r["steps"] - 100]

        def last(key: str, tail: list[dict[str, Any]] = tail) -> float:
            vals = [e[key] for e in tail if key in e]
            return statistics.fmean(vals) if vals else math.nan

        pixel, marginal = last("teacher_entropy"), last("teacher_marginal_entropy")
        infos.append((r["teacher_temperature"], pixel, marginal))
        lines.append(
            f"| {r['teacher_temperature']:g} | {pixel:.3f} | {marginal:.3f} | "
            f"{marginal - pixel:.3f} | {last('dino'):.3f} |"
        )
    return [*lines, "", *_reading(infos, k), ""]


def _reading(infos: list[tuple[float, float, float]], k: int) -> list[str]:
    """One sentence per temperature on what the targets are, from the measured entropies."""
    uniform = math.log(k)
    words = []
    for t, pixel, marginal in infos:
        if pixel > 0.9 * uniform:
            kind = "close to uniform at every pixel"
        elif marginal < 0.1 * uniform:
            kind = "nearly one pseudo-class at every pixel (collapse)"
        else:
            kind = "sharper, but alike at every pixel" if marginal - pixel < 0.1 else "informative"
        words.append(f"at {t:g} {kind}")
    most = max(m - p for _, p, m in infos)
    reading = f"Reading: the teacher's targets are {'; '.join(words)}."
    if most < 0.05 * uniform:
        reading += (
            f" At no temperature do they tell the pixels apart: they carry at most {most:.3f} "
            f"nats about the pixel, of up to {uniform:.3f}. The student is taught nearly the same "
            "distribution at every pixel, from which it can learn nothing spatial."
        )
    return [reading]


def main(argv: list[str] | None = None) -> int:
    """Run the missing temperatures, then rewrite the section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--temperatures", default="0.5,0.25,0.1")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if shared_data_missing():
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    for t in (float(v) for v in args.temperatures.split(",")):
        out = RESULTS / f"t{t:g}.json"
        if out.is_file() and json.loads(out.read_text())["steps"] == args.steps:
            continue
        out.write_text(json.dumps(run(t, args.steps), indent=1))
        print(f"teacher temperature {t:g}: done", flush=True)
    print(rewrite_section(HEADING, table()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
