"""The public API as users meet it: lazy exports stay functions, and the README's Python runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Exports that share their name with a submodule (or, for ``evaluate``, with a submodule of
#: ``arctic_rts.train``).
SHADOWED = ("predict", "vectorize", "train", "evaluate")


def _python(code: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_lazy_exports_stay_functions_after_their_submodules_are_imported(tmp_path: Path) -> None:
    # A fresh interpreter: the first access imports the submodule, which Python binds on the
    # package; every later access, and an explicit submodule import, must still give the function.
    code = f"""
import types
import arctic_rts as rts
names = {SHADOWED!r}
first = [getattr(rts, n) for n in names]
import arctic_rts.predict, arctic_rts.vectorize, arctic_rts.train.loop, arctic_rts.train.evaluate
from arctic_rts.train.build import build_dataset
again = [getattr(rts, n) for n in names]
from arctic_rts import predict, vectorize, train, evaluate
import arctic_rts.train
for n, a, b in zip(names, first, again):
    assert isinstance(a, types.FunctionType) and a is b, (n, a, b)
assert (predict, vectorize, train, evaluate) == tuple(first)
assert isinstance(sys.modules["arctic_rts.train"].evaluate, types.FunctionType)
assert rts.build_dataset is build_dataset
print("ok")
"""
    done = _python("import sys\n" + code, tmp_path, 120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def _readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "the README has no ```python block"
    return "\n".join(blocks)


@pytest.mark.slow
def test_the_readme_python_runs_as_written_in_a_script(tmp_path: Path) -> None:
    # As a user would: saved to a file and run with python, in an empty folder, against the
    # demo catalog (generated there on first use); the map run uses Dask worker processes.
    script = tmp_path / "readme.py"
    script.write_text(_readme_python())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "rts.gpkg").is_file()
    assert "thaw slumps after merging" in done.stdout
    per_scene = re.findall(r"^(\S+) (\d+) polygons$", done.stdout, flags=re.M)
    assert len(per_scene) == 2 and all(int(n) > 0 for _, n in per_scene), done.stdout
