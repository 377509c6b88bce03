"""Remote COG reads: the GDAL options of :func:`arctic_rts.net.gdal_http_options` reach the
reads that a Dask worker process makes, seen from a loopback HTTP server that serves the real
(decimated) 29RKH COGs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from range_server import serve_folder

from arctic_rts.cluster import connect
from arctic_rts.config import ClusterConfig, LoadConfig, NetworkConfig
from arctic_rts.load import load_scenes
from arctic_rts.net import gdal_http_options

BANDS = ["B04", "B08"]
#: Earth Search asset keys of the COGs read here (bands and the SCL cloud mask).
FILES = {"red": "B04", "nir": "B08", "scl": "SCL"}


def _item(cogs: Path, base: str) -> dict[str, Any]:
    item = json.loads((cogs / "S2A_29RKH_20200219_0_L2A.json").read_text())
    item["assets"] = {k: item["assets"][k] for k in FILES}
    for key, name in FILES.items():
        item["assets"][key]["href"] = f"{base}/{name}.tif"
    return item


@pytest.fixture(scope="module")
def worker() -> Iterator[Any]:
    with connect(ClusterConfig(n_workers=1, threads_per_worker=1, gpu="no")) as client:
        yield client


def test_gdal_http_options_bound_and_retry_remote_reads() -> None:
    net = NetworkConfig(connect_timeout_s=3, read_timeout_s=20, max_retries=2, backoff_s=0.5)
    options = gdal_http_options(net)
    assert options["GDAL_HTTP_CONNECTTIMEOUT"] == "3"
    assert options["GDAL_HTTP_TIMEOUT"] == "20"
    assert options["GDAL_HTTP_MAX_RETRY"] == "2"
    assert options["GDAL_HTTP_RETRY_DELAY"] == "0.5"
    assert options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"


@pytest.mark.slow
def test_a_worker_reads_remote_cogs_with_the_gdal_options(shared_data: Path, worker: Any) -> None:
    """Every COG's first request is refused (503): the read succeeds through GDAL's retries
    only if ``GDAL_HTTP_MAX_RETRY`` reached the worker, and fails without them. The worker
    asks for nothing but the COGs (no directory listing, no side-car files)."""
    cogs = shared_data / "s2_l2a_cogs_29RKH"
    config = LoadConfig(resolution=100.0)
    local = _item(cogs, str(cogs))
    expected = load_scenes([local], BANDS, config)[0].values
    net = NetworkConfig(max_retries=2, backoff_s=0.1)
    with serve_folder(cogs, fail_first=1) as (url, traffic):
        da = load_scenes([_item(cogs, url)], BANDS, config, net)[0]
        got = worker.compute(da).result().values
        log = list(traffic.log)
    np.testing.assert_array_equal(got, expected)
    assert {path for _, path, _ in log} == {f"{name}.tif" for name in FILES.values()}
    for name in FILES.values():
        heads = [r for _, path, r in log if path == f"{name}.tif"][:2]
        assert heads[0] == heads[1], (name, heads)  # the refused request, asked again

    with serve_folder(cogs, fail_first=1) as (url, _):
        da = load_scenes([_item(cogs, url)], BANDS, config, NetworkConfig(max_retries=0))[0]
        with pytest.raises(Exception, match=r"503|HTTP|not recognized|RasterioIOError"):
            worker.compute(da).result()
