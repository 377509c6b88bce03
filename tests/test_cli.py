"""The ``arctic-rts`` command line: every bad input is one ``arctic-rts: error:`` line on stderr,
no traceback, exit code 2; ``--help`` and ``--version`` work.

Most cases call ``main([...])`` in this process (fast); a few run the installed console script
in a subprocess to check what a shell user sees.
"""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arctic_rts import __version__
from arctic_rts.bands import L2A_BANDS
from arctic_rts.cli import EXIT_ERROR, EXIT_NOTHING_FOUND, main
from arctic_rts.demo import DemoCatalog, generate_demo
from arctic_rts.model import UNet, save_weights

BBOX = ["-138.05", "69.04", "-137.95", "69.06"]
PREFIX = "arctic-rts: error: "


def _script() -> list[str]:
    """The installed ``arctic-rts`` beside this interpreter, else ``python -m arctic_rts.cli``."""
    exe = Path(sys.executable).with_name("arctic-rts")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "arctic_rts.cli"]


def _save(path: Path, bands: list[str]) -> Path:
    torch.manual_seed(0)
    card = {
        "bands": bands,
        "normalisation": {"mean": [0.1] * len(bands), "std": [0.1] * len(bands)},
    }
    save_weights(UNet(len(bands), widths=(2, 2), bottleneck=2), card, path)
    return path


