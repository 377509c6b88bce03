"""Run the segmentation model over a scene: a lazy probability map through Dask overlap.

The scene is cut into Dask blocks aligned on the tile grid from the array origin, each read with
``halo`` pixels of context from its neighbours (``map_overlap`` with ``boundary="none"``: no
made-up pixels beyond the scene). A block holds ``batch_size`` tiles side by side, which run
through the model as one batch; their outputs are stitched with the blend weights of
:mod:`arctic_rts.tiling` and the halo is trimmed. For the paper's UNet (4 poolings) with
``halo >= 128`` and tiles on the 16 px grid this equals whole-scene inference exactly, away from
the scene's edges. Only the scene's bottom/right edge is padded (reflect) to a multiple of 16.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import dask
import dask.array as dsa
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import torch
import xarray as xr
from dask.array.overlap import overlap, trim_internal

from arctic_rts.cluster import GPU_RESOURCE, active_client, device_lock, get_model, gpu_workers
from arctic_rts.config import PredictConfig
from arctic_rts.errors import ConfigError
from arctic_rts.model.weights import ModelRef, NormalizedModel, check_bands, read_card
from arctic_rts.tiling import Blender, aligned_chunks, batched, pad_to_multiple, tile_windows

#: A model for :func:`predict`: a weights reference, a callable tensor -> logits, or several
#: of either (an ensemble: probabilities are averaged).
ModelSpec: TypeAlias = (
    ModelRef | Callable[[torch.Tensor], torch.Tensor] | Sequence[ModelRef | Callable[..., Any]]
)

#: Spatial alignment of the UNet: four 2x poolings.
ALIGN = 16


def _as_models(model: ModelSpec) -> list[Any]:
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ConfigError("predict needs at least one model.")
    for m in models:
        if not isinstance(m, ModelRef) and not callable(m):
            raise ConfigError(
                f"model must be a ModelRef (ModelRef.from_path('weights.safetensors')) or a "
                f"callable tensor -> logits, got {type(m).__name__}."
            )
    return models


def _check_input(da: xr.DataArray, models: list[Any]) -> None:
    if da.dims != ("band", "y", "x"):
        raise ConfigError(
            f"predict needs a DataArray with dims ('band', 'y', 'x'), got {da.dims}; "
            "load scenes with arctic_rts.load.load_scenes."
        )
    if "band" in da.coords:
        bands = [str(b) for b in da["band"].values]
        for m in models:
            if isinstance(m, ModelRef):
                check_bands(read_card(m.path), bands)


# ---------------------------------------------------------------------------------------------
# inside a task


def _resolve(model: Any, device: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], Any]:
    """The callable for one model spec and the device its input must live on."""
    if isinstance(model, ModelRef):
        net = get_model(model, device)
        return net, net.mean.device
    if isinstance(model, torch.nn.Module):
        param = next(model.parameters(), None)
        return model, param.device if param is not None else torch.device("cpu")
    return model, torch.device("cpu")


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.flip(x, dims=(-1,)) if flip else x
    return torch.rot90(x, k, dims=(-2, -1))


def _undo_dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, -k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def _probabilities(batch: np.ndarray, models: list[Any], config: PredictConfig) -> np.ndarray:
    """Mean probability ``(N, H, W)`` over models (and the 8 dihedral views with TTA)."""
    n, _, h, w = batch.shape
    ph, pw = pad_to_multiple(h, ALIGN), pad_to_multiple(w, ALIGN)
    x_cpu = torch.from_numpy(batch)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x_cpu = torch.nn.functional.pad(x_cpu, (0, pw, 0, ph), mode=mode)
    views = [(k, f) for f in (False, True) for k in range(4)] if config.tta else [(0, False)]
    total = torch.zeros((n, h + ph, w + pw), dtype=torch.float32)
    for spec in models:
        net, device = _resolve(spec, config.device)
        on_gpu = device.type == "cuda"
        with device_lock(device) if on_gpu else contextlib.nullcontext():
            x = x_cpu.to(device, non_blocking=True)
            if not isinstance(net, NormalizedModel):
                x = torch.nan_to_num(x, nan=0.0)  # stand-in models get the normalised band mean
            x = x.contiguous(memory_format=torch.channels_last)
            for k, flip in views:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
                    logits = net(_dihedral(x, k, flip))
                prob = torch.sigmoid(_undo_dihedral(logits.float(), k, flip))[:, 0]
                total += prob.cpu()
    total /= len(models) * len(views)
    return total[:, :h, :w].numpy()


def _predict_block(block: np.ndarray, models: list[Any], config: PredictConfig) -> np.ndarray:
    """Probability ``(y, x)`` for one block ``(band, y, x)`` of reflectance (halo included)."""
    block = np.asarray(block, dtype=np.float32)
    invalid = np.isnan(block).any(axis=0)
    out = np.full(block.shape[1:], np.nan, dtype=np.float32)
    if invalid.all():
        return out  # fully masked: nothing to run
    window = config.tile_size + 2 * config.halo
    windows = tile_windows(block.shape[1:], window, halo=config.halo)
    with torch.inference_mode():
        if len(windows) == 1:
            prob = _probabilities(block[None], models, config)[0]
        else:
            blender = Blender(block.shape[1:], halo=config.halo)
            for group in batched(windows, config.batch_size):
                batch = np.stack([block[(slice(None), *win.slices)] for win in group])
                for win, p in zip(group, _probabilities(batch, models, config), strict=True):
                    blender.add(win, p)
            prob = blender.result()
    out[...] = prob
    out[invalid] = np.nan
    return out


# ---------------------------------------------------------------------------------------------
# the graph


def _probability_graph(arr: dsa.Array, models: list[Any], config: PredictConfig) -> dsa.Array:
    """Lazy ``(y, x)`` probabilities for a ``(band, y, x)`` dask array."""
    tile = max(config.tile_size, config.halo)  # Dask's overlap needs chunks >= its depth
    ychunks = aligned_chunks(arr.shape[1], tile, minimum=config.halo)
    xchunks = aligned_chunks(arr.shape[2], tile * config.batch_size, minimum=config.halo)
    arr = arr.rechunk((arr.shape[0], ychunks, xchunks))
    depth = {0: 0, 1: config.halo if len(ychunks) > 1 else 0}
    depth[2] = config.halo if len(xchunks) > 1 else 0
    padded = overlap(arr, depth=depth, boundary="none")
    # Model tasks ask for the GPU resource when workers declare one, so reading and
    # vectorising never wait for a GPU slot. Dask keeps layer annotations only while the graph
    # is not low-level fused (``optimization.fuse.active: False`` or ``optimize_graph=False``);
    # the per-device lock in the model task serialises GPU use either way.
    resources = {}
    client = active_client()
    if client is not None and gpu_workers(client):
        resources = {"resources": {GPU_RESOURCE: 1}}
    with dask.annotate(**resources):
        prob = padded.map_blocks(
            _predict_block,
            models,
            config,
            drop_axis=0,
            dtype=np.float32,
            meta=np.empty((0, 0), dtype=np.float32),
            token="rts-predict",  # a prefix; `name` would make every scene share keys
        )
    return trim_internal(prob, {0: depth[1], 1: depth[2]}, boundary="none")


def predict(
    da: xr.DataArray, model: ModelSpec, config: PredictConfig | None = None
) -> xr.DataArray:
    """Probability of "thaw slump" per pixel, lazily: no pixel is read before ``.compute()``.

    Args:
        da: Reflectance ``(band, y, x)`` in the model card's band order (as from
            ``load_scenes``), NaN where invalid; numpy- or dask-backed.
        model: A :class:`~arctic_rts.model.weights.ModelRef` (loaded once per worker process),
            a callable tensor ``(N, C, H, W)`` -> logits ``(N, 1, H, W)``, or a list of them
            (an ensemble: the mean of their probabilities).
        config: Tile size, halo, batch size, test-time augmentation, device.

    Returns:
        float32 ``(y, x)`` probabilities in [0, 1], NaN where any input band was NaN, with the
        input's ``y``/``x`` coordinates, CRS and attrs. With a distributed Client active the
        work runs on its workers (on their GPUs when they declare the ``GPU`` resource).

    Raises:
        ConfigError: wrong dims or model type.
        WeightsError: the bands of ``da`` differ from a model card's.
    """
    config = config or PredictConfig()
    models = _as_models(model)
    _check_input(da, models)
    data = da.data
    arr = data if isinstance(data, dsa.Array) else dsa.from_array(np.asarray(data))
    prob = _probability_graph(arr, models, config)
    template = da.isel(band=0, drop=True)
    out = xr.DataArray(
        prob, coords=template.coords, dims=("y", "x"), attrs=dict(da.attrs), name="rts_probability"
    )
    crs = da.rio.crs if hasattr(da, "rio") else None
    if crs is not None:
        out = out.rio.write_crs(crs)
    return out
