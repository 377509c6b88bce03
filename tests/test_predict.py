"""Tiling and prediction: windows and blend weights, tiled == whole-array inference, nodata."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as dsa
import numpy as np
import pytest
import torch
import xarray as xr

from arctic_rts.config import PredictConfig
from arctic_rts.errors import ConfigError, WeightsError
from arctic_rts.model import ModelRef, UNet, load_model, resolve_weights, save_weights
from arctic_rts.model.halo import EXACT_HALO, measure_halo
from arctic_rts.predict import input_chunks, predict, resolve_halo
from arctic_rts.tiling import (
    FLOOR,
    Blender,
    aligned_chunks,
    batched,
    blend_weights,
    tile_windows,
)

BANDS = ["B02", "B03", "B04"]


def _scene(height: int, width: int, seed: int = 0, chunks: int | None = None) -> xr.DataArray:
    data = np.random.default_rng(seed).normal(size=(3, height, width)).astype(np.float32)
    arr = dsa.from_array(data, chunks=(1, chunks or height, chunks or width))
    da = xr.DataArray(
        arr,
        dims=("band", "y", "x"),
        coords={"band": BANDS, "y": 1000.0 - 10 * np.arange(height), "x": 10.0 * np.arange(width)},
        attrs={"item_id": "scene-1", "epsg": 32618},
    )
    return da.rio.write_crs("EPSG:32618")


def _small_conv() -> torch.nn.Module:
    """A fully convolutional stand-in (receptive field 5 px, so a 16 px halo is exact)."""
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, padding=1)
    ).eval()


def _tiny_unet() -> UNet:
    torch.manual_seed(5)
    return UNet(3, widths=(4, 4, 8, 8), bottleneck=8).eval()


def _whole(model: torch.nn.Module, data: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        x = torch.nan_to_num(torch.from_numpy(np.asarray(data, dtype=np.float32))[None])
        return torch.sigmoid(model(x))[0, 0].numpy()


# --------------------------------------------------------------------------------- tiling


@pytest.mark.parametrize(
    ("shape", "window", "halo", "ramp"),
    [((100, 77), 48, 8, 0), ((37, 200), 64, 16, 8), ((10, 10), 64, 16, 0)],
)
def test_windows_cover_the_array_with_reliable_interiors(
    shape: tuple[int, int], window: int, halo: int, ramp: int
) -> None:
    wins = tile_windows(shape, window, halo=halo, ramp=ramp)
    stride = window - 2 * halo - ramp
    reliable = np.zeros(shape, dtype=int)
    for w in wins:
        assert w.y0 % stride == 0 and w.x0 % stride == 0  # origins stay on the grid
        assert 0 < w.shape[0] <= window and 0 < w.shape[1] <= window
        top, bottom, left, right = w.edges
        y0 = w.y0 if top else w.y0 + halo
        y1 = w.y1 if bottom else w.y1 - halo
        x0 = w.x0 if left else w.x0 + halo
        x1 = w.x1 if right else w.x1 - halo
        reliable[y0:y1, x0:x1] += 1
    assert (reliable >= 1).all()


def test_tile_windows_rejects_windows_without_core() -> None:
    with pytest.raises(ValueError, match="no core"):
        tile_windows((100, 100), 32, halo=16)


def test_blend_weights_never_zero_and_shaped() -> None:
    wins = tile_windows((200, 200), 96, halo=16, ramp=16)
    inner = next(w for w in wins if not any(w.edges))
    w = blend_weights(inner, halo=16, ramp=16)
    assert w.shape == inner.shape
    assert (w > 0).all() and w.max() == pytest.approx(1.0)
    assert w[0, 48] == pytest.approx(FLOOR)  # unreliable outer band: floor only
    assert w[48, 48] == 1.0  # interior
    profile = w[48, :48]
    assert (np.diff(profile) >= 0).all()  # smooth ramp up, no dip
    corner = next(w for w in wins if w.edges[0] and w.edges[2])
    wc = blend_weights(corner, halo=16, ramp=16)
    assert wc[0, 0] == 1.0  # sides on the array's edge get no ramp


@pytest.mark.parametrize("ramp", [0, 12])
def test_blender_reproduces_a_global_field(ramp: int) -> None:
    field = np.random.default_rng(1).random((2, 90, 130))
    blender = Blender(field.shape, halo=8, ramp=ramp)
    for win in tile_windows(field.shape[-2:], 48, halo=8, ramp=ramp):
        blender.add(win, field[(slice(None), *win.slices)])
    np.testing.assert_allclose(blender.result(np.float64), field, atol=1e-12)


def test_blender_refuses_uncovered_pixels() -> None:
    blender = Blender((10, 10))
    blender.add(tile_windows((5, 10), 16)[0], np.ones((5, 10)))
    with pytest.raises(ValueError, match="covered by no window"):
        blender.result()


def test_aligned_chunks_and_batches() -> None:
    assert aligned_chunks(1000, 256, minimum=128) == (256, 256, 256, 232)
    assert aligned_chunks(800, 256, minimum=128) == (256, 256, 288)  # 32 px rest merged
    assert aligned_chunks(100, 256, minimum=128) == (100,)
    wins = tile_windows((100, 100), 48, halo=8)
    groups = list(batched(wins, 2))
    assert sum(len(g) for g in groups) == len(wins)
    assert all(len(g) <= 2 and len({w.shape for w in g}) == 1 for g in groups)


# --------------------------------------------------------------------------------- predict


@pytest.mark.parametrize(("height", "width"), [(150, 131), (40, 29), (97, 256)])
def test_tiled_equals_whole_small_conv(height: int, width: int) -> None:
    model = _small_conv()
    da = _scene(height, width, chunks=50)
    config = PredictConfig(tile_size=32, halo=16, batch_size=2)
    prob = predict(da, model, config)
    assert isinstance(prob.data, dsa.Array)  # lazy
    got = prob.values
    ref = _whole(model, da.values)
    m = 16
    np.testing.assert_allclose(got[m:-m, m:-m], ref[m:-m, m:-m], atol=1e-5)
    assert np.isfinite(got).all() and got.min() >= 0 and got.max() <= 1


def test_tiled_equals_whole_unet_halo_128() -> None:
    model = _tiny_unet()
    da = _scene(420, 389, seed=2)  # not a multiple of the tile; several blocks each way
    prob = predict(da, model, PredictConfig(tile_size=64, halo=128, batch_size=2)).values
    ref = _whole(model, da.values)
    m = 128
    assert np.abs(prob[m:-m, m:-m] - ref[m:-m, m:-m]).max() < 1e-5
    # the scene's top/left edges are read exactly as whole-array inference reads them
    assert np.abs(prob[:-m, :-m] - ref[:-m, :-m]).max() < 1e-5


def test_scene_smaller_than_one_tile() -> None:
    model = _tiny_unet()
    da = _scene(48, 64, seed=4)
    prob = predict(da, model, PredictConfig(tile_size=256, halo=128)).values
    np.testing.assert_allclose(prob, _whole(model, da.values), atol=1e-5)


def test_nodata_holes_are_nan_and_do_not_leak() -> None:
    model = _small_conv()
    da = _scene(130, 120, seed=6)
    data = da.values.copy()
    data[1, 40:60, 30:70] = np.nan  # one band missing: the pixel is invalid
    data[:, 100:, 100:] = np.nan  # a fully masked corner block
    holed = da.copy(data=dsa.from_array(data, chunks=(3, 64, 64)))
    prob = predict(holed, model, PredictConfig(tile_size=32, halo=16, batch_size=3)).values
    invalid = np.isnan(data).any(axis=0)
    assert np.array_equal(np.isnan(prob), invalid)
    ref = _whole(model, data)  # NaN -> 0 (the normalized band mean) for a stand-in model
    m = 16
    valid = ~invalid[m:-m, m:-m]
    np.testing.assert_allclose(prob[m:-m, m:-m][valid], ref[m:-m, m:-m][valid], atol=1e-5)


def test_input_storage_does_not_change_probabilities() -> None:
    """Dask chunks of any layout, a read-only float64 copy and plain numpy give one answer."""
    model = _small_conv()
    da = _scene(150, 140, seed=8, chunks=48)
    config = PredictConfig(tile_size=32, halo=16)
    want = predict(da, model, config).values
    readonly = da.values.astype(np.float64)
    readonly.flags.writeable = False
    for data in (dsa.from_array(readonly, chunks=(3, 70, 33)), da.values):
        got = predict(da.copy(data=data), model, config).values
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_in_memory_input_is_read_in_place_not_copied() -> None:
    """A numpy-backed scene becomes input chunks that are views of the caller's array (dask's
    from_array would copy it all first), is left unchanged, and a read-only float64 array
    works the same."""
    model = _small_conv()
    da = _scene(150, 140, seed=9).compute()
    config = PredictConfig(tile_size=32, halo=16)
    data = da.values
    before = data.copy()
    prob = predict(da, model, config)
    (layer,) = [k for k in prob.data.dask.layers if k.startswith("rts-input-")]
    chunks = list(prob.data.dask.layers[layer].values())
    assert len(chunks) == len(input_chunks(150, 140, config)[0]) * len(
        input_chunks(150, 140, config)[1]
    )
    assert all(np.shares_memory(np.asarray(c), data) for c in chunks)
    got = prob.values
    np.testing.assert_array_equal(data, before)
    m = 16
    np.testing.assert_allclose(got[m:-m, m:-m], _whole(model, data)[m:-m, m:-m], atol=1e-5)
    readonly = data.astype(np.float64)
    readonly.flags.writeable = False
    np.testing.assert_allclose(
        predict(da.copy(data=readonly), model, config).values, got, atol=1e-6
    )


def test_output_keeps_coords_crs_attrs() -> None:
    da = _scene(64, 80)
    prob = predict(da, _small_conv(), PredictConfig(tile_size=32, halo=16))
    assert prob.dims == ("y", "x") and prob.dtype == np.float32
    np.testing.assert_array_equal(prob["x"].values, da["x"].values)
    np.testing.assert_array_equal(prob["y"].values, da["y"].values)
    assert prob.rio.crs.to_epsg() == 32618
    assert prob.attrs["item_id"] == "scene-1"


def test_tta_with_an_equivariant_model_changes_nothing() -> None:
    torch.manual_seed(0)
    pointwise = torch.nn.Conv2d(3, 1, 1).eval()  # commutes with every flip and rotation
    da = _scene(70, 90)
    plain = predict(da, pointwise, PredictConfig(tile_size=32, halo=16)).values
    tta = predict(da, pointwise, PredictConfig(tile_size=32, halo=16, tta=True)).values
    np.testing.assert_allclose(tta, plain, atol=1e-6)
    other = predict(da, _small_conv(), PredictConfig(tile_size=32, halo=16, tta=True)).values
    assert np.isfinite(other).all() and other.min() >= 0 and other.max() <= 1


def test_ensemble_is_the_mean_of_probabilities() -> None:
    a, b = _small_conv(), _tiny_unet()
    da = _scene(64, 64)
    config = PredictConfig(tile_size=64, halo=0)
    both = predict(da, [a, b], config).values
    expected = (predict(da, a, config).values + predict(da, b, config).values) / 2
    np.testing.assert_allclose(both, expected, atol=1e-6)


def _weights(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.safetensors"
    card = {
        "bands": BANDS,
        "normalisation": {"mean": [0.1, 0.2, 0.3], "std": [1.0, 2.0, 0.5]},
        "threshold": 0.5,
    }
    save_weights(_tiny_unet(), card, path)
    return path


def test_model_ref_matches_whole_scene_and_checks_bands(tmp_path: Path) -> None:
    path = _weights(tmp_path)
    ref = ModelRef.from_path(path)
    da = _scene(300, 280, seed=9)
    prob = predict(da, ref, PredictConfig(tile_size=64, halo=128, device="cpu")).values
    model, _ = load_model(path)
    with torch.inference_mode():
        whole = torch.sigmoid(model(torch.from_numpy(da.values)[None]))[0, 0].numpy()
    m = 128
    assert np.abs(prob[:-m, :-m] - whole[:-m, :-m]).max() < 1e-5
    wrong = da.assign_coords(band=["B02", "B03", "B08"])
    with pytest.raises(WeightsError, match="B08"):
        predict(wrong, ref)


def test_bad_inputs_are_refused() -> None:
    da = _scene(32, 32)
    with pytest.raises(ConfigError, match="dims"):
        predict(da.transpose("y", "x", "band"), _small_conv())
    with pytest.raises(ConfigError, match="ModelRef"):
        predict(da, "weights.safetensors")  # type: ignore[arg-type]


def test_scenes_computed_together_keep_their_own_results() -> None:
    import dask

    model = _small_conv()
    config = PredictConfig(tile_size=32, halo=16)
    scenes = [_scene(70, 60, seed=s) for s in (1, 2)]
    together = dask.compute(*[predict(da, model, config).data for da in scenes])
    for da, got in zip(scenes, together, strict=True):
        np.testing.assert_array_equal(got, predict(da, model, config).values)
    assert not np.allclose(together[0], together[1])


def _dependencies_by_layer(prob: xr.DataArray) -> dict[str, set[str]]:
    """For each model task: the key prefixes of the tasks it reads."""
    from dask.core import get_dependencies
    from dask.utils import key_split

    graph = dict(prob.data.__dask_graph__())
    return {
        str(key): {key_split(dep) for dep in get_dependencies(graph, key)}
        for key in graph
        if key_split(key) == "rts-predict"
    }


def test_input_chunks_give_every_halo_strip_its_own_chunk() -> None:
    config = PredictConfig(tile_size=64, halo=16, batch_size=2)
    ychunks, xchunks = input_chunks(420, 389, config)
    assert sum(ychunks) == 420 and sum(xchunks) == 389
    # the tile grid's block edges (64 px in y, 128 px in x) are chunk edges, with a 16 px
    # chunk on each side of every interior block edge
    ybounds = set(np.cumsum(ychunks).tolist())
    assert {64, 128, 192, 256, 320}.issubset(ybounds)
    assert {48, 80, 304, 336}.issubset(ybounds)
    assert {128, 256, 112, 144}.issubset(set(np.cumsum(xchunks).tolist()))
    from dask.utils import key_split

    model = _small_conv()
    da = _scene(420, 389, seed=8)
    split = da.copy(data=da.data.rechunk((3, ychunks, xchunks)).persist())
    prob = predict(split, model, config)
    # every window is made of whole input chunks: nothing to copy, nothing pinned
    deps = _dependencies_by_layer(prob)
    assert deps and all(d == {key_split(split.data.name)} for d in deps.values())
    np.testing.assert_array_equal(prob.values, predict(da, model, config).values)


def test_windows_take_copies_of_partly_used_input_chunks() -> None:
    from arctic_rts.predict import _piece

    da = _scene(200, 200, chunks=64)
    prob = predict(da, _small_conv(), PredictConfig(tile_size=64, halo=16))
    deps = _dependencies_by_layer(prob)
    assert len(deps) == 9  # 64, 64 and 72 px blocks each way (8 px are too few for a block)
    # an interior block: its own input chunk whole, its neighbours' margins through copies
    assert any(len(d) == 2 and any(p.startswith("rts-piece") for p in d) for d in deps.values())
    block = np.ones((3, 64, 64), dtype=np.float32)
    margin = _piece(block, slice(-16, None), slice(None))
    assert margin.shape == (3, 16, 64) and not np.shares_memory(margin, block)


def test_bf16_precision_runs_in_bf16_and_tiles_like_the_whole_scene() -> None:
    model = _tiny_unet()
    da = _scene(300, 260, seed=4)
    cfg = PredictConfig(tile_size=64, halo=128, precision="bf16", device="cpu")
    prob = predict(da, model, cfg).values
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        x = torch.from_numpy(da.values)[None]
        whole = torch.sigmoid(model(x).float())[0, 0].numpy()
    fp32 = _whole(model, da.values)
    m = 128
    # bf16 arithmetic really ran: the result moves away from fp32 ...
    assert np.abs(prob - fp32).max() > 1e-4
    # ... yet tiling adds no error of its own beyond bf16 rounding
    assert np.abs(prob[m:-m, m:-m] - whole[m:-m, m:-m]).max() < 1e-3
    assert prob.dtype == np.float32
    with pytest.raises(ConfigError, match="precision"):
        PredictConfig(precision="fp16")


# --------------------------------------------------------------------------------- measured halo


def test_measure_halo_finds_the_receptive_field() -> None:
    image = np.random.default_rng(1).normal(size=(3, 336, 352)).astype(np.float32)
    # two 3x3 convolutions reach 2 px: no halo differs, 16 px is exact
    halo, diffs = measure_halo(_small_conv(), image)
    assert halo == 16 and diffs[0] > 1e-2 and diffs[16] == 0.0
    torch.manual_seed(0)
    pointwise = torch.nn.Conv2d(3, 1, 1).eval()
    assert measure_halo(pointwise, image)[0] == 0
    # a UNet reaches further; 128 px reproduces it, the rule picks the smallest halo within
    # the tolerance from which on every larger one is within it too
    halo, diffs = measure_halo(_tiny_unet(), image, tolerance=1e-4)
    assert diffs[128] < 1e-6 and diffs[0] > 1e-4
    assert all(d <= 1e-4 for h, d in diffs.items() if h >= halo)
    assert diffs[halo - 16] > 1e-4
    with pytest.raises(ConfigError, match="at least 320 px"):
        measure_halo(_small_conv(), image[:, :300])


def test_the_weights_measured_halo_is_the_default(tmp_path: Path) -> None:
    path = _weights(tmp_path)
    plain = ModelRef.from_path(path)
    assert resolve_halo(PredictConfig(), plain).halo == EXACT_HALO  # the card names none
    assert resolve_halo(PredictConfig(), _small_conv()).halo == EXACT_HALO
    card = json.loads(path.with_suffix(".json").read_text())
    measured = tmp_path / "measured.safetensors"
    save_weights(_tiny_unet(), {**card, "halo": 32}, measured)
    ref = ModelRef.from_path(measured)
    assert resolve_halo(PredictConfig(), ref).halo == 32
    assert resolve_halo(PredictConfig(halo=64), ref).halo == 64  # an explicit halo wins
    assert resolve_halo(PredictConfig(), [ref, plain]).halo == EXACT_HALO  # the widest
    da = _scene(200, 190, seed=3)
    default = predict(da, ref, PredictConfig(tile_size=64, device="cpu")).values
    explicit = predict(da, ref, PredictConfig(tile_size=64, halo=32, device="cpu")).values
    np.testing.assert_array_equal(default, explicit)
    chunks = input_chunks(200, 190, PredictConfig(tile_size=64), ref)
    assert chunks == input_chunks(200, 190, PredictConfig(tile_size=64, halo=32))
    assert chunks != input_chunks(200, 190, PredictConfig(tile_size=64))


def test_dihedral_views_keep_channels_last_and_invert() -> None:
    from arctic_rts.predict import _dihedral, _undo_dihedral

    x = torch.rand(1, 3, 32, 48).contiguous(memory_format=torch.channels_last)
    assert _dihedral(x, 0, False) is x  # the plain view costs no copy
    for k in range(4):
        for flip in (False, True):
            view = _dihedral(x, k, flip)
            assert view.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(_undo_dihedral(view, k, flip), x)


def test_predict_with_the_runs_weights_reads_no_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the run's Weights, planning (halo, input chunks, band check, graph) reads no card:
    only the per-process model cache reads one, when the model first runs."""
    from arctic_rts.model import weights as module

    path = _weights(tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    save_weights(_tiny_unet(), {**card, "halo": 32}, path)
    w = resolve_weights(path)
    reads: list[str] = []
    real = module.read_card
    monkeypatch.setattr(module, "read_card", lambda p: reads.append(str(p)) or real(p))
    da = _scene(200, 190, seed=3)
    config = PredictConfig(tile_size=64, device="cpu")
    assert resolve_halo(config, w).halo == 32
    assert input_chunks(200, 190, config, w) == input_chunks(200, 190, resolve_halo(config, w))
    prob = predict(da, w, config)
    with pytest.raises(WeightsError, match="B08"):
        predict(da.assign_coords(band=["B02", "B03", "B08"]), w)
    assert reads == []
    np.testing.assert_array_equal(prob.values, predict(da, ModelRef.from_path(path), config).values)


@pytest.mark.parametrize("layout", ["input_chunks", "squares"])
def test_gated_reads_wait_for_the_model_read_each_chunk_once_and_change_nothing(
    layout: str,
) -> None:
    """With ``read_ahead``, each input chunk is read once, by a task of its own that depends
    on the model task that many windows before the first window using the chunk (in the
    windows' order) and on no read of the input graph: the scheduler cannot read further
    ahead, and a halo strip shared by neighbouring windows is not read again for each. The
    probabilities are the same."""
    from dask.core import get_dependencies
    from dask.utils import key_split

    config = PredictConfig(tile_size=64, halo=16)
    da = _scene(200, 190, seed=3)
    chunks = input_chunks(200, 190, config) if layout == "input_chunks" else (50, 50)
    lazy = da.copy(data=da.data.rechunk((3, *chunks)) * 1.0)  # a graph of its own to run
    n_chunks = len(lazy.data.chunks[1]) * len(lazy.data.chunks[2])
    model = _small_conv()
    ref = predict(lazy, model, config).compute(scheduler="sync")
    for ahead in (1, 3):
        prob = predict(lazy, model, config, read_ahead=ahead)
        graph = dict(prob.data.__dask_graph__())
        reads = sorted(k for k in graph if key_split(k) == "rts-read")
        models = sorted(k for k in graph if key_split(k) == "rts-predict")
        assert len(models) == 9 and len(reads) == n_chunks  # 3 x 3 windows; each chunk once
        deps_of = {k: get_dependencies(graph, k) for k in reads}
        gates = {k: {d for d in deps if key_split(d) == "rts-done"} for k, deps in deps_of.items()}
        # besides its gate, a read depends on the input tasks every chunk needs (the numpy
        # array here), the same for every read, and never on another read or input chunk
        given = {frozenset(deps - gates[k]) for k, deps in deps_of.items()}
        assert len(given) == 1 and not any(key_split(d).startswith("rts-") for d in given.pop())
        # the chunks of the first `ahead` windows are read at once; every other read waits
        # for one model task
        assert any(not deps for deps in gates.values())
        assert any(deps for deps in gates.values())
        for deps in gates.values():
            assert len(deps) <= 1 and all(key_split(d) == "rts-done" for d in deps)
            for done in deps:
                assert {key_split(k) for k in get_dependencies(graph, done)} == {"rts-predict"}
        first = models[0]
        ungated = {r for r, deps in gates.items() if not deps}
        needs = {k for k in get_dependencies(graph, first)}
        needs |= {
            d for k in needs if key_split(k) == "rts-piece" for d in get_dependencies(graph, k)
        }
        assert needs & set(reads) <= ungated  # the first window's reads wait for nothing
        # a read carries its part of the input graph as one bytes object: a worker keeps the
        # arguments of finished tasks while later ones depend on them, and gated reads chain
        # a scene's tasks, so graph objects here stayed on the worker until the scene's end
        assert all(isinstance(graph[k][1].graph, bytes) for k in reads)
        for scheduler in ("sync", "threads"):
            got = prob.compute(scheduler=scheduler)
            np.testing.assert_array_equal(got.values, ref.values)


def test_gated_reads_compute_what_every_chunk_needs_once(tmp_path: Path) -> None:
    """A task that every input chunk needs (a stackstac scene's reader table, which opens the
    scene's files) stays a task of the graph, computed once and given to every read: not once
    per read, as it would be inside each read's own part of the input graph."""
    import dask

    config = PredictConfig(tile_size=64, halo=16)
    data = np.random.default_rng(5).normal(size=(3, 200, 190)).astype(np.float32)
    log = tmp_path / "opened"  # a file: a read's part of the graph runs from a pickled copy

    def table() -> np.ndarray:
        with log.open("a") as f:
            f.write("x")
        return np.ones(3, dtype=np.float32)

    shared = dask.delayed(table)()
    ys, xs = input_chunks(200, 190, config)
    oy, ox = np.cumsum((0, *ys)), np.cumsum((0, *xs))
    blocks = [
        [
            dsa.from_delayed(
                dask.delayed(np.multiply)(
                    data[:, oy[i] : oy[i + 1], ox[j] : ox[j + 1]], shared[:, None, None]
                ),
                (3, ys[i], xs[j]),
                np.float32,
            )
            for j in range(len(xs))
        ]
        for i in range(len(ys))
    ]
    lazy = _scene(200, 190).copy(data=dsa.block([blocks]))
    ref = predict(lazy.copy(data=dsa.from_array(data)), _small_conv(), config).compute()
    for scheduler in ("sync", "threads"):
        log.write_text("")
        got = predict(lazy, _small_conv(), config, read_ahead=2).compute(scheduler=scheduler)
        assert len(log.read_text()) == 1 < len(ys) * len(xs)
        np.testing.assert_array_equal(got.values, ref.values)
