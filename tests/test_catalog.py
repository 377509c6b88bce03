"""The embedded STAC API: real ``rustac serve`` processes on loopback, queried over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from arctic_rts.catalog import (
    RUSTAC_SERVER_ID,
    absolute_hrefs,
    read_items,
    serve_catalog,
    write_geoparquet,
)
from arctic_rts.errors import CatalogError


def _item(
    item_id: str, collection: str = "sentinel-2-l2a", href: str = "B04.tif"
) -> dict[str, Any]:
    """A small valid item over northern Norway, one asset."""
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": collection,
        "bbox": [20.0, 69.0, 21.0, 70.0],
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[20, 69], [21, 69], [21, 70], [20, 70], [20, 69]]],
        },
        "properties": {"datetime": "2021-07-15T10:00:00Z", "eo:cloud_cover": 5.0},
        "links": [],
        "assets": {"red": {"href": href, "type": "image/tiff"}},
    }


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=20) as response:
        return json.loads(response.read())


def _search(url: str, **body: Any) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        url + "/search",
        data=json.dumps({"limit": 100, **body}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return list(json.loads(response.read())["features"])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _write_folder(folder: Path, items: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for item in items:
        (folder / f"{item['id']}.json").write_text(json.dumps(item))
    return folder


def test_folder_is_served_with_absolute_hrefs_and_collections(tmp_path: Path) -> None:
    folder = _write_folder(
        tmp_path / "items",
        [_item("a"), _item("b", href="../cogs/B04.tif"), _item("c", collection="other")],
    )
    # A FeatureCollection file and a collection document sit beside the item files.
    (folder / "more.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": [_item("d")]})
    )
    (folder / "collection.json").write_text(json.dumps({"type": "Collection", "id": "x"}))
    with serve_catalog(folder) as url:
        assert url.startswith("http://127.0.0.1:")
        root = _get(url + "/")
        assert root["id"] == RUSTAC_SERVER_ID
        collections = {c["id"] for c in _get(url + "/collections")["collections"]}
        assert collections == {"sentinel-2-l2a", "other"}
        found = _search(url, collections=["sentinel-2-l2a"])
        assert sorted(i["id"] for i in found) == ["a", "b", "d"]
        hrefs = {i["id"]: i["assets"]["red"]["href"] for i in found}
        assert hrefs["a"] == str(folder.resolve() / "B04.tif")
        assert hrefs["b"] == str(tmp_path.resolve() / "cogs" / "B04.tif")
        assert [i["id"] for i in _search(url, collections=["other"])] == ["c"]


def test_asset_keys_differing_in_case_across_items_are_spelled_one_way(tmp_path: Path) -> None:
    """Earth Search's ``scl`` and Planetary Computer's ``SCL`` in one folder: without unifying,
    DuckDB serves the second spelling as ``scl_1`` and the mask is lost."""
    upper = _item("pc") | {"assets": {"SCL": {"href": "SCL.tif"}, "B04": {"href": "B04.tif"}}}
    lower = _item("es") | {"assets": {"scl": {"href": "scl.tif"}, "red": {"href": "red.tif"}}}
    folder = _write_folder(tmp_path / "items", [upper, lower])
    with serve_catalog(folder) as url:
        found = {i["id"]: i["assets"] for i in _search(url)}
    # the first file read ("es.json") sets the spelling
    assert set(found["pc"]) == {"scl", "B04"}
    assert set(found["es"]) == {"scl", "red"}
    assert found["pc"]["scl"]["href"] == str(folder.resolve() / "SCL.tif")
    both = _item("both") | {"assets": {"scl": {"href": "/a.tif"}, "SCL": {"href": "/b.tif"}}}
    with pytest.raises(CatalogError, match="differ only in case"):
        write_geoparquet([both], tmp_path / "x.parquet")


def test_parquet_file_is_served_and_filter_works(tmp_path: Path) -> None:
    items = [
        absolute_hrefs(_item(f"s{i}"), tmp_path) | {"properties": {
            "datetime": f"2021-07-{10 + i}T10:00:00Z", "eo:cloud_cover": 10.0 * i,
        }}
        for i in range(5)
    ]  # fmt: skip
    parquet = write_geoparquet(items, tmp_path / "cat" / "items.parquet")
    assert parquet.is_file()
    with serve_catalog(parquet) as url:
        cql = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 25]}
        found = _search(url, filter=cql, **{"filter-lang": "cql2-json"})
        assert sorted(i["id"] for i in found) == ["s0", "s1", "s2"]


def test_server_stops_after_the_block_even_on_error(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "items", [_item("a")])
    with pytest.raises(RuntimeError, match="boom"), serve_catalog(folder) as url:
        port = int(url.rsplit(":", 1)[1])
        assert _port_open(port)
        raise RuntimeError("boom")
    assert not _port_open(port)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc/net/tcp")
def test_server_listens_on_loopback_only(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "items", [_item("a")])
    with serve_catalog(folder) as url:
        port = int(url.rsplit(":", 1)[1])
        listening = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            if not Path(table).exists():
                continue
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:
                    listening.append(address)
        # 0100007F is 127.0.0.1 in /proc's little-endian hex.
        assert listening == ["0100007F"]
        # and the rustac server behind the paging front listens on loopback too
        import psutil

        servers = [p for p in psutil.Process().children() if "rustac" in p.name()]
        bound = [
            c.laddr.ip for p in servers for c in p.net_connections("inet") if c.status == "LISTEN"
        ]
        assert bound and set(bound) == {"127.0.0.1"}, bound


def test_catalog_is_rebuilt_when_items_change(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "items", [_item("a")])
    with serve_catalog(folder) as url:
        assert [i["id"] for i in _search(url)] == ["a"]
    _write_folder(folder, [_item("b")])
    with serve_catalog(folder) as url:
        assert sorted(i["id"] for i in _search(url)) == ["a", "b"]


def test_bad_sources_are_catalog_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="neither"), serve_catalog(tmp_path / "missing"):
        pass
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match="No STAC items"), serve_catalog(tmp_path / "empty"):
        pass
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.json").write_text('{"hello": 1}')
    with pytest.raises(CatalogError, match="not a STAC item"):
        read_items(junk)
    (junk / "x.json").write_text("{not json")
    with pytest.raises(CatalogError, match="Cannot read"):
        read_items(junk)


def test_write_geoparquet_refuses_relative_hrefs_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="relative href"):
        write_geoparquet([_item("a")], tmp_path / "x.parquet")
    item = absolute_hrefs(_item("a"), tmp_path)
    with pytest.raises(CatalogError, match="twice"):
        write_geoparquet([item, item], tmp_path / "x.parquet")
    with pytest.raises(CatalogError, match="No STAC items"):
        write_geoparquet([], tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()


def test_busy_port_is_a_catalog_error(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "items", [_item("a")])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(CatalogError, match="Cannot listen"), serve_catalog(folder, port=port):
            pass


def test_serve_forever_runs_until_sigterm(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "items", [_item("a")])
    code = 'import sys; from arctic_rts.cli import main; main(["catalog", "serve", sys.argv[1]])'
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "STAC API at http://127.0.0.1:" in line, line or process.stderr.read()
        url = line.split(" at ", 1)[1].split()[0]
        port = int(url.rsplit(":", 1)[1])
        assert [i["id"] for i in _search(url)] == ["a"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        # The rustac child went with it.
        assert not _port_open(port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
