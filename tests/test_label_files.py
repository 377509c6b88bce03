"""``dataset build`` on label files as they come: CSV and XLSX tables, points, odd CRSs, empty
layers, undated inventories. Every refusal is one line on stderr, exit code 2, and no zarr left.

The labels are the generated demo catalog's true slump outlines, served with the catalog's items
by the embedded STAC API (a real ``rustac serve`` process).
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest

from arctic_rts.cli import EXIT_ERROR, EXIT_OK, main
from arctic_rts.demo import DemoCatalog, generate_demo
from arctic_rts.train.data import PatchDataset

pytestmark = pytest.mark.slow

#: A day inside the demo's 2021 season; labels dated so take the closest scene within 60 days.
DAY = "2021-07-20"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return generate_demo(tmp_path_factory.mktemp("demo") / "catalog", seed=5, size_px=120)


@pytest.fixture(scope="module")
def truth(demo: DemoCatalog) -> gpd.GeoDataFrame:
    """The 2021 outlines with a date column of another name than the usual ones."""
    frame = gpd.read_file(demo.truth_path)
    frame = frame[frame["year"] == 2021].drop(columns=["year"]).reset_index(drop=True)
    frame["acquired"] = DAY
    return frame


def _build(demo: DemoCatalog, labels: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "dataset", "build", "--labels", str(labels), "--stac", str(demo.items_dir),
            "--out", str(out), "--bands", "B04", "B08", "--patch-size", "32", "--stride", "32",
            "--tolerance-days", "60", *extra,
        ]
    )  # fmt: skip


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int, match: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == EXIT_ERROR, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("arctic-rts: error:") and match in err, err
    return err


@pytest.fixture(scope="module")
def reference(
    demo: DemoCatalog, truth: gpd.GeoDataFrame, tmp_path_factory: pytest.TempPathFactory
) -> int:
    """Labelled patches built from the same outlines in a GeoPackage."""
    folder = tmp_path_factory.mktemp("ref")
    truth.to_file(folder / "truth.gpkg")
    code = _build(demo, folder / "truth.gpkg", folder / "ref.zarr", "--date-column", "acquired")
    assert code == EXIT_OK
    n = len(PatchDataset(folder / "ref.zarr", "labelled"))
    assert n > 0
    return n


def test_csv_with_a_named_wkt_column_and_date_column(
    demo: DemoCatalog, truth: gpd.GeoDataFrame, reference: int, tmp_path: Path
) -> None:
    table = truth.drop(columns="geometry").assign(outline=truth.geometry.to_wkt())
    table.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "csv.zarr"
    code = _build(demo, tmp_path / "labels.csv", out, "--wkt-column", "outline",
                  "--label-crs", "EPSG:4326", "--date-column", "acquired")  # fmt: skip
    assert code == EXIT_OK
    assert len(PatchDataset(out, "labelled")) == reference


def test_xlsx_with_a_named_wkt_column_and_a_fixed_date(
    demo: DemoCatalog, truth: gpd.GeoDataFrame, reference: int, tmp_path: Path
) -> None:
    # An undated inventory: no date column at all, the date given on the command line.
    table = truth.drop(columns=["geometry", "acquired"]).assign(wkt=truth.geometry.to_wkt())
    pyogrio.write_dataframe(table, tmp_path / "labels.xlsx", driver="XLSX")
    out = tmp_path / "xlsx.zarr"
    code = _build(demo, tmp_path / "labels.xlsx", out, "--wkt-column", "wkt",
                  "--label-crs", "EPSG:4326", "--date", DAY)  # fmt: skip
    assert code == EXIT_OK
    assert len(PatchDataset(out, "labelled")) == reference


def test_a_table_without_named_columns_or_crs_is_refused(
    demo: DemoCatalog, truth: gpd.GeoDataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = truth.drop(columns="geometry").assign(outline=truth.geometry.to_wkt())
    table.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "x.zarr"
    _one_line_error(capsys, _build(demo, tmp_path / "labels.csv", out), "--wkt-column")
    code = _build(demo, tmp_path / "labels.csv", out, "--wkt-column", "outline")
    _one_line_error(capsys, code, "--label-crs")
    code = _build(demo, tmp_path / "labels.csv", out, "--wkt-column", "shape",
                  "--label-crs", "EPSG:4326")  # fmt: skip
    _one_line_error(capsys, code, "no column shape")
    assert list(tmp_path.glob("*.zarr")) == [] and list(tmp_path.glob(".*")) == []


def test_points_are_refused_or_buffered_on_request(
    demo: DemoCatalog, truth: gpd.GeoDataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    centres = truth.to_crs(3413).representative_point().to_crs(4326)
    table = truth.drop(columns="geometry").assign(lon=centres.x, lat=centres.y)
    table.to_csv(tmp_path / "points.csv", index=False)
    args = ("--x-column", "lon", "--y-column", "lat", "--label-crs", "EPSG:4326",
            "--date-column", "acquired")  # fmt: skip
    out = tmp_path / "points.zarr"
    err = _one_line_error(capsys, _build(demo, tmp_path / "points.csv", out, *args), "--buffer-m")
    assert "Point" in err and "polygons" in err
    assert not out.exists()
    assert _build(demo, tmp_path / "points.csv", out, *args, "--buffer-m", "60") == EXIT_OK
    assert len(PatchDataset(out, "labelled")) > 0


def test_geocentric_missing_crs_and_empty_layers_are_refused(
    demo: DemoCatalog, truth: gpd.GeoDataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 2-D layer in geocentric EPSG:4978 (what landed silently at latitude 0).
    geocentric = truth.set_crs("EPSG:4978", allow_override=True)
    geocentric.to_file(tmp_path / "ecef.gpkg")
    out = tmp_path / "x.zarr"
    _one_line_error(capsys, _build(demo, tmp_path / "ecef.gpkg", out), "geocentric")
    pyogrio.write_dataframe(truth.set_crs(None, allow_override=True), tmp_path / "nocrs.shp")
    _one_line_error(capsys, _build(demo, tmp_path / "nocrs.shp", out), "no CRS")
    truth.iloc[:0].to_file(tmp_path / "empty.gpkg")
    _one_line_error(capsys, _build(demo, tmp_path / "empty.gpkg", out), "no features")
    assert not out.exists()


def test_undated_labels_need_a_date_column_or_a_fixed_date(
    demo: DemoCatalog, truth: gpd.GeoDataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truth.drop(columns="acquired").to_file(tmp_path / "undated.gpkg")
    out = tmp_path / "x.zarr"
    with pytest.warns(UserWarning, match="without a readable date"):
        code = _build(demo, tmp_path / "undated.gpkg", out)
    _one_line_error(capsys, code, "no usable slump polygon")
    code = _build(demo, tmp_path / "undated.gpkg", out, "--date-column", "when")
    _one_line_error(capsys, code, "no date column 'when'")
    assert _build(demo, tmp_path / "undated.gpkg", out, "--date", DAY) == EXIT_OK


def test_a_build_that_fails_after_it_started_writing_leaves_no_zarr(
    demo: DemoCatalog, truth: gpd.GeoDataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Dated years away from every scene: the store is opened, no patch can be cut, the build
    # fails; neither a partial store nor a temporary one is left, and an older dataset survives.
    truth.to_file(tmp_path / "labels.gpkg")
    out = tmp_path / "data.zarr"
    _one_line_error(
        capsys, _build(demo, tmp_path / "labels.gpkg", out, "--date", "2017-01-01"),
        "no labelled patch",
    )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.gpkg"]
    assert _build(demo, tmp_path / "labels.gpkg", out, "--date-column", "acquired") == EXIT_OK
    before = len(PatchDataset(out, "labelled"))
    code = _build(demo, tmp_path / "labels.gpkg", out, "--date-column", "acquired",
                  "--tolerance-days", "0", "--date", "2017-01-01")  # fmt: skip
    assert code == EXIT_ERROR
    assert len(PatchDataset(out, "labelled")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.zarr", "labels.gpkg"]
