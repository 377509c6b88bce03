"""The fault table (RELIABILITY.md): each test injects one fault the way an operator meets it and
checks what the run did and that nothing finished was lost.

Network faults go through :class:`faults.FaultProxy`, a loopback proxy in front of the real
embedded STAC API; COG faults break real COG files of a copied demo catalog; storage faults use
a read-only folder, a file where the folder should be, a held lock and a file-size limit
(``RLIMIT_FSIZE``: the kernel's "disk full" for one process). Map runs use a real two-process
Dask cluster (one per module) and read the GeoPackage back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyogrio
import pytest
from faults import FaultProxy, Faults, break_cog, free_port_closed, html_server

from arctic_rts.asset_checks import AssetPolicy
from arctic_rts.catalog import stac_endpoint
from arctic_rts.cli import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOTHING_FOUND,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNEXPECTED,
    main,
)
from arctic_rts.cluster import connect
from arctic_rts.config import ClusterConfig, MapConfig, NetworkConfig, PredictConfig, SearchConfig
from arctic_rts.demo import DemoCatalog, generate_demo
from arctic_rts.errors import CatalogError
from arctic_rts.search import search_scenes

YEAR = 2021
#: Quick retries for tests: the waits are short, the bounds are what is checked.
FAST = NetworkConfig(
    connect_timeout_s=2, read_timeout_s=2, max_retries=8, backoff_s=0.01, max_backoff_s=0.05
)
CONFIG = MapConfig(
    search=SearchConfig(months=(6, 7, 8), max_cloud_cover=60.0),
    predict=PredictConfig(tile_size=128, halo=128, device="cpu"),
    cluster=ClusterConfig(n_workers=2, threads_per_worker=1, gpu="no"),
    network=FAST,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    # The catalog test_pipeline.py and test_cli.py map, reused when they run in one session.
    return generate_demo(tmp_path_factory.getbasetemp() / "demo-catalog-180", size_px=180)


@pytest.fixture(scope="module")
def stac_url(demo: DemoCatalog) -> Iterator[str]:
    with stac_endpoint(demo.items_dir) as url:
        yield url


@pytest.fixture(scope="module")
def expected_ids(demo: DemoCatalog, stac_url: str) -> list[str]:
    """The search's answer without faults."""
    found = search_scenes(demo.bbox, YEAR, stac_url=stac_url, config=CONFIG.search, network=FAST)
    assert found
    return [it["id"] for it in found]


def _search(demo: DemoCatalog, url: str, network: NetworkConfig = FAST) -> list[str]:
    # Through a proxy the API is a URL like any other, which names no local folder: the demo's
    # COGs are allowed explicitly.
    assets = AssetPolicy(roots=(Path(os.path.realpath(demo.root)),))
    found = search_scenes(
        demo.bbox, YEAR, stac_url=url, config=CONFIG.search, network=network, assets=assets
    )
    return [it["id"] for it in found]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    """Temporary and lock files left beside the outputs."""
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or p.suffix == ".lock")


