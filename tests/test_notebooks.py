"""Every notebook in ``notebooks/`` runs top to bottom (nbclient, a real Jupyter kernel).

Each runs in a temporary working folder, so what it writes stays out of the repository; the
committed notebooks must carry no outputs.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pyogrio
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


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
    if path.stem == "quickstart":
        _check_quickstart(nb, tmp_path)


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
