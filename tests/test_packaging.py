"""Packaging checks: one set of pins, mirrored between pyproject.toml and environment.yml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: conda-forge names that differ from PyPI's.
CONDA_TO_PYPI = {"pytorch": "torch"}


#: The extras environment.yml carries besides the core and dev: those the deploy/ recipes use.
DEPLOY_EXTRAS = ("gpu", "deploy", "slurm")


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs = list(project["dependencies"])
    todo, seen = ["dev", *DEPLOY_EXTRAS], set()
    while todo:  # an extra may name others of this project's (arctic-rts[slurm]): theirs count
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in extras[extra]:
            if req.startswith(f"{project['name']}["):
                todo += req.split("[", 1)[1].rstrip("]").split(",")
            else:
                reqs.append(req)
    pins = {}
    for req in reqs:
        name, _, version = req.split(";")[0].partition("==")  # without environment markers
        assert version, f"{req!r} in pyproject.toml is not pinned with =="
        pins[name.split("[")[0].strip().lower()] = version.strip()
    return pins


def _environment_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        conda = re.fullmatch(r"\s+- ([A-Za-z0-9_.-]+)=([^=\s]+)\s*", line)
        pip = re.fullmatch(r"\s+- ([A-Za-z0-9_.-]+)(?:\[[a-z,]+\])?==([^=\s]+)\s*", line)
        if pip:
            pins[pip.group(1).lower()] = pip.group(2)
        elif conda and conda.group(1) != "python":
            name = conda.group(1).lower()
            pins[CONDA_TO_PYPI.get(name, name)] = conda.group(2)
    return pins


def test_environment_and_pyproject_pin_the_same_versions() -> None:
    assert _environment_pins() == _pyproject_pins()


def test_makefile_installs_cpu_torch_first_at_the_pinned_version() -> None:
    installs = [
        ln
        for ln in (ROOT / "Makefile").read_text().splitlines()
        if "pip install" in ln and "--upgrade pip" not in ln
    ]
    assert f"torch=={_pyproject_pins()['torch']}" in installs[0]


def test_readme_starts_with_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert [ln.strip() for ln in first_block.splitlines() if ln.strip()][-2:] == [
        "make demo",
        "make test",
    ]
