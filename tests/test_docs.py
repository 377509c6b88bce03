"""The docs site: it builds with warnings as errors, its API reference is rendered from the
docstrings, every command it shows parses with the CLI's own parser, and the schema page names
every column the code writes."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from arctic_rts.changes import CHANGE_COLUMNS
from arctic_rts.cli import build_parser
from arctic_rts.inventory import RUN_COLUMNS, SCENE_COLUMNS
from arctic_rts.merge import RTS_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.mark.slow
def test_the_site_builds_with_every_page(site: Path) -> None:
    built = {p.relative_to(DOCS).with_suffix(".html") for p in PAGES}
    assert built <= {p.relative_to(site) for p in site.rglob("*.html")}


@pytest.mark.slow
def test_the_api_reference_is_rendered_from_the_docstrings(site: Path) -> None:
    mapping = (site / "api" / "mapping.html").read_text()
    assert 'id="arctic_rts.pipeline.map_region"' in mapping
    assert "Map thaw slumps in" in mapping  # map_region's docstring
    config = (site / "configuration.html").read_text()
    # a dataclass field documented by the `#:` comment above it (griffe-sphinx)
    assert 'id="arctic_rts.config.SearchConfig.max_cloud_cover"' in config
    assert "Largest scene-wide cloud cover in percent" in config
    # Sphinx roles (:func:`x`) are rewritten as code, never shown as written
    leftovers = [
        p.name
        for p in site.rglob("*.html")
        if re.search(r":(func|class|mod|data|meth):", p.read_text())
    ]
    assert not leftovers


def _commands() -> list[tuple[str, str]]:
    """``(page, command line)`` of every arctic-rts command in the code blocks of the pages and
    the README."""
    found = []
    for page in [*PAGES, ROOT / "README.md"]:
        blocks = re.findall(r"^```[^\n]*\n(.*?)^```", page.read_text(), flags=re.S | re.M)
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix(".venv/bin/")
                if line.startswith("arctic-rts "):
                    found.append((page.name, line))
    return found


def test_every_command_the_docs_show_parses() -> None:
    commands = _commands()
    assert len(commands) >= 30, commands  # the pages show commands; none slipped the pattern
    parser = build_parser()
    for page, line in commands:
        try:
            parser.parse_args(shlex.split(line, comments=True)[1:])
        except SystemExit as err:  # argparse's way of refusing
            pytest.fail(f"{page}: {line!r} does not parse (exit {err.code})")


def test_the_schema_page_names_every_column() -> None:
    page = (DOCS / "geopackage.md").read_text()
    for columns in (RTS_COLUMNS, CHANGE_COLUMNS, SCENE_COLUMNS, RUN_COLUMNS):
        missing = [c for c in columns if f"`{c}`" not in page]
        assert not missing, f"docs/geopackage.md does not describe {missing}"


def test_the_readme_points_to_the_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/index.md" in readme and "make docs" in readme