class _Trap:
    """Unpickling this creates ``marker``: proof that a file was (or was not) unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory.mktemp("w") / "l2a.safetensors", list(L2A_BANDS))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    # The catalog test_pipeline.py maps, reused when both run in one session.
    return generate_demo(tmp_path_factory.getbasetemp() / "demo-catalog-180", size_px=180)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit code, stdout, stderr); argparse exits are caught."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else EXIT_ERROR
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == EXIT_ERROR, err
    assert err.startswith(PREFIX), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bbox", "1", "2", "3", "--year", "2021"], "--bbox"),
        (["--bbox", "10", "60", "5", "70", "--year", "2021"], "west < east"),
        (["--bbox", "10", "70", "20", "60", "--year", "2021"], "south < north"),
        (["--bbox", "10", "60", "200", "70", "--year", "2021"], "outside"),
        (["--bbox", "10", "-95", "20", "70", "--year", "2021"], "outside"),
        (["--bbox", *BBOX, "--year", "1999"], "year"),
        (["--bbox", *BBOX, "--year", "2999"], "year"),
        (["--bbox", *BBOX, "--year", "twenty"], "--year"),
        (["--bbox", *BBOX, "--year", "2021", "--months", "13"], "months"),
        (["--bbox", *BBOX, "--year", "2021", "--months", "0-2"], "months"),
        (["--bbox", *BBOX, "--year", "2021", "--months", "8-6"], "months"),
        (["--bbox", *BBOX, "--year", "2021", "--months", "june"], "months"),
        (["--bbox", *BBOX, "--year", "2021", "--threshold", "1.5"], "--threshold must"),
        (["--bbox", *BBOX, "--year", "2021", "--tile-size", "100"], "--tile-size must"),
        (["--bbox", *BBOX, "--year", "2021", "--workers", "0"], "--workers must"),
        (["--bbox", *BBOX], "--year"),
    ],
)
def test_bad_map_arguments(
    args: list[str], needle: str, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["map", *args, "--weights", str(weights)], capsys)
    _assert_one_line_error(code, err, needle)
    assert out == ""


def test_no_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run([], capsys)
    _assert_one_line_error(code, err, "command")


def test_missing_weights_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.safetensors"
    code, _, err = _run(
        ["map", "--bbox", *BBOX, "--year", "2021", "--weights", str(missing)], capsys
    )
    _assert_one_line_error(code, err, str(missing), "does not exist")


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_pickled_weights_are_refused_without_unpickling(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    armed = tmp_path / "armed"
    pickle.loads(pickle.dumps(_Trap(armed)))
    assert armed.exists()  # the trap works: unpickling it would leave the marker
    marker = tmp_path / "unpickled"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Trap(marker)))
    out = tmp_path / "out.gpkg"
    argv = ["map", "--bbox", *BBOX, "--year", "2021", "--weights", str(path), "--out", str(out)]
    code, _, err = _run(argv, capsys)
    _assert_one_line_error(code, err, str(path))
    assert "safetensors" in err
    assert not marker.exists()
    assert not out.exists()


@pytest.mark.parametrize(
    ("bands", "needle"),
    [(["B02", "B03", "B04", "B10"], "B10"), (["B02", "B03", "red"], "red")],
)
def test_weights_whose_bands_the_scenes_lack(
    bands: list[str],
    needle: str,
    demo: DemoCatalog,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _save(tmp_path / "other.safetensors", bands)
    out = tmp_path / "out.gpkg"
    argv = ["map", "--bbox", *map(str, demo.bbox), "--year", "2021", "--quiet"]
    argv += ["--stac", str(demo.items_dir), "--weights", str(path), "--out", str(out)]
    code, stdout, err = _run(argv, capsys)
    _assert_one_line_error(code, err, needle, "bands")
    # refused before any scene was mapped: no inventory, no summary
    assert not out.exists()
    assert stdout == ""


def test_no_scenes_found(
    weights: Path, demo: DemoCatalog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.gpkg"
    # every demo scene has more than 0.5 % cloud
    argv = ["map", "--bbox", *map(str, demo.bbox), "--year", "2021", "--max-cloud", "0.5"]
    argv += ["--stac", str(demo.items_dir), "--weights", str(weights), "--out", str(out)]
    code, stdout, err = _run(argv, capsys)
    assert code == EXIT_NOTHING_FOUND, err
    _assert_one_line_error(EXIT_ERROR, err, "No scenes", "0.5%")
    assert not out.exists()
    assert stdout == ""


def test_ensemble_members_with_other_bands(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _save(tmp_path / "rgbn.safetensors", ["B02", "B03", "B04", "B08"])
    out = tmp_path / "out.gpkg"
    argv = ["map", "--bbox", *BBOX, "--year", "2021", "--stac", "http://127.0.0.1:9"]
    argv += ["--ensemble", str(weights), str(other), "--out", str(out)]
    code, _, err = _run(argv, capsys)
    # refused on the weights alone, before the (unreachable) STAC API is asked
    _assert_one_line_error(code, err, "ensemble", "rgbn.safetensors")
    assert not out.exists()


def test_unreachable_stac_api(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.gpkg"
    argv = ["map", "--bbox", *BBOX, "--year", "2021", "--stac", "http://127.0.0.1:9"]
    argv += ["--weights", str(weights), "--out", str(out), "--quiet"]
    code, _, err = _run(argv, capsys)
    _assert_one_line_error(code, err, "http://127.0.0.1:9")
    assert not out.exists()


def test_missing_local_catalog(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["map", "--bbox", *BBOX, "--year", "2021", "--stac", str(tmp_path / "no_items")]
    argv += ["--weights", str(weights), "--out", str(tmp_path / "out.gpkg")]
    code, _, err = _run(argv, capsys)
    _assert_one_line_error(code, err, "no_items")


def test_existing_output_needs_overwrite(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "inventory.gpkg"
    out.write_bytes(b"an earlier inventory")
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    argv = ["map", "--bbox", *BBOX, "--year", "2021", "--weights", str(weights)]
    argv += ["--out", str(out), "--stac", "http://127.0.0.1:9"]
    code, _, err = _run(argv, capsys)
    _assert_one_line_error(code, err, str(out), "--overwrite")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before


def test_missing_output_folder(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "not_made" / "inventory.gpkg"
    argv = ["map", "--bbox", *BBOX, "--year", "2021", "--weights", str(weights)]
    argv += ["--out", str(out)]
    code, _, err = _run(argv, capsys)
    _assert_one_line_error(code, err, "not_made", "does not exist")
    assert not out.parent.exists()


def test_catalog_serve_on_a_folder_without_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.json").write_text('{"hello": "world"}')
    code, _, err = _run(["catalog", "serve", str(tmp_path), "--port", "0"], capsys)
    _assert_one_line_error(code, err, "notes.json")


# --- the installed console script, as a shell user runs it ------------------------------------


def _shell(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_script(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_help_and_version() -> None:
    helped = _shell("--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("map", "demo", "catalog"):
        assert command in helped.stdout
    map_help = _shell("map", "--help")
    assert map_help.returncode == 0
    assert "--bbox W S E N" in map_help.stdout
    assert "--overwrite" in map_help.stdout
    version = _shell("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"arctic-rts {__version__}"


def test_shell_errors_are_one_line(tmp_path: Path) -> None:
    bad_bbox = _shell("map", "--bbox", "10", "60", "5", "--year", "2021")
    _assert_one_line_error(bad_bbox.returncode, bad_bbox.stderr, "--bbox")
    assert bad_bbox.stdout == ""
    serve = _shell("catalog", "serve", str(tmp_path / "missing"))
    _assert_one_line_error(serve.returncode, serve.stderr, "missing")
    pt = tmp_path / "model.pt"
    marker = tmp_path / "unpickled"
    pt.write_bytes(pickle.dumps(_Trap(marker)))
    refused = _shell("map", "--bbox", *BBOX, "--year", "2021", "--weights", str(pt))
    _assert_one_line_error(refused.returncode, refused.stderr, "model.pt")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("flags", "level", "filtered"),
    [([], "INFO", True), (["-q"], "WARNING", True), (["-v"], "DEBUG", False),
     (["--log-level", "ERROR"], "ERROR", True)],
)  # fmt: skip
def test_verbosity_flags_set_the_level_and_the_warning_filter(
    flags: list[str], level: str, filtered: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """-v/-q/--log-level set the arctic_rts loggers' level; dependency deprecation warnings
    are hidden unless -v asks for everything (the library itself filters nothing)."""
    import logging
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        code = main([*flags, "map", "--bbox", "10", "60", "11", "61", "--year", "1800"])
        assert code == EXIT_ERROR and len(capsys.readouterr().err.strip().splitlines()) == 1
        assert logging.getLevelName(logging.getLogger("arctic_rts").level) == level
        warnings.warn("a dependency's deprecation", DeprecationWarning, stacklevel=1)
        shown = any(issubclass(w.category, DeprecationWarning) for w in seen)
        assert shown is not filtered
    with pytest.raises(SystemExit) as stop:  # one or the other
        main(["-v", "-q", "demo"])
    assert stop.value.code == EXIT_ERROR
    assert "not allowed with" in capsys.readouterr().err