def _one_line(err: str) -> None:
    assert err.startswith("arctic-rts: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else EXIT_ERROR
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------
# STAC requests


def test_30_percent_of_requests_failing_with_502_are_retried(
    demo: DemoCatalog, stac_url: str, expected_ids: list[str]
) -> None:
    with FaultProxy(stac_url, Faults(share=0.3, status=502, seed=3)) as proxy:
        assert _search(demo, proxy.url) == expected_ids
    assert proxy.faulted, "the proxy injected no fault"
    # The POST search requests were among the failed and retried ones.
    assert {e.method for e in proxy.faulted} >= {"POST"}


def test_429_with_retry_after_is_waited_for_on_the_post_search(
    demo: DemoCatalog, stac_url: str, expected_ids: list[str]
) -> None:
    faults = Faults(first=1, status=429, retry_after="1", methods=frozenset({"POST"}))
    with FaultProxy(stac_url, faults) as proxy:
        assert _search(demo, proxy.url) == expected_ids
    posts = [e for e in proxy.log if e.method == "POST"]
    assert posts[0].fault == "status 429" and not posts[1].fault
    # The retry came after the second the server asked for, not after the 10 ms backoff.
    assert posts[1].at - posts[0].at >= 0.95


def test_a_retry_after_past_the_retry_budget_fails_at_once_naming_the_url(
    demo: DemoCatalog, stac_url: str
) -> None:
    net = NetworkConfig(max_retries=3, backoff_s=0.01, retry_total_s=5)
    with FaultProxy(stac_url, Faults(share=1.0, status=429, retry_after="3600")) as proxy:
        t0 = time.monotonic()
        with pytest.raises(CatalogError, match="asked to wait 3600 s") as caught:
            _search(demo, proxy.url, net)
    assert time.monotonic() - t0 < 5
    assert proxy.url in str(caught.value)
    assert len(proxy.log) == 1


def test_resets_are_retried_with_backoff(
    demo: DemoCatalog, stac_url: str, expected_ids: list[str]
) -> None:
    # The first request (the landing page, a GET) and the first POST search are reset.
    with FaultProxy(stac_url, Faults(first=1, reset=True)) as proxy:
        assert _search(demo, proxy.url) == expected_ids
    with FaultProxy(stac_url, Faults(first=1, reset=True, methods=frozenset({"POST"}))) as post:
        assert _search(demo, post.url) == expected_ids
    assert [e.method for e in proxy.faulted + post.faulted] == ["GET", "POST"]


def test_answers_delayed_past_the_read_timeout_are_retried(
    demo: DemoCatalog, stac_url: str, expected_ids: list[str]
) -> None:
    net = NetworkConfig(read_timeout_s=0.3, max_retries=3, backoff_s=0.01)
    faults = Faults(first=2, delay_s=1.5, methods=frozenset({"POST"}))
    with FaultProxy(stac_url, faults) as proxy:
        assert _search(demo, proxy.url, net) == expected_ids
    assert len(proxy.faulted) == 2


def test_a_server_that_never_answers_in_time_fails_within_the_bounds(
    demo: DemoCatalog, stac_url: str
) -> None:
    net = NetworkConfig(read_timeout_s=0.3, max_retries=2, backoff_s=0.01)
    with FaultProxy(stac_url, Faults(share=1.0, delay_s=2.0)) as proxy:
        t0 = time.monotonic()
        with pytest.raises(CatalogError, match="read timeout") as caught:
            _search(demo, proxy.url, net)
        assert time.monotonic() - t0 < 10
    assert proxy.url in str(caught.value)
    assert "3 tries" in str(caught.value)


def test_truncated_json_is_retried_and_never_parsed(
    demo: DemoCatalog, stac_url: str, expected_ids: list[str]
) -> None:
    with FaultProxy(stac_url, Faults(first=2, truncate=True)) as proxy:
        assert _search(demo, proxy.url) == expected_ids
    assert len(proxy.faulted) == 2
    net = NetworkConfig(max_retries=2, backoff_s=0.01)
    with (
        FaultProxy(stac_url, Faults(share=1.0, truncate=True)) as proxy,
        pytest.raises(CatalogError, match="truncated or invalid JSON") as caught,
    ):
        _search(demo, proxy.url, net)
    assert proxy.url in str(caught.value)


def test_a_client_error_is_not_retried(demo: DemoCatalog, stac_url: str) -> None:
    with (
        FaultProxy(stac_url, Faults(share=1.0, status=404)) as proxy,
        pytest.raises(CatalogError, match=proxy.url),
    ):
        _search(demo, proxy.url)
    assert len(proxy.log) == 1  # a 404 stays a 404: asked once


def test_the_fault_proxy_stops_itself(stac_url: str) -> None:
    proxy = FaultProxy(stac_url, Faults(), lifetime_s=0.2)
    with proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 10
        while not proxy.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.stopped
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_plain_html_server_as_stac_says_so(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.gpkg"
    with html_server() as url:
        argv = ["map", "--bbox", "-138.05", "69.04", "-137.95", "69.06", "--year", "2021"]
        code, _, err = _cli(
            [*argv, "--stac", url, "--weights", str(weights), "--out", str(out)], capsys
        )
    assert code == EXIT_ERROR
    _one_line(err)
    assert "HTML page, not STAC JSON" in err and url in err
    assert "Expecting value" not in err
    assert not out.exists() and _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Map runs: COG faults, never losing a good layer, storage, exit codes


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with connect(CONFIG.cluster) as c:
        yield c


def _selected(catalog: Path) -> dict[str, str]:
    """Per MGRS tile, the in-season item id the run selects (least cloud)."""
    best: dict[str, tuple[float, str]] = {}
    for path in sorted((catalog / "items").glob("*.json")):
        props = json.loads(path.read_text())["properties"]
        cloud = float(props["eo:cloud_cover"])
        if int(props["datetime"][5:7]) not in CONFIG.search.months or cloud > 60:
            continue
        tile = f"{props['mgrs:utm_zone']}{props['mgrs:latitude_band']}{props['mgrs:grid_square']}"
        if tile not in best or cloud < best[tile][0]:
            best[tile] = (cloud, path.stem)
    return {tile: item_id for tile, (_, item_id) in best.items()}


def _cog(catalog: Path, item_id: str, asset: str = "nir") -> Path:
    item = json.loads((catalog / "items" / f"{item_id}.json").read_text())
    return (catalog / "items" / item["assets"][asset]["href"]).resolve()


def _add_tile(catalog: Path, item_id: str, square: str) -> str:
    """A copy of ``item_id`` on its own COGs, as if from another MGRS tile (``square``)."""
    item = json.loads((catalog / "items" / f"{item_id}.json").read_text())
    new_id = item_id.replace("_0_L2A", f"_{square}_L2A")
    shutil.copytree(catalog / "cogs" / item_id, catalog / "cogs" / new_id)
    item["id"] = new_id
    item["properties"]["mgrs:grid_square"] = square
    for asset in item["assets"].values():
        asset["href"] = asset["href"].replace(f"/{item_id}/", f"/{new_id}/")
    for link in item.get("links", []):
        link["href"] = link["href"].replace(item_id, new_id)
    (catalog / "items" / f"{new_id}.json").write_text(json.dumps(item))
    return new_id


def _map_argv(stac: Path | str, weights: Path, out: Path, client: Any) -> list[str]:
    bbox = [str(v) for v in CONFIG_BBOX]
    return [
        "map", "--bbox", *bbox, "--year", str(YEAR), "--stac", str(stac), "--weights",
        str(weights), "--out", str(out), "--scheduler", client.scheduler.address, "--quiet",
        "--tile-size", "128", "--retries", "2",
    ]  # fmt: skip


#: The demo catalog's bbox (fixed by its seed and size).
CONFIG_BBOX = (-138.03082, 69.04143, -137.97059, 69.05891)


@pytest.fixture(scope="module")
def good_inventory(
    demo: DemoCatalog, weights: Path, client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A good inventory of the demo year, made by a fault-free run."""
    assert tuple(demo.bbox) == CONFIG_BBOX
    out = tmp_path_factory.mktemp("good") / "inventory.gpkg"
    code = main(_map_argv(demo.items_dir, weights, out, client))
    assert code == EXIT_OK
    assert len(pyogrio.read_dataframe(out, layer=f"rts_{YEAR}")) > 0
    assert _leftovers(out.parent) == []  # no temp file, no .lock beside a finished output
    return out


def test_cog_missing_truncated_random_or_silent_fails_that_scene_only(
    catalog_copy: Path,
    weights: Path,
    client: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fs, lb = _selected(catalog_copy)["7WFS"], _selected(catalog_copy)["8WLB"]
    extra, silent_id = _add_tile(catalog_copy, fs, "FT"), _add_tile(catalog_copy, lb, "LD")
    intact = _add_tile(catalog_copy, lb, "LC")
    broken = {
        fs: break_cog(_cog(catalog_copy, fs), "missing"),
        lb: break_cog(_cog(catalog_copy, lb), "truncated"),
        extra: break_cog(_cog(catalog_copy, extra), "random"),
    }
    out = tmp_path / "out" / "inventory.gpkg"
    out.parent.mkdir()
    argv = [*_map_argv(catalog_copy / "items", weights, out, client)]
    argv += ["--read-timeout", "1", "--connect-timeout", "1"]
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        path = catalog_copy / "items" / f"{silent_id}.json"
        item = json.loads(path.read_text())
        item["assets"]["nir"]["href"] = f"http://127.0.0.1:{silent.getsockname()[1]}/B08.tif"
        path.write_text(json.dumps(item))
        t0 = time.monotonic()
        code, stdout, _ = _cli(argv, capsys)
        elapsed = time.monotonic() - t0

    assert code == EXIT_PARTIAL, stdout
    scenes = pyogrio.read_dataframe(out, layer="scenes", read_geometry=False)
    status = dict(zip(scenes["scene_id"], scenes["status"], strict=True))
    errors = dict(zip(scenes["scene_id"], scenes["error"], strict=True))
    assert status == {fs: "failed", lb: "failed", extra: "failed", silent_id: "failed"} | {
        intact: "done"
    }
    assert "No such file" in errors[fs] or "does not exist" in errors[fs], errors[fs]
    for item_id, how in broken.items():
        assert how.path.name in errors[item_id] or "B08" in errors[item_id], errors[item_id]
    assert "B08.tif" in errors[silent_id] and "timed out" in errors[silent_id]
    assert elapsed < 120, elapsed  # bounded by the 1 s timeouts, not hung
    rts = pyogrio.read_dataframe(out, layer=f"rts_{YEAR}")
    assert len(rts) > 0 and set(rts["scene_ids"]) == {intact}
    assert _leftovers(out.parent) == []


def test_overwrite_when_every_scene_fails_keeps_the_good_layer(
    good_inventory: Path,
    catalog_copy: Path,
    weights: Path,
    client: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out" / "inventory.gpkg"
    out.parent.mkdir()
    shutil.copy2(good_inventory, out)
    before = _sha256(out)
    for item_id in _selected(catalog_copy).values():
        break_cog(_cog(catalog_copy, item_id), "random")
    argv = [*_map_argv(catalog_copy / "items", weights, out, client), "--overwrite"]

    code, stdout, err = _cli(argv, capsys)

    assert code == EXIT_ERROR and stdout == ""
    _one_line(err)
    assert "2 of 2 scenes failed" in err and "--replace-partial" in err and "unchanged" in err
    assert _sha256(out) == before
    assert _leftovers(out.parent) == []

    # Asked for explicitly, the failed year replaces the layer, the failures recorded.
    code, _, _ = _cli([*argv, "--replace-partial"], capsys)
    assert code == EXIT_PARTIAL
    assert len(pyogrio.read_dataframe(out, layer=f"rts_{YEAR}")) == 0
    scenes = pyogrio.read_dataframe(out, layer="scenes", read_geometry=False)
    assert set(scenes["status"]) == {"failed"}
    assert _leftovers(out.parent) == []


def test_every_scene_failing_on_a_new_output_writes_nothing(
    catalog_copy: Path,
    weights: Path,
    client: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for item_id in _selected(catalog_copy).values():
        break_cog(_cog(catalog_copy, item_id), "missing")
    out = tmp_path / "out" / "inventory.gpkg"
    out.parent.mkdir()
    code, _, err = _cli(_map_argv(catalog_copy / "items", weights, out, client), capsys)
    assert code == EXIT_ERROR
    _one_line(err)
    assert "nothing was written" in err
    assert list(out.parent.iterdir()) == []


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (skipped where mounting is not allowed)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_the_write_keeps_the_previous_inventory(
    good_inventory: Path,
    demo: DemoCatalog,
    weights: Path,
    client: Any,
    small_fs: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = small_fs / "inventory.gpkg"
    shutil.copy2(good_inventory, out)
    before = _sha256(out)
    # Fill the file system up to 16 KiB: no room for the new copy of the inventory.
    free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
    (small_fs / "filler").write_bytes(b"\0" * (free - 16 * 1024))
    argv = [*_map_argv(demo.items_dir, weights, out, client), "--overwrite"]

    code, stdout, err = _cli(argv, capsys)

    assert code == EXIT_ERROR and stdout == ""
    _one_line(err)
    assert "no space left" in err and "unchanged" in err
    assert _sha256(out) == before
    assert _leftovers(small_fs) == []


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder no file can be created in: a read-only tmpfs where mounting is allowed, else
    (not root) a folder without write permission."""
    folder = tmp_path / "ro"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode == 0:
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        return
    if os.geteuid() == 0:
        pytest.skip(f"root ignores permissions and cannot mount here: {done.stderr.decode()}")
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


def test_read_only_output_folder_is_refused_before_any_work(
    weights: Path, read_only_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = read_only_folder / "inventory.gpkg"
    # The STAC API is unreachable: an error about it would mean the run started first.
    argv = ["map", "--bbox", *map(str, CONFIG_BBOX), "--year", str(YEAR)]
    argv += ["--stac", "http://127.0.0.1:9", "--weights", str(weights), "--out", str(out)]
    code, _, err = _cli(argv, capsys)
    assert code == EXIT_ERROR
    _one_line(err)
    assert "cannot write in" in err and str(read_only_folder) in err
    assert "Read-only file system" in err or "Permission denied" in err
    assert "127.0.0.1:9" not in err


def test_an_output_whose_parent_is_a_file_is_refused_before_any_work(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("not a folder")
    argv = ["map", "--bbox", *map(str, CONFIG_BBOX), "--year", str(YEAR)]
    argv += ["--stac", "http://127.0.0.1:9", "--weights", str(weights)]
    code, _, err = _cli([*argv, "--out", str(tmp_path / "afile" / "inv.gpkg")], capsys)
    assert code == EXIT_ERROR
    _one_line(err)
    assert "is a file, not a folder" in err


def test_a_second_writer_is_refused_before_any_work(
    good_inventory: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "inventory.gpkg"
    shutil.copy2(good_inventory, out)
    before = _sha256(out)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from arctic_rts.inventory import lock_inventory\n"
            f"with lock_inventory({str(out)!r}):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        argv = ["map", "--bbox", *map(str, CONFIG_BBOX), "--year", str(YEAR), "--overwrite"]
        argv += ["--stac", "http://127.0.0.1:9", "--weights", str(weights), "--out", str(out)]
        code, _, err = _cli(argv, capsys)
    finally:
        holder.kill()
        holder.wait()
    assert code == EXIT_ERROR
    _one_line(err)
    assert "being written by" in err and str(holder.pid) in err
    assert _sha256(out) == before


def test_an_unreachable_scheduler_is_one_line(
    demo: DemoCatalog, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dask

    argv = ["map", "--bbox", *map(str, CONFIG_BBOX), "--year", str(YEAR), "--quiet"]
    argv += ["--stac", str(demo.items_dir), "--weights", str(weights)]
    argv += ["--out", str(tmp_path / "inv.gpkg"), "--scheduler", f"tcp://{free_port_closed()}"]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code, _, err = _cli(argv, capsys)
    assert code == EXIT_ERROR
    _one_line(err)
    assert "cannot reach the Dask scheduler" in err
    assert _leftovers(tmp_path) == [] and not (tmp_path / "inv.gpkg").exists()


@pytest.mark.parametrize(
    "card",
    [
        b"[1, 2, 3]",
        b'{"bands": "B04"}',
        b'{"bands": ["B04"], "normalisation": {"mean": [0.1], "std": "x"}}',
        b'{"bands": ["B04"], "normalisation": null}',
        b"{not json",
    ],
)
def test_a_malformed_weights_card_is_one_line(
    card: bytes, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.safetensors"
    shutil.copy2(weights, path)
    path.with_suffix(".json").write_bytes(card)
    _strip_embedded_card(path)
    argv = ["map", "--bbox", *map(str, CONFIG_BBOX), "--year", str(YEAR)]
    argv += ["--stac", "http://127.0.0.1:9", "--weights", str(path)]
    code, _, err = _cli([*argv, "--out", str(tmp_path / "inv.gpkg")], capsys)
    assert code == EXIT_ERROR, err
    _one_line(err)
    assert str(path) in err or "card" in err


def _strip_embedded_card(path: Path) -> None:
    """Rewrite a safetensors file without its embedded card, so the sidecar JSON is read."""
    from safetensors.torch import load_file, save_file

    save_file(load_file(path), path)


def test_an_unexpected_failure_exits_4_with_the_traceback_in_a_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import arctic_rts.pipeline

    def bug(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("an injected bug")

    monkeypatch.setattr(arctic_rts.pipeline, "map_region", bug)
    log = tmp_path / "crash.log"
    argv = ["--log-file", str(log), "map", "--bbox", *map(str, CONFIG_BBOX), "--year", "2021"]
    code, _, err = _cli(argv, capsys)
    assert code == EXIT_UNEXPECTED
    _one_line(err)
    assert "ZeroDivisionError: an injected bug" in err and str(log) in err
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "def bug" not in err


def test_an_interrupt_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import arctic_rts.pipeline

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(arctic_rts.pipeline, "map_region", interrupted)
    code, _, err = _cli(["map", "--bbox", *map(str, CONFIG_BBOX), "--year", "2021"], capsys)
    assert code == EXIT_INTERRUPTED
    _one_line(err)


def test_a_run_that_finds_no_scenes_exits_3(
    demo: DemoCatalog, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["map", "--bbox", *map(str, CONFIG_BBOX), "--year", "2019", "--stac"]
    argv += [str(demo.items_dir), "--weights", str(weights), "--out", str(tmp_path / "o.gpkg")]
    code, stdout, err = _cli(argv, capsys)
    assert code == EXIT_NOTHING_FOUND and stdout == ""
    _one_line(err)
    assert "No scenes" in err
    assert list(tmp_path.iterdir()) == []

    # An inventory run none of whose years has scenes: 3 as well, nothing written.
    run = tmp_path / "run" / "run.toml"
    run.parent.mkdir()
    run.write_text(
        f'out = "inv.gpkg"\nyears = [2019]\nstac = "{demo.items_dir}"\n'
        f'weights = "{weights}"\n[[regions]]\nname = "demo"\nbbox = {list(CONFIG_BBOX)}\n'
    )
    code, stdout, err = _cli(["inventory", "run", str(run), "--quiet"], capsys)
    assert code == EXIT_NOTHING_FOUND, err
    assert "no scenes for 2019" in stdout
    assert not (run.parent / "inv.gpkg").exists()


# ---------------------------------------------------------------------------------------------
# Hostile item ids


def _rename(catalog: Path, item_id: str, new_id: str) -> None:
    """Give an item another id (its file keeps a plain name: ids are read from the JSON)."""
    path = catalog / "items" / f"{item_id}.json"
    item = json.loads(path.read_text())
    item["id"] = new_id
    item["links"] = [link for link in item.get("links", []) if link.get("rel") != "self"]
    path.write_text(json.dumps(item))


def test_item_ids_too_long_temp_shaped_or_escaping_cannot_abort_escape_or_be_deleted(
    demo: DemoCatalog, catalog_copy: Path, weights: Path, client: Any, tmp_path: Path
) -> None:
    from arctic_rts.config import InventoryRunConfig, RegionConfig
    from arctic_rts.errors import SkippedInputWarning
    from arctic_rts.inventory_run import run_inventory

    selected = _selected(catalog_copy)
    extra = _add_tile(catalog_copy, selected["7WFS"], "FT")
    another, nul = (
        _add_tile(catalog_copy, selected["8WLB"], "LC"),
        _add_tile(catalog_copy, selected["7WFS"], "FU"),
    )
    _rename(catalog_copy, nul, "S2A_nul\x00../x")  # GeoPackage text would end at the NUL: skipped
    hostile = {
        selected["7WFS"]: "S2A_" + "x" * 296,  # 300 bytes: over the 255-byte name limit
        selected["8WLB"]: ".x.tmp-3",  # the shape of the runner's stale temporary files
        extra: "../../../escaped/..",
        another: "/tmp/escaped-abs\n..",  # absolute, with a newline
    }
    for old, new in hostile.items():
        _rename(catalog_copy, old, new)
    cfg = InventoryRunConfig(
        out=str(tmp_path / "out" / "inv.gpkg"),
        years=(YEAR,),
        regions=(RegionConfig("demo", CONFIG_BBOX),),
        stac=str(catalog_copy / "items"),
        weights=(str(weights),),
        map=CONFIG,
    )

    with pytest.warns(SkippedInputWarning, match=r"Skipped 1 of \d+ .*NUL"):
        first = run_inventory(cfg, progress=False, client=client)
    with pytest.warns(SkippedInputWarning, match=r"Skipped 1 of \d+ .*NUL"):
        again = run_inventory(cfg, progress=False, client=client)

    assert (first.years[0].n_computed, first.years[0].failed) == (4, [])
    assert (again.years[0].n_computed, again.years[0].n_from_manifest) == (0, 4)
    scenes = pyogrio.read_dataframe(cfg.out, layer="scenes", read_geometry=False)
    assert sorted(scenes["scene_id"]) == sorted(hostile.values())
    assert set(scenes["status"]) == {"done"}
    work = tmp_path / "out" / "inv.gpkg.work"
    records = sorted((work / "scenes" / str(YEAR)).iterdir())
    assert len(records) == 8 and all(len(p.name.encode()) < 200 for p in records)
    assert not [p for p in records if p.name.startswith(".")]
    # Nothing was written outside the output folder and the catalog.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog", "out"]
    assert not list(tmp_path.rglob("escaped*")) and not list(Path("/tmp").glob("escaped-abs*"))


# ---------------------------------------------------------------------------------------------
# Hostile hrefs and grids


def _set_nir(catalog: Path, item_id: str, **fields: Any) -> None:
    path = catalog / "items" / f"{item_id}.json"
    item = json.loads(path.read_text())
    item["assets"]["nir"].update(fields)
    path.write_text(json.dumps(item))


@pytest.mark.timeout(300)  # a FIFO opened by GDAL would hang the run: fail instead
def test_hrefs_that_escape_block_or_lie_skip_their_item_and_are_never_read(
    catalog_copy: Path,
    weights: Path,
    client: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from arctic_rts.errors import SkippedInputWarning

    selected = _selected(catalog_copy)
    fs, lb = selected["7WFS"], selected["8WLB"]
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "B08.tif"  # a valid COG outside the catalog: it would map if read
    shutil.copy(_cog(catalog_copy, fs), secret)
    (catalog_copy / "cogs" / "link.tif").symlink_to(secret)
    os.mkfifo(catalog_copy / "cogs" / "pipe.tif")
    extra = {square: _add_tile(catalog_copy, fs, square) for square in ("FT", "FU", "FV", "FW")}
    _set_nir(catalog_copy, fs, href="../../outside/B08.tif")  # ../ out of the catalog
    _set_nir(catalog_copy, lb, href=str(catalog_copy / "cogs" / "pipe.tif"))  # a FIFO inside it
    _set_nir(catalog_copy, extra["FT"], href=f"file://{secret}")
    _set_nir(catalog_copy, extra["FU"], href=str(catalog_copy / "cogs" / "link.tif"))
    _set_nir(catalog_copy, extra["FV"], href="ftp://example.com/B08.tif")
    item = json.loads((catalog_copy / "items" / f"{extra['FW']}.json").read_text())
    _set_nir(
        catalog_copy,
        extra["FW"],
        **{"proj:shape": [n * 100 for n in item["assets"]["nir"]["proj:shape"]]},
    )
    hostile = {fs, lb, *extra.values()}
    # the next least cloudy in-season scene of each tile takes the skipped one's place
    after = _selected_without(catalog_copy, hostile)
    out = tmp_path / "out" / "inventory.gpkg"
    out.parent.mkdir()

    with pytest.warns(SkippedInputWarning, match=r"Skipped 6 of \d+ item\(s\)") as caught:
        code, stdout, err = _cli(_map_argv(catalog_copy / "items", weights, out, client), capsys)

    assert code == EXIT_OK, (stdout, err)
    assert len([w for w in caught if issubclass(w.category, SkippedInputWarning)]) == 1
    scenes = pyogrio.read_dataframe(out, layer="scenes", read_geometry=False)
    assert sorted(scenes["scene_id"]) == sorted(after.values())
    assert set(scenes["status"]) == {"done"}
    assert not hostile & set(scenes["scene_id"])
    assert len(pyogrio.read_dataframe(out, layer=f"rts_{YEAR}")) > 0


def _selected_without(catalog: Path, skipped: set[str]) -> dict[str, str]:
    """:func:`_selected` among the items not in ``skipped``."""
    hidden = catalog.parent / "hidden"
    hidden.mkdir(exist_ok=True)
    for item_id in skipped:
        (catalog / "items" / f"{item_id}.json").rename(hidden / f"{item_id}.json")
    try:
        return _selected(catalog)
    finally:
        for path in hidden.iterdir():
            path.rename(catalog / "items" / path.name)
