"""Bad input over every command, as one table: each row is one ``arctic-rts`` command line that
must fail with the documented exit code, one ``arctic-rts: error:`` line on stderr that names
the problem, no traceback, nothing on stdout, and no file or folder left behind (the working
folder is compared before and after, lock and temporary files included).

Every row fails before any real work: where a row needs a STAC API it gets a closed port, so
work done past the check would show as a different error. ``{...}`` in a row is filled in
with the files of the row's folder (see ``_workspace``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from arctic_rts.bands import L2A_BANDS
from arctic_rts.cli import EXIT_ERROR, main
from arctic_rts.demo import DemoCatalog, generate_demo
from arctic_rts.model import UNet, save_weights

NOWHERE = "http://127.0.0.1:9"
BBOX = ["-138.05", "69.04", "-137.95", "69.06"]
MAP = ["map", "--bbox", *BBOX, "--year", "2021", "--stac", NOWHERE, "--weights", "{weights}"]
DATASET = ["dataset", "build", "--labels", "{labels}", "--stac", NOWHERE, "--out", "d.zarr"]
EVALUATE = ["evaluate", "--weights", "{weights}", "--images", "imgs", "--masks", "masks"]
RUN = ["inventory", "run", "{run}"]

#: (id, command line, exit code, words the error line must hold)
ROWS: list[tuple[str, list[str], int, list[str]]] = [
    # --- the command line itself
    ("no-command", [], EXIT_ERROR, ["command"]),
    ("unknown-command", ["mapp"], EXIT_ERROR, ["invalid choice"]),
    ("bad-log-level", ["--log-level", "LOUD", *MAP], EXIT_ERROR, ["--log-level"]),
    ("v-and-q", ["-v", "-q", *MAP], EXIT_ERROR, ["not allowed with"]),
    # --- map: area, year, season
    ("bbox-3-numbers", ["map", "--bbox", "1", "2", "3", "--year", "2021"], EXIT_ERROR, ["--bbox"]),
    ("bbox-not-a-number", [*MAP[:2], "w", *BBOX[1:], *MAP[6:]], EXIT_ERROR, ["--bbox"]),
    ("bbox-swapped-w-e", ["map", "--bbox", "10", "60", "5", "70", "--year", "2021"], EXIT_ERROR,
     ["antimeridian"]),
    ("bbox-south-north", ["map", "--bbox", "10", "70", "20", "60", "--year", "2021"], EXIT_ERROR,
     ["south < north"]),
    ("bbox-longitude-200", ["map", "--bbox", "10", "60", "200", "70", "--year", "2021"],
     EXIT_ERROR, ["outside"]),
    ("bbox-latitude-95", ["map", "--bbox", "10", "-95", "20", "70", "--year", "2021"],
     EXIT_ERROR, ["outside"]),
    ("bbox-too-large", [*MAP[:2], "-150", "60", "-130", "70", *MAP[6:]], EXIT_ERROR,
     ["--max-area", "--yes"]),
    ("max-area-zero", [*MAP, "--max-area", "0"], EXIT_ERROR, ["--max-area must"]),
    ("year-1999", [*MAP[:7], "1999", *MAP[8:]], EXIT_ERROR, ["1999"]),
    ("year-text", [*MAP[:7], "twenty", *MAP[8:]], EXIT_ERROR, ["--year", "'twenty'"]),
    ("missing-year", ["map", "--bbox", *BBOX], EXIT_ERROR, ["--year"]),
    ("months-13", [*MAP, "--months", "13"], EXIT_ERROR, ["months"]),
    ("months-backwards", [*MAP, "--months", "8-6"], EXIT_ERROR, ["months"]),
    ("months-words", [*MAP, "--months", "june"], EXIT_ERROR, ["months"]),
    ("max-cloud-120", [*MAP, "--max-cloud", "120"], EXIT_ERROR, ["--max-cloud must"]),
    # --- map: processing and cluster
    ("threshold-1.5", [*MAP, "--threshold", "1.5"], EXIT_ERROR, ["--threshold must"]),
    ("tile-size-100", [*MAP, "--tile-size", "100"], EXIT_ERROR, ["--tile-size must"]),
    ("workers-0", [*MAP, "--workers", "0"], EXIT_ERROR, ["--workers must"]),
    ("retries-negative", [*MAP, "--retries", "-1"], EXIT_ERROR, ["--retries must"]),
    ("read-timeout-0", [*MAP, "--read-timeout", "0"], EXIT_ERROR, ["--read-timeout must"]),
    ("precision-fp8", [*MAP, "--precision", "fp8"], EXIT_ERROR, ["--precision"]),
    ("format-xml", [*MAP, "--dry-run", "--format", "xml"], EXIT_ERROR, ["--format"]),
    ("scheduler-not-an-address", [*MAP[:9], "{catalog}", *MAP[10:], "--scheduler", "notanaddress"],
     EXIT_ERROR, ["notanaddress"]),
    ("unreachable-stac", MAP, EXIT_ERROR, ["127.0.0.1:9"]),
    # --- map: weights and output
    ("weights-missing", [*MAP[:-1], "nowhere.safetensors"], EXIT_ERROR, ["does not exist"]),
    ("weights-not-safetensors", [*MAP[:-1], "{text}"], EXIT_ERROR, ["notes.txt"]),
    ("weights-garbage", [*MAP[:-1], "{garbage}"], EXIT_ERROR, ["garbage.safetensors"]),
    ("out-exists", [*MAP, "--out", "{existing}"], EXIT_ERROR, ["--overwrite"]),
    ("out-parent-is-a-file", [*MAP, "--out", "{text}/inv.gpkg"], EXIT_ERROR, ["is a file"]),
    ("out-folder-missing", [*MAP, "--out", "nofolder/inv.gpkg"], EXIT_ERROR, ["does not exist"]),
    ("out-is-a-folder", [*MAP, "--out", "{folder}", "--overwrite"], EXIT_ERROR, ["is a folder"]),
    ("out-map-work-is-a-file", [*MAP[:9], "{catalog}", *MAP[10:], "--out", "{map_work_of}"],
     EXIT_ERROR, ["inv.gpkg.map-work", "is a file"]),
    # --- demo
    ("demo-threshold-2", ["demo", "--threshold", "2", "--root", "demo"], EXIT_ERROR,
     ["threshold"]),
    ("demo-root-is-a-file", ["demo", "--root", "{text}", "--generate-only"], EXIT_ERROR,
     ["notes.txt"]),
    ("demo-workers-text", ["demo", "--workers", "two"], EXIT_ERROR, ["--workers"]),
    # --- dataset build
    ("labels-missing", [*DATASET[:3], "nolabels.gpkg", *DATASET[4:]], EXIT_ERROR,
     ["nolabels.gpkg"]),
    ("dem-missing", [*DATASET, "--dem", "missing.tif"], EXIT_ERROR, ["missing.tif"]),
    ("patch-size-text", [*DATASET, "--patch-size", "big"], EXIT_ERROR, ["--patch-size"]),
    ("dataset-no-out", DATASET[:-2], EXIT_ERROR, ["--out"]),
    # --- train and evaluate
    ("train-config-missing", ["train", "--config", "none.toml"], EXIT_ERROR, ["none.toml"]),
    ("train-config-not-toml", ["train", "--config", "{text}"], EXIT_ERROR, ["notes.txt"]),
    ("train-config-unknown-key", ["train", "--config", "{train_unknown}"], EXIT_ERROR,
     ["learning_speed"]),
    ("evaluate-weights-missing", [*EVALUATE[:2], "nowhere.safetensors", *EVALUATE[3:]],
     EXIT_ERROR, ["does not exist"]),
    ("evaluate-images-missing", EVALUATE, EXIT_ERROR, ["imgs"]),
    # --- inventory run
    ("run-file-missing", ["inventory", "run", "none.toml"], EXIT_ERROR, ["none.toml"]),
    ("run-file-not-toml", ["inventory", "run", "{text}"], EXIT_ERROR, ["notes.txt"]),
    ("run-file-years-text", ["inventory", "run", "{run_years_text}"], EXIT_ERROR, ["year"]),
    ("run-years-backwards", [*RUN, "--years", "2022-2020"], EXIT_ERROR, ["is empty"]),
    ("run-year-1999", [*RUN, "--year", "1999"], EXIT_ERROR, ["year"]),
    ("run-years-and-year", [*RUN, "--years", "2021", "--year", "latest"], EXIT_ERROR,
     ["not allowed with"]),
    ("run-report-folder-missing", [*RUN, "--report", "nofolder/r.json"], EXIT_ERROR,
     ["--report"]),
    ("run-regions-too-large", [*RUN, "--max-area", "1"], EXIT_ERROR, ["regions", "--yes"]),
    ("run-work-is-a-file", ["inventory", "run", "{run_work_file}"], EXIT_ERROR,
     ["inv.gpkg.work", "is a file"]),
    ("run-scheduler-not-an-address", ["-q", *RUN[:2], "{run_demo}", "--scheduler", "notanaddress"],
     EXIT_ERROR, ["notanaddress"]),
    # --- catalog serve
    ("serve-missing-folder", ["catalog", "serve", "nothing-here"], EXIT_ERROR, ["nothing-here"]),
    ("serve-port-text", ["catalog", "serve", "{folder}", "--port", "http"], EXIT_ERROR,
     ["--port"]),
    ("serve-port-70000", ["catalog", "serve", "{folder}", "--port", "70000"], EXIT_ERROR,
     ["70000"]),
]  # fmt: skip


def test_the_table_has_at_least_40_distinct_rows_over_every_command() -> None:
    ids = [row[0] for row in ROWS]
    assert len(ids) == len(set(ids)) >= 40
    groups = ("dataset", "inventory", "catalog")
    covered = {
        " ".join(argv[:2]) if argv[0] in groups else argv[0] for _, argv, _, _ in ROWS if argv
    }
    commands = {"map", "demo", "dataset build", "train", "evaluate", "inventory run"}
    assert commands | {"catalog serve"} <= covered


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "l2a.safetensors"
    bands = list(L2A_BANDS)
    card = {"bands": bands, "normalisation": {"mean": [0.1] * 12, "std": [0.1] * 12}}
    torch.manual_seed(0)
    save_weights(UNet(len(bands), widths=(2, 2), bottleneck=2), card, path)
    return path


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    """A small local catalog, for the rows that must get past the search."""
    return generate_demo(tmp_path_factory.mktemp("demo") / "catalog", years=(2021,), size_px=120)


def _workspace(folder: Path, weights: Path, catalog: DemoCatalog) -> dict[str, str]:
    """The files rows refer to, made in ``folder`` (the working folder of the row)."""
    (folder / "notes.txt").write_text("not what was asked for\n")
    (folder / "garbage.safetensors").write_bytes(os.urandom(256))
    (folder / "existing.gpkg").write_bytes(b"")
    (folder / "afolder").mkdir()
    (folder / "inv.gpkg.map-work").write_text("a file where a map run keeps its work folder\n")
    (folder / "labels.gpkg").write_bytes(b"")  # present; the rows fail on other inputs first
    (folder / "train.toml").write_text(
        'method = "supervised"\nlearning_speed = 3\n[data]\ndataset = "patches.zarr"\n'
    )
    run = '\n'.join([
        'out = "out/inv.gpkg"', "years = [2021]", f'stac = "{NOWHERE}"', f'weights = "{weights}"',
        "[[regions]]", 'name = "all"', f"bbox = [{', '.join(BBOX)}]",
    ])  # fmt: skip
    (folder / "run.toml").write_text(run + "\n")
    (folder / "years_text.toml").write_text(run.replace("years = [2021]", 'years = "2021"'))
    (folder / "demo_run.toml").write_text(run.replace(NOWHERE, str(catalog.items_dir)))
    (folder / "work_file").mkdir()
    (folder / "work_file" / "inv.gpkg.work").write_text("a file where a run keeps its work\n")
    (folder / "work_file.toml").write_text(run.replace('"out/', '"work_file/'))
    return {
        "weights": str(weights),
        "text": "notes.txt",
        "garbage": "garbage.safetensors",
        "existing": "existing.gpkg",
        "folder": "afolder",
        "map_work_of": "inv.gpkg",
        "labels": "labels.gpkg",
        "train_unknown": "train.toml",
        "run": "run.toml",
        "run_years_text": "years_text.toml",
        "run_demo": "demo_run.toml",
        "run_work_file": "work_file.toml",
        "catalog": str(catalog.items_dir),
    }


def _tree(folder: Path) -> dict[str, int]:
    """Every file and folder under ``folder`` (hidden ones too) with its size."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1)
        for p in folder.rglob("*")
    }


@pytest.mark.parametrize(("argv", "code", "needles"), [r[1:] for r in ROWS],
                         ids=[r[0] for r in ROWS])  # fmt: skip
def test_bad_input_is_one_line_and_leaves_nothing(
    argv: list[str],
    code: int,
    needles: list[str],
    weights: Path,
    catalog: DemoCatalog,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    names = _workspace(tmp_path, weights, catalog)
    before = _tree(tmp_path)
    try:
        got = main([word.format(**names) for word in argv])
    except SystemExit as stop:  # argparse's own exits
        got = stop.code if isinstance(stop.code, int) else -1
    out, err = capsys.readouterr()
    assert got == code, err
    assert err.startswith("arctic-rts: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == "", (out, err)
    for needle in needles:
        assert needle in err, err
    assert _tree(tmp_path) == before  # no output, lock, temporary file or empty folder left
