"""Asset hrefs and grids from a catalog are judged before anything reads them
(``arctic_rts.asset_checks``): local files only under the allowed folders, after ``..`` and
symbolic links are resolved; only http(s), s3 and local files; hosts from an allowlist when one
is given; no FIFO or other non-regular file; no grid far larger than the item's footprint.

The searches run against the real embedded STAC API; the loads against real GeoTIFFs.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from test_load import _item, _write_rasters
from test_search_edges import _footprint, write_items

from arctic_rts.asset_checks import AssetPolicy, asset_policy, grid_problem
from arctic_rts.catalog import catalog_root, read_items, serve_catalog, served_roots
from arctic_rts.cli import EXIT_ERROR, main
from arctic_rts.config import LoadConfig, SearchConfig
from arctic_rts.errors import CatalogError, LoadError, SkippedInputWarning
from arctic_rts.load import load_scenes
from arctic_rts.search import normalize_item, search_scenes

BOX = (14.95, 69.35, 15.05, 69.45)  # inside the test items' footprint (UTM 33N)


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A catalog folder ``cat`` with its rasters in ``cat/r``, and a valid raster outside it."""
    cat, outside = tmp_path / "cat", tmp_path / "outside"
    _write_rasters(cat / "r")
    outside.mkdir()
    secret = outside / "B08.tif"
    secret.write_bytes((cat / "r" / "B08.tif").read_bytes())  # a real raster: readable if asked
    return {"cat": cat, "r": cat / "r", "secret": secret}


def test_local_hrefs_must_lie_under_an_allowed_root_after_dots_and_links_are_resolved(
    layout: dict[str, Path],
) -> None:
    r, secret = layout["r"], layout["secret"]
    (r / "link.tif").symlink_to(secret)
    (r / "inner_link.tif").symlink_to(r / "B04.tif")
    policy = AssetPolicy(roots=(Path(os.path.realpath(layout["cat"])),))
    allowed = [str(r / "B04.tif"), f"file://{r / 'B04.tif'}", str(r / "inner_link.tif")]
    allowed += [str(r / "missing.tif")]  # its read fails later, with the reason, per scene
    for href in allowed:
        assert policy.href_problem(href) is None, href
    refused = [
        str(r / ".." / ".." / "outside" / "B08.tif"),  # ../ out of the catalog
        f"file://{secret}",
        f"file://localhost{secret}",
        str(r / "link.tif"),  # a symbolic link inside that points outside
        "/etc/hostname",
        f"file://other-host{r / 'B04.tif'}",
        "r/B04.tif",  # relative: nothing to resolve it against
    ]
    for href in refused:
        assert policy.href_problem(href), href
    assert "outside the allowed folders" in str(policy.href_problem(str(r / "link.tif")))
    # No root at all (a STAC API given as a URL): no local file, however it is written.
    assert AssetPolicy().href_problem(str(r / "B04.tif"))


@pytest.mark.parametrize(
    "href",
    [
        "ftp://example.com/B04.tif",
        "gs://bucket/B04.tif",
        "data:image/tiff;base64,AAAA",
        "sftp://example.com/B04.tif",
        "/vsicurl/https://example.com/B04.tif",  # GDAL's own handlers are local paths: refused
        "/vsizip//tmp/x.zip/B04.tif",
    ],
)
def test_other_schemes_and_gdal_handlers_are_refused(href: str) -> None:
    assert AssetPolicy(roots=(Path("/tmp"),)).href_problem(href)


def test_http_hosts_are_free_unless_listed() -> None:
    anywhere = AssetPolicy()
    assert (
        anywhere.href_problem("https://sentinel-cogs.s3.us-west-2.amazonaws.com/a/B04.tif") is None
    )
    assert anywhere.href_problem("http://10.0.0.1/B04.tif") is None
    assert anywhere.href_problem("s3://sentinel-cogs/a/B04.tif") is None
    listed = asset_policy(
        "https://earth-search.aws.element84.com/v1",
        LoadConfig(asset_hosts=(".amazonaws.com", "Example.org")),
    )
    assert listed.roots == ()  # a remote API names no local folder
    for ok in (
        "https://sentinel-cogs.s3.us-west-2.amazonaws.com/a/B04.tif",
        "https://amazonaws.com/B04.tif",
        "https://example.org/B04.tif",
        "HTTPS://EXAMPLE.ORG/B04.tif",
        "https://user@example.org:8443/B04.tif",
        "s3://any-bucket/B04.tif",  # bucket names are not hosts
    ):
        assert listed.href_problem(ok) is None, ok
    for bad in (
        "https://evil.com/B04.tif",
        "https://example.org.evil.com/B04.tif",
        "https://notexample.org/B04.tif",
        "https://amazonaws.com.evil.com/B04.tif",
    ):
        problem = listed.href_problem(bad)
        assert problem and "not among the allowed asset hosts" in problem, bad


