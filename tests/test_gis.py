"""What GIS users open: dates stored as DATE fields, QGIS styles in ``layer_styles``, and the
quick-look PNG beside each run's inventory.

The GeoPackages are written by :func:`write_inventory` (two years of hand-made slumps, so the
change layer has new, grown and not-detected rows) or by a real ``map`` run on the demo
catalog; they are read back with pyogrio (GDAL) and sqlite3, as QGIS reads them.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import shapely

from arctic_rts.changes import CHANGE_CLASSES
from arctic_rts.gis import STYLE_NAME, quicklook_path, write_quicklook, write_styles
from arctic_rts.inventory import write_inventory
from arctic_rts.merge import merge_polygons

X0, Y0 = 500_000, 7_650_000  # UTM 7N, near Herschel Island
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: The columns of QGIS's ``layer_styles`` table.
QGIS_STYLE_COLUMNS = [
    "f_table_catalog", "f_table_schema", "f_table_name", "f_geometry_column", "styleName",
    "styleQML", "styleSLD", "useAsDefault", "description", "owner", "ui", "update_time",
]  # fmt: skip


def _frame(year: int, date: str, boxes: list[tuple[int, ...]], scene: str) -> gpd.GeoDataFrame:
    """Polygons of one scene as vectorize gives them (the attributes merge_polygons reads)."""
    n = len(boxes)
    return gpd.GeoDataFrame(
        {"scene_id": [scene] * n, "date": [date] * n, "year": [year] * n, "mean_prob": [0.8] * n},
        geometry=[shapely.box(X0 + a, Y0 + b, X0 + c, Y0 + d) for a, b, c, d in boxes],
        crs=32607,
    )


@pytest.fixture
def two_years(tmp_path: Path) -> Path:
    out = tmp_path / "inv.gpkg"
    seen_twice = merge_polygons(
        [
            _frame(2021, "2021-07-13", [(0, 0, 200, 200), (1000, 0, 1100, 100)], "A21"),
            _frame(2021, "2021-08-05", [(0, 0, 200, 210)], "B21"),
        ]
    )
    write_inventory(out, seen_twice, year=2021, run={"run_id": "r1"}, scenes=[])
    grown_and_new = merge_polygons(
        [_frame(2022, "2022-07-20", [(0, 0, 300, 300), (3000, 0, 3100, 100)], "A22")]
    )
    write_inventory(out, grown_and_new, year=2022, run={"run_id": "r2"}, scenes=[])
    return out


def _field_types(path: Path, layer: str) -> dict[str, str]:
    """Column -> declared type, as GDAL reads it from the GeoPackage."""
    with sqlite3.connect(path) as db:
        return {row[1]: row[2] for row in db.execute(f'PRAGMA table_info("{layer}")')}


def test_year_and_change_layers_store_dates_as_dates(two_years: Path) -> None:
    assert _field_types(two_years, "rts_2021")["date_first"] == "DATE"
    assert _field_types(two_years, "changes_2021_2022")["date_curr"] == "DATE"
    rts = pyogrio.read_dataframe(two_years, layer="rts_2021")
    assert rts["date_first"].dtype.kind == rts["date_last"].dtype.kind == "M"  # GDAL: a Date
    twice = rts[rts["n_scenes"] == 2].iloc[0]
    assert twice["date_first"].date() == dt.date(2021, 7, 13)
    assert twice["date_last"].date() == dt.date(2021, 8, 5)
    # every row's span agrees with its text column of dates
    for text, first, last in zip(rts["dates"], rts["date_first"], rts["date_last"], strict=True):
        dates = sorted(text.split(","))
        assert (first.date().isoformat(), last.date().isoformat()) == (dates[0], dates[-1])

    changes = pyogrio.read_dataframe(two_years, layer="changes_2021_2022").set_index("change")
    assert changes.loc["grown", "date_prev"].date() == dt.date(2021, 8, 5)
    assert changes.loc["grown", "date_curr"].date() == dt.date(2022, 7, 20)
    assert changes["date_prev"].isna()["new"] and changes["date_curr"].isna()["not_detected"]


def test_styles_are_in_the_layer_styles_table_qgis_reads(two_years: Path) -> None:
    assert _field_types(two_years, "layer_styles")["useAsDefault"] == "BOOLEAN"
    styles = pyogrio.read_dataframe(two_years, layer="layer_styles", read_geometry=False)
    assert list(styles.columns) == QGIS_STYLE_COLUMNS
    assert sorted(styles["f_table_name"]) == ["changes_2021_2022", "rts_2021", "rts_2022"]
    assert set(styles["styleName"]) == {STYLE_NAME} and styles["useAsDefault"].all()
    with sqlite3.connect(two_years) as db:
        kinds = dict(db.execute("SELECT table_name, data_type FROM gpkg_contents").fetchall())
    assert kinds["layer_styles"] == "attributes"  # registered, as GDAL and QGIS expect
    for row in styles.itertuples():
        geom = pyogrio.read_info(two_years, layer=row.f_table_name)["geometry_name"]
        assert row.f_geometry_column == geom
        qml = ET.fromstring(row.styleQML.split("\n", 1)[1])  # after the DOCTYPE line
        assert qml.tag == "qgis"
        temporal = qml.find("temporal")
        assert temporal is not None and temporal.get("enabled") == "1"
        fields = _field_types(two_years, row.f_table_name)
        # the temporal controller's fields exist and are dates
        assert fields[temporal.get("startField")] == fields[temporal.get("endField")] == "DATE"
        renderer = qml.find("renderer-v2")
        assert renderer is not None
        if row.f_table_name.startswith("changes_"):
            assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "change"
            values = [c.get("value") for c in renderer.iter("category")]
            assert values == list(CHANGE_CLASSES)
            assert len(renderer.findall("symbols/symbol")) == len(values)
        else:
            assert renderer.get("type") == "singleSymbol"


def test_a_users_own_default_style_is_kept(two_years: Path) -> None:
    """A style saved from QGIS stays, and stays the default; ours is refreshed beside it."""
    with sqlite3.connect(two_years) as db:
        db.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, owner,"
            " ui, update_time) VALUES ('', '', 'rts_2021', 'geom', 'mine', '<qgis/>', '', 1, "
            "'', '', NULL, '2026-01-01T00:00:00.000Z')"
        )
    assert write_styles(two_years) == ["rts_2021", "rts_2022", "changes_2021_2022"]
    styles = pyogrio.read_dataframe(two_years, layer="layer_styles", read_geometry=False)
    assert len(styles) == 4
    defaults = styles[styles["useAsDefault"]]
    assert sorted(zip(defaults["f_table_name"], defaults["styleName"], strict=True)) == [
        ("changes_2021_2022", STYLE_NAME), ("rts_2021", "mine"), ("rts_2022", STYLE_NAME),
    ]  # fmt: skip


def test_the_quicklook_is_a_png_beside_the_inventory(two_years: Path) -> None:
    png = write_quicklook(two_years)
    assert png == quicklook_path(two_years) == two_years.with_name("inv.quicklook.png")
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    from PIL import Image

    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.size == (800, 800)
        # not a blank canvas: the slumps and axes put many colours on it
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 20
    assert sorted(p.name for p in two_years.parent.iterdir()) == [
        "inv.gpkg",
        "inv.quicklook.png",
    ]  # fmt: skip  (no temporary file left)


def test_styles_are_written_inside_the_atomic_write(
    two_years: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while styling leaves the previous file byte for byte, and no temporary file."""
    import arctic_rts.inventory as inventory

    before = two_years.read_bytes()

    def broken(path: Path) -> list[str]:
        assert path != two_years and path.parent == two_years.parent  # the temporary copy
        raise RuntimeError("styles failed")

    monkeypatch.setattr(inventory, "write_styles", broken)
    again = merge_polygons([_frame(2023, "2023-07-01", [(0, 0, 300, 300)], "A23")])
    with pytest.raises(RuntimeError, match="styles failed"):
        write_inventory(two_years, again, year=2023, run={"run_id": "r3"}, scenes=[])
    assert two_years.read_bytes() == before
    assert sorted(p.name for p in two_years.parent.iterdir()) == ["inv.gpkg"]
