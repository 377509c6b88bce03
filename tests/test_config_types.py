"""A value of the wrong type in a run file is refused with its key and the type expected, before
any dataclass compares or converts it (no "'<' not supported between 'str' and 'int'")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arctic_rts.errors import ConfigError
from arctic_rts.runfile import read_inventory_run
from arctic_rts.train.loop import load_train_config

INVENTORY = """
out = "inv.gpkg"
years = [2021]
[[regions]]
name = "a"
bbox = [-139.4, 69.45, -138.6, 69.65]
"""

TRAIN = """
method = "supervised"
[data]
images = "img"
masks = "msk"
"""

CASES = [
    # (file, line added, key, expected phrase)
    (INVENTORY, 'years = "2021"', "years", "a list of integers"),
    (INVENTORY, "years = [2021.5]", "years", "a list of integers"),
    (INVENTORY, 'clip_to_regions = "yes"', "clip_to_regions", "true or false"),
    (INVENTORY, "exports = 3", "exports", "a list of strings"),
    (INVENTORY, '[search]\nmax_cloud_cover = "40"', "max_cloud_cover", "a number"),
    (INVENTORY, '[search]\nmonths = [6, "July"]', "months", "a list of integers"),
    (INVENTORY, "[inventory]\nchange_ring_px = true", "change_ring_px", "a number"),
    (TRAIN, 'steps = "many"', "steps", "an integer"),
    (TRAIN, 'lr = "fast"', "lr", "a number"),
    (TRAIN, "widths = 8", "widths", "a list of integers"),
    (TRAIN, "[pixeldino]\nbeta = [0.1]", "beta", "a number"),
]


def _write(tmp_path: Path, base: str, extra: str) -> Path:
    """``base`` with ``extra`` added: a table at the end, a top-level key replacing its line."""
    if extra.startswith("["):
        text = base + extra
    else:
        key = extra.split("=")[0].strip()
        kept = [line for line in base.splitlines() if line.split("=")[0].strip() != key]
        text = "\n".join([extra, *kept])  # top-level keys before the first table
    path = tmp_path / "run.toml"
    path.write_text(text + "\n")
    return path


@pytest.mark.parametrize(("base", "extra", "key", "expected"), CASES)
def test_a_wrong_type_names_the_key_and_the_type(
    tmp_path: Path, base: str, extra: str, key: str, expected: str
) -> None:
    path = _write(tmp_path, base, extra)
    read = read_inventory_run if base is INVENTORY else load_train_config
    with pytest.raises(ConfigError) as err:
        read(path)
    message = str(err.value)
    assert message.startswith(f"{key} in [") and f"must be {expected}, got" in message
    assert "\n" not in message


def test_right_types_pass_including_integers_for_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path, INVENTORY, "[search]\nmax_cloud_cover = 40")
    assert read_inventory_run(path).map.search.max_cloud_cover == 40


def test_the_cli_says_it_in_one_line_with_exit_2(tmp_path: Path) -> None:
    path = _write(tmp_path, INVENTORY, 'years = "2021"')
    proc = subprocess.run(
        [sys.executable, "-m", "arctic_rts.cli", "inventory", "run", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "arctic-rts: error: years in [top level] must be a list of integers, got '2021'."
    ]
    assert not (tmp_path / "inv.gpkg").exists()