def test_hosts_that_are_not_host_names_are_a_one_line_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ValueError, match="asset_hosts"):
        LoadConfig(asset_hosts=("https://example.org/",))
    code = main([
        "map", "--bbox", "15", "69", "15.1", "69.1", "--year", "2021",
        "--stac", "http://127.0.0.1:9", "--asset-host", "https://example.org/",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert err.startswith("arctic-rts: error: --asset-host must be host names"), err
    assert err.count("\n") == 1, err


def test_the_roots_are_the_served_catalog_and_the_listed_folders(
    layout: dict[str, Path], tmp_path: Path
) -> None:
    cat = layout["cat"]
    write_items(cat, [_footprint(_item(layout["r"]))])
    # a generated demo catalog's items folder: the demo's root (its items name ../cogs/...)
    demo = tmp_path / "demo"
    (demo / "items").mkdir(parents=True)
    (demo / "demo_manifest.json").write_text("{}")
    assert catalog_root(demo / "items") == demo.resolve()
    assert catalog_root(cat) == cat.resolve()
    assert catalog_root(cat / "items.parquet") == cat.resolve()
    extra = tmp_path / "extra"
    extra.mkdir()
    with serve_catalog(cat) as url:
        assert served_roots(url) == (Path(os.path.realpath(cat)),)
        assert served_roots(url + "/") == served_roots(url)
        policy = asset_policy(url, LoadConfig(asset_roots=(str(extra / "sub" / ".."),)))
        assert policy.roots == (Path(os.path.realpath(cat)), Path(os.path.realpath(extra)))
    assert served_roots(url) == ()  # stopped: the folder is no longer open to hrefs


def _edit(item: dict[str, Any], item_id: str, **b08: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(item))
    out["id"] = item_id
    out["assets"]["nir"].update(b08)
    return _footprint(out)


@pytest.mark.timeout(120)
def test_escaping_blocking_or_oversized_items_are_skipped_in_one_warning_and_never_loaded(
    layout: dict[str, Path],
) -> None:
    cat, r, secret = layout["cat"], layout["r"], layout["secret"]
    (r / "link.tif").symlink_to(secret)
    os.mkfifo(r / "pipe.tif")  # GDAL would block for ever opening it
    base = _item(r, "S2B_33WXS_20210715_0_L2A")
    shape = base["assets"]["nir"]["proj:shape"]
    hostile = {
        "S2B_33WXS_20210716_0_L2A": {"href": "../outside/B08.tif"},  # relative to the item file
        "S2B_33WXS_20210717_0_L2A": {"href": str(r / ".." / ".." / "outside" / "B08.tif")},
        "S2B_33WXS_20210718_0_L2A": {"href": f"file://{secret}"},
        "S2B_33WXS_20210719_0_L2A": {"href": str(r / "link.tif")},
        "S2B_33WXS_20210720_0_L2A": {"href": "ftp://example.com/B08.tif"},
        "S2B_33WXS_20210721_0_L2A": {"href": str(r / "pipe.tif")},
        # 320 km for a footprint 8 km wide (these test items' grids are only 320 m)
        "S2B_33WXS_20210722_0_L2A": {"proj:shape": [shape[0] * 1000, shape[1] * 1000]},
    }
    items = [_footprint(base)] + [_edit(base, i, **change) for i, change in hostile.items()]
    write_items(cat, items)
    reasons = {
        "S2B_33WXS_20210716_0_L2A": "outside the allowed folders",
        "S2B_33WXS_20210717_0_L2A": "outside the allowed folders",
        "S2B_33WXS_20210718_0_L2A": "outside the allowed folders",
        "S2B_33WXS_20210719_0_L2A": "outside the allowed folders",
        "S2B_33WXS_20210720_0_L2A": "URL scheme 'ftp'",
        "S2B_33WXS_20210721_0_L2A": "named pipe",
        "S2B_33WXS_20210722_0_L2A": "far more than the item's footprint",
    }
    with serve_catalog(cat) as url:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = search_scenes(BOX, 2021, stac_url=url, config=SearchConfig(months=(7,)))
        policy = asset_policy(url)
    skipped = [w for w in caught if issubclass(w.category, SkippedInputWarning)]
    assert len(skipped) == 1, [str(w.message) for w in caught]
    assert str(skipped[0].message).startswith("Skipped 7 of 8 item(s)")
    assert [it["id"] for it in found] == [base["id"]]
    # each for its own reason, named in the message
    for raw in read_items(cat):
        if raw["id"] in reasons:
            with pytest.raises(CatalogError, match=reasons[raw["id"]]):
                normalize_item(raw, policy=policy)
    [da] = load_scenes(found, ["B04", "B08"])
    assert bool(da.notnull().any().compute())


@pytest.mark.timeout(60)
def test_a_fifo_given_to_load_scenes_is_refused_before_gdal_opens_it(tmp_path: Path) -> None:
    _write_rasters(tmp_path / "r")
    os.mkfifo(tmp_path / "r" / "pipe.tif")
    item = _item(tmp_path / "r")
    item["assets"]["nir"]["href"] = f"file://{tmp_path / 'r' / 'pipe.tif'}"
    with pytest.raises(LoadError, match="named pipe"):
        load_scenes([item], ["B04", "B08"])
    item["assets"]["nir"]["href"] = str(tmp_path / "r")  # a folder is no raster either
    with pytest.raises(LoadError, match="not a regular file"):
        load_scenes([item], ["B04", "B08"])


def test_a_grid_far_larger_than_the_footprint_is_refused(tmp_path: Path) -> None:
    item = normalize_item(_footprint(_item(tmp_path)))  # a 320 m grid, footprint 8 x 22 km
    assert grid_problem(item) is None

    def changed(**red: Any) -> dict[str, Any]:
        out = json.loads(json.dumps(item))
        out["assets"]["B04"].update(red)
        return out

    shape, transform = item["assets"]["B04"]["proj:shape"], item["assets"]["B04"]["proj:transform"]
    assert grid_problem(changed(**{"proj:shape": [n * 100 for n in shape]})) is None  # 32 km
    big = changed(**{"proj:shape": [n * 1000 for n in shape]})  # 320 km
    assert "B04's grid" in str(grid_problem(big))
    assert "far more than the item's footprint" in str(grid_problem(big))
    assert grid_problem(changed(**{"proj:transform": [transform[0] * 1000, *transform[1:]]}))
    by_bbox = json.loads(json.dumps(item))
    for asset in by_bbox["assets"].values():
        del asset["proj:shape"], asset["proj:transform"]
        asset["proj:bbox"] = [400000.0, 7600000.0, 400000.0 + 1e7, 7700000.0]
    assert "wide" in str(grid_problem(by_bbox))
    # without a footprint or a CRS there is nothing to compare: left to the loader
    no_footprint = {k: v for k, v in big.items() if k not in ("geometry", "bbox")}
    assert grid_problem(no_footprint) is None


@pytest.mark.realdata
def test_every_real_item_passes_the_grid_check(shared_data: Path) -> None:
    """Earth Search and Planetary Computer items, including slivers at an orbit's edge whose
    footprint is under 1 km tall inside a 109.8 km tile grid."""
    items: list[dict[str, Any]] = []
    for path in sorted((shared_data / "stac_items").glob("*.*json")):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
            items += doc["features"]
        elif isinstance(doc, dict) and doc.get("type") == "Feature":
            items.append(doc)
    assert len(items) > 100
    checked = 0
    for raw in items:
        item = normalize_item(raw, base="https://example.com/")
        if item["properties"].get("proj:epsg") and item.get("geometry"):
            assert grid_problem(item) is None, item["id"]
            checked += 1
    assert checked > 100
