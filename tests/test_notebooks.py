"""Every notebook in ``notebooks/`` runs top to bottom (nbclient, a real Jupyter kernel).

Each runs in a temporary working folder, so what it writes stays out of the repository, and must
leave the figures it promises there as PNG files; the committed notebooks carry no outputs, and
each is paired with a jupytext ``.py`` (percent format) that holds the same cells.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pyogrio
import pytest
from nbclient import NotebookClient
from PIL import Image

FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
#: The figures each notebook writes, under ``demo-out/<notebook>/figures/`` of its folder.
FIGURES = {
    "quickstart": ["quickstart_map.png"],
    "training": ["learning_curves.png", "predictions.png"],
    "inventory": ["change_map.png", "area_per_year.png"],
}


def test_every_notebook_promises_figures() -> None:
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(FIGURES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_and_its_py_script_hold_the_same_cells(path: Path) -> None:
    # The .py is what reviews and diffs read; the .ipynb is what Jupyter opens. After an edit of
    # either, `jupytext --sync notebooks/NAME.py` (or .ipynb) brings the other in line.
    script = path.with_suffix(".py")
    assert script.is_file(), f"{script.name} missing: run jupytext --set-formats ipynb,py:percent"
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent"
    sync = f"jupytext --sync notebooks/{script.name}"
    assert jupytext.writes(nb, fmt="py:percent") == script.read_text(), (
        f"{path.name} and {script.name} differ: run {sync}"
    )


def test_no_script_without_its_notebook() -> None:
    assert sorted(p.stem for p in FOLDER.glob("*.py")) == sorted(p.stem for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    # "python3" resolves to this interpreter (jupyter_client swaps a bare "python" for it).
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on failure
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors
    for name in FIGURES[path.stem]:
        _check_png(tmp_path / "demo-out" / path.stem / "figures" / name)
    if path.stem == "quickstart":
        _check_quickstart(nb, tmp_path)


def _check_png(path: Path) -> None:
    """A PNG that opens, of a figure's size, that is not one flat colour."""
    assert path.is_file(), f"{path.name} was not written"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) >= 200
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 5, f"{path.name} is (nearly) blank"


def _check_quickstart(nb: nbformat.NotebookNode, workdir: Path) -> None:
    """What a reader is promised: a lazy array repr, and a GeoPackage with the three tables."""
    texts = [
        str(out.get("data", {}).get("text/plain", "")) + str(out.get("text", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    ]
    assert any("<xarray.DataArray" in t and "dask.array" in t for t in texts)
    out = workdir / "demo-out" / "quickstart" / "rts_quickstart.gpkg"
    layers = dict(pyogrio.list_layers(out))
    assert {"rts_2021", "scenes", "runs"} <= set(layers)
    assert pyogrio.read_info(out, layer="rts_2021")["crs"] == "EPSG:3413"
    assert pyogrio.read_info(out, layer="scenes")["features"] == 2
