"""The package's single rules, each tested once here: year, bbox, band list, method names,
atomic replacement, and the inventory write's test seam."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest

from arctic_rts.bands import validate_bands
from arctic_rts.config import validate_bbox, validate_year
from arctic_rts.errors import ConfigError
from arctic_rts.files import atomic_write, replace_durably
from arctic_rts.train.config import TRAIN_METHODS


def test_validate_year_from_2015_to_next_year() -> None:
    next_year = dt.date.today().year + 1
    assert validate_year(2015) == 2015
    assert validate_year(np.int64(2021)) == 2021 and type(validate_year(np.int64(2021))) is int
    assert validate_year(next_year) == next_year
    for bad in (2014, next_year + 1, True, 2021.0, "2021", None):
        with pytest.raises(ConfigError, match="year"):
            validate_year(bad)


def test_validate_bbox() -> None:
    assert validate_bbox([-139, 68, -138, 69]) == (-139.0, 68.0, -138.0, 69.0)
    for bad in ([1, 2, 3], [0, 0, 200, 1], [0, 0, 1, 95], [1, 0, 0, 1], [0, 1, 1, 1]):
        with pytest.raises(ConfigError, match="bbox"):
            validate_bbox(bad)


def test_validate_bands() -> None:
    assert validate_bands(["B04", "B8A"]) == ("B04", "B8A")
    for bad, needle in (([], "empty"), (["SCL"], "cloud mask"), (["red"], "canonical"),
                        (["B04", "B04"], "more than once")):  # fmt: skip
        with pytest.raises(ConfigError, match=needle):
            validate_bands(bad)


def test_method_names_have_one_home() -> None:
    from arctic_rts.train.methods import METHODS

    assert tuple(METHODS) == TRAIN_METHODS
    assert all(cls.name == name for name, cls in METHODS.items())


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    atomic_write(target, lambda p: p.write_text("new"))
    assert target.read_text() == "new"

    def failing(p: Path) -> None:
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temporary left

    tmp = tmp_path / ".x.tmp"
    tmp.write_text("x")
    replace_durably(tmp, tmp_path / "x")
    assert (tmp_path / "x").read_text() == "x" and not tmp.exists()


def test_inventory_write_calls_its_seam_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    import arctic_rts.inventory as inventory
    from arctic_rts.merge import merge_polygons

    gpkg = tmp_path / "inv.gpkg"
    seen: list[tuple[bool, bool]] = []

    def seam(tmp: Path, path: Path) -> None:
        seen.append((tmp.exists(), path.exists()))

    monkeypatch.setattr(inventory, "_before_replace", seam)
    frame = gpd.GeoDataFrame(
        {"year": [2021], "scene_id": ["s"]}, geometry=[box(0, 0, 500, 500)], crs="EPSG:3413"
    )
    inventory.write_inventory(
        gpkg, merge_polygons([frame]), year=2021, run={"run_id": "r"}, scenes=[]
    )
    assert seen == [(True, False)]  # the new file complete, the target not yet there
    assert inventory.inventory_years(gpkg) == [2021]
    assert "ARCTIC_RTS_TEST_PAUSE_IN_WRITE" not in Path(inventory.__file__).read_text()
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
