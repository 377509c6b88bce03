"""The optional forward-pass backend (ONNX Runtime): outputs equal torch's within 1e-5, through
the runner and through ``predict``; refusals. Skipped with a reason where onnxruntime is not
installed (the ``onnx`` extra)."""

from __future__ import annotations

import importlib.util

import dask.array as dsa
import numpy as np
import pytest
import torch
import xarray as xr

from arctic_rts.config import PredictConfig
from arctic_rts.errors import ConfigError
from arctic_rts.model import ModelRef, UNet, bundled_weights, read_card
from arctic_rts.model.runners import backend_runner
from arctic_rts.predict import predict

OPTIONAL = ["onnxruntime"]


def _needs(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed (pip install 'arctic-rts[onnx]')")


@pytest.mark.parametrize("name", OPTIONAL)
def test_backend_equals_torch_on_random_unet(name: str) -> None:
    _needs(name)
    torch.manual_seed(6)
    unet = UNet(5, widths=(8, 16, 16, 32), bottleneck=32).eval()
    run = backend_runner(name, unet, threads=1)
    assert backend_runner(name, unet) is run  # built once per model and process
    for shape in [(1, 5, 64, 48), (2, 5, 96, 80)]:  # a graph per input shape
        x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            want = unet(x)
        got = run(x)
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", OPTIONAL)
def test_predict_on_backend_equals_torch_on_bundled_weights(name: str) -> None:
    _needs(name)
    ref = ModelRef.from_path(bundled_weights())
    bands = read_card(ref.path)["bands"]
    data = np.random.default_rng(9).uniform(0.0, 0.4, size=(len(bands), 120, 100))
    data[:, 5:9, 7:12] = np.nan  # invalid pixels: the band mean, as with torch
    da = xr.DataArray(
        dsa.from_array(data.astype(np.float32), chunks=(len(bands), 60, 100)),
        dims=("band", "y", "x"),
        coords={"band": bands, "y": 1000.0 - 10 * np.arange(120), "x": 10.0 * np.arange(100)},
        attrs={"item_id": "scene-1", "epsg": 32618},
    ).rio.write_crs("EPSG:32618")
    config = PredictConfig(tile_size=64, halo=32, device="cpu")
    want = predict(da, ref, config).values
    got = predict(da, ref, PredictConfig(tile_size=64, halo=32, device="cpu", backend=name)).values
    assert np.isfinite(want).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.nanmax(np.abs(got - want)) <= 1e-5


def test_backend_refusals() -> None:
    with pytest.raises(ConfigError, match="backend must be one of"):
        PredictConfig(backend="tensorrt")
    with pytest.raises(ConfigError, match="fp32"):
        PredictConfig(backend="onnxruntime", precision="bf16")
    da = xr.DataArray(np.zeros((3, 32, 32), np.float32), dims=("band", "y", "x"))
    with pytest.raises(ConfigError, match="runs on the CPU"):
        predict(da, UNet(3), PredictConfig(tile_size=32, device="cuda", backend="onnxruntime"))
    with pytest.raises(ValueError, match="backend must be one of"):
        backend_runner("tensorrt", UNet(3))
    assert backend_runner("torch", unet := UNet(3)) is unet
