"""The UNet and its weights files: shapes, tiling invariance, safetensors round trips, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from arctic_rts.errors import ConfigError, WeightsError
from arctic_rts.model import (
    ModelRef,
    UNet,
    check_bands,
    load_model,
    read_card,
    resolve_weights,
    save_weights,
)
from arctic_rts.model.unet import ChannelLayerNorm

BANDS = ["B02", "B03", "B04", "B08"]


def _card() -> dict:
    return {
        "name": "test-unet",
        "bands": BANDS,
        "normalisation": {"mean": [0.05, 0.06, 0.07, 0.2], "std": [0.02, 0.03, 0.04, 0.1]},
        "patch_size": 64,
        "threshold": 0.4,
        "training": {"method": "none", "hyperparameters": {}, "data": "random", "steps": 0},
        "metrics": {},
    }


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    model = UNet(len(BANDS), dino_classes=24, elevation=True)
    path = tmp_path_factory.mktemp("w") / "unet.safetensors"
    save_weights(model, _card(), path)
    return path


def test_unet_shapes_all_heads() -> None:
    model = UNet(12, dino_classes=24, elevation=True).eval()
    x = torch.randn(2, 12, 72, 40)  # not multiples of 16: pooling floors, upsampling follows
    with torch.inference_mode():
        out = model.forward_heads(x)
        logits = model(x)
    assert out["logits"].shape == (2, 1, 72, 40)
    assert out["dino"].shape == (2, 24, 72, 40)
    assert out["elevation"].shape == (2, 1, 72, 40)
    assert torch.equal(logits, out["logits"])


def test_unet_computes_only_the_heads_asked_for() -> None:
    """A subset of heads equals the full pass's; the full-resolution decoder stage runs only
    for heads that read it (a PixelDINO pass needs the half-resolution stage alone)."""
    model = UNet(4, widths=(4, 8, 16, 32), bottleneck=32, dino_classes=6, elevation=True).eval()
    last_stage_runs = []
    model.up[-1].register_forward_hook(lambda *_: last_stage_runs.append(1))
    x = torch.randn(2, 4, 48, 40)
    with torch.inference_mode():
        full = model.forward_heads(x)
        assert len(last_stage_runs) == 1
        for heads in (["logits"], ["dino"], ["elevation"], ["dino", "elevation"]):
            out = model.forward_heads(x, heads)
            assert set(out) == set(heads)
            for name in heads:
                assert torch.equal(out[name], full[name]), (heads, name)
        # every subset but the DINO head alone ran the full-resolution stage
        assert len(last_stage_runs) == 1 + 3
        with pytest.raises(ValueError, match="no head"):
            UNet(4).forward_heads(x, ["dino"])


def test_unet_without_optional_heads() -> None:
    out = UNet(3).eval().forward_heads(torch.randn(1, 3, 32, 32))
    assert set(out) == {"logits"}


def test_unet_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="in_channels"):
        UNet(0)
    with pytest.raises(ValueError, match="dino_classes"):
        UNet(3, dino_classes=1)


def test_channel_layernorm_is_per_pixel() -> None:
    norm = ChannelLayerNorm(8)
    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    y = norm(x)
    mean = x.mean(1, keepdim=True)
    var = x.var(1, keepdim=True, unbiased=False)
    assert torch.allclose(y, (x - mean) / torch.sqrt(var + norm.eps), atol=1e-5)
    # a pixel's output depends on that pixel alone
    x2 = x.clone()
    x2[:, :, 0, 0] += 10.0
    assert torch.equal(norm(x2)[:, :, 1:, :], y[:, :, 1:, :])


def test_unet_tiled_equals_whole_with_halo_128() -> None:
    torch.manual_seed(0)
    model = UNet(3).eval()
    x = torch.randn(1, 3, 320, 352)
    halo = 128
    with torch.inference_mode():
        whole = model(x)
        # core rows 144:192, cols 160:224 (origin on the 16 px grid) read with a 128 px halo
        tile = model(x[..., 144 - halo : 192 + halo, 160 - halo : 224 + halo])
    core = tile[..., halo : halo + 48, halo : halo + 64]
    ref = whole[..., 144 : 144 + 48, 160 : 160 + 64]
    assert (core - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("shape", [(1, 12, 128, 160), (2, 12, 72, 40), (1, 12, 97, 131)])
def test_fused_forward_equals_plain_composition(shape: tuple[int, ...]) -> None:
    """The fused path (ReLU into the concatenation, cropped even-kernel convolution, pooling
    before ReLU) equals the modules composed plainly, odd sizes (replicate padding) included."""
    torch.manual_seed(2)
    model = UNet(12).eval()
    x = torch.randn(*shape)
    with torch.inference_mode():
        fused, plain = model(x), model.reference_forward(x)
    assert fused.shape == plain.shape == (shape[0], 1, *shape[2:])
    assert (fused - plain).abs().max().item() <= 1e-5


def test_fused_forward_gradients_equal_plain_composition() -> None:
    torch.manual_seed(3)
    model = UNet(4)
    x = torch.randn(2, 4, 48, 64)
    grads = []
    for forward in (model.forward, model.reference_forward):
        model.zero_grad()
        forward(x).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) == len(list(model.parameters()))
    assert max((a - b).abs().max().item() for a, b in zip(*grads, strict=True)) <= 1e-6


@pytest.mark.parametrize("name", ["demo_unet", "real_unet"])
def test_fused_forward_equals_plain_on_bundled_weights(name: str) -> None:
    path = Path(__file__).resolve().parents[1] / "arctic_rts" / "data" / f"{name}.safetensors"
    unet = load_model(path)[0].unet.eval()
    torch.manual_seed(4)
    x = torch.randn(1, unet.in_channels, 160, 144)
    with torch.inference_mode():
        assert (unet(x) - unet.reference_forward(x)).abs().max().item() <= 1e-5


def test_save_load_round_trip_identical(weights: Path) -> None:
    torch.manual_seed(1)
    reference = UNet(len(BANDS), dino_classes=24, elevation=True).eval()
    model, card = load_model(weights, bands=BANDS)
    raw = torch.rand(1, 4, 48, 48) * 0.3
    norm = card["normalisation"]
    mean = torch.tensor(norm["mean"]).reshape(1, -1, 1, 1)
    std = torch.tensor(norm["std"]).reshape(1, -1, 1, 1)
    with torch.inference_mode():
        assert torch.allclose(model(raw), reference((raw - mean) / std), atol=1e-6)
    assert card["bands"] == BANDS
    assert card["threshold"] == 0.4
    assert card["architecture"]["dino_classes"] == 24
    assert len(card["sha256"]) == 64
    assert json.loads(weights.with_suffix(".json").read_text()) == read_card(weights)


def test_nan_input_is_treated_as_band_mean(weights: Path) -> None:
    model, card = load_model(weights)
    raw = torch.rand(1, 4, 32, 32)
    mean = torch.tensor(card["normalisation"]["mean"]).reshape(1, -1, 1, 1)
    holed = raw.clone()
    holed[:, 1, 5:9, 5:9] = float("nan")
    filled = raw.clone()
    filled[:, 1:2, 5:9, 5:9] = mean[:, 1:2]
    with torch.inference_mode():
        out = model(holed)
        assert torch.isfinite(out).all()
        assert torch.allclose(out, model(filled), atol=1e-6)


def test_band_mismatch_is_refused_naming_bands(weights: Path) -> None:
    with pytest.raises(WeightsError, match=r"missing \['B08'\].*extra \['B11'\]"):
        load_model(weights, bands=["B02", "B03", "B04", "B11"])
    with pytest.raises(WeightsError, match="different order"):
        load_model(weights, bands=["B03", "B02", "B04", "B08"])


def test_non_safetensors_is_refused(tmp_path: Path) -> None:
    pt = tmp_path / "model.pt"
    torch.save(UNet(4).state_dict(), pt)
    with pytest.raises(WeightsError, match="safetensors"):
        load_model(pt)
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_model(fake)


def test_changed_tensors_fail_the_hash(weights: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    tensors["head.bias"] = tensors["head.bias"] + 1.0
    tampered = tmp_path / "tampered.safetensors"
    save_file(tensors, str(tampered), metadata={"card": json.dumps(read_card(weights))})
    with pytest.raises(WeightsError, match="corrupt or was changed"):
        load_model(tampered)


def test_model_ref_is_small_and_picklable(weights: Path) -> None:
    import pickle

    ref = ModelRef.from_path(weights)
    assert Path(ref.path).is_absolute()
    assert ref.sha256 == read_card(weights)["sha256"]
    blob = pickle.dumps(ref)
    assert len(blob) < 500
    assert pickle.loads(blob) == ref


def test_weights_is_one_frozen_identity_read_once(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import pickle

    from arctic_rts.model import weights as module

    reads: list[str] = []
    real = module.read_card
    monkeypatch.setattr(module, "read_card", lambda p: reads.append(str(p)) or real(p))
    w = resolve_weights(weights)
    assert reads == [str(weights.resolve())]  # one card, read once
    assert w.references == (ModelRef.from_path(weights),)
    assert (w.name, w.bands, w.threshold, w.patch_size, w.method) == (
        "test-unet",
        tuple(BANDS),
        0.4,
        64,
        "none",
    )
    assert w.halo is None and w.domain is None  # the card names neither
    assert w.sha256 == (read_card(weights)["sha256"],)
    assert w.card["name"] == "test-unet"
    with pytest.raises(TypeError):
        w.card["name"] = "other"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.threshold = 0.9  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(w)) == w
    assert pickle.loads(pickle.dumps(w)).card == w.card
    assert resolve_weights(w) is w  # passed on, never resolved again

    measured = tmp_path / "measured.safetensors"
    model, card = load_model(weights)
    save_weights(model.unet, {**card, "halo": 48, "domain": "sentinel-2-l2a"}, measured)
    both = resolve_weights([measured, weights])
    assert len(both.references) == 2 and both.threshold == 0.4
    assert both.domain == "sentinel-2-l2a"  # the first member's card
    assert both.halo is None  # a member without a measured halo needs predict's exact one
    assert resolve_weights([measured, measured]).halo == 48
    other = tmp_path / "other.safetensors"
    save_weights(model.unet, {**card, "bands": ["B03", "B02", "B04", "B08"]}, other)
    with pytest.raises(WeightsError, match="same bands in the same order"):
        resolve_weights([weights, other])
    with pytest.raises(ConfigError, match="no weights"):
        resolve_weights([])


def test_one_band_check_for_arrays_and_items(weights: Path) -> None:
    w = resolve_weights(weights)
    check_bands(w, BANDS)
    check_bands(w)  # no imagery, nothing to refuse
    with pytest.raises(WeightsError, match="different order"):
        check_bands(w, ["B03", "B02", "B04", "B08"])
    assets = [{"B02": 1, "B03": 1, "B04": 1, "SCL": 1}, {*BANDS, "B11", "SCL"}]
    check_bands(w, *assets, exact=False)  # one scene has every band: the other fails alone
    with pytest.raises(WeightsError, match=r"needs bands \['B08'\].*none of the 1 selected"):
        check_bands(w, assets[0], exact=False)
    with pytest.raises(WeightsError, match=r"missing \['B08'\]"):
        check_bands(read_card(weights), ["B02", "B03", "B04"])  # a card works as well
