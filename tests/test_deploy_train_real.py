"""deploy/train-real: every command of its README parses as the CLI would take it, the run file
loads, and the pieces agree (the dataset the build writes is the one training reads; the bands
are those of the chips it is scored on)."""

from __future__ import annotations

import shlex
from pathlib import Path

from arctic_rts.cli import build_parser
from arctic_rts.model.domain import real_weights
from arctic_rts.model.weights import read_card
from arctic_rts.train.loop import load_train_config

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "deploy" / "train-real"


def _commands() -> list[list[str]]:
    lines = (RECIPE / "README.md").read_text().splitlines()
    return [
        shlex.split(line.strip())[1:] for line in lines if line.strip().startswith("arctic-rts ")
    ]


def test_every_command_parses() -> None:
    commands = _commands()
    assert [c[:2] for c in commands] == [
        ["dataset", "build"],
        ["dataset", "build"],
        ["train", "--config"],
        ["evaluate", "--weights"],
    ]
    parsed = [build_parser().parse_args(c) for c in commands]
    dry, build, train, evaluate = parsed
    assert dry.dry_run and not build.dry_run
    assert dry.out == build.out and dry.labels == build.labels
    assert build.unlabelled_bbox and build.unlabelled_year  # PixelDINO needs unlabelled data
    assert train.device == "cuda"
    config = load_train_config(ROOT / train.config)
    assert Path(config.data.dataset or "") == (ROOT / build.out).resolve()
    assert tuple(build.bands) == config.data.bands
    assert Path(config.out_dir) == (ROOT / evaluate.weights).resolve().parent


def test_the_run_file_is_pixeldino_on_real_imagery() -> None:
    config = load_train_config(RECIPE / "pixeldino.toml")
    assert config.method == "pixeldino" and config.domain == "sentinel-2-l2a"
    assert config.widths == (16, 32, 64, 128) and config.bottleneck == 256  # the paper's UNet
    # scored on the chips the bundled real model knows: the same bands in the same order
    assert list(config.data.bands or ()) == read_card(real_weights())["bands"]
