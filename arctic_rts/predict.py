"""Run the segmentation model over a scene: a lazy probability map through Dask overlap.

The scene is cut into Dask blocks aligned on the tile grid from the array origin, each run with
``halo`` pixels of context copied from its neighbours (like ``map_overlap`` with
``boundary="none"``: no made-up pixels beyond the scene, but without pinning whole neighbour
blocks in memory). A block holds ``batch_size`` tiles side by side, which run
through the model as one batch; their outputs are stitched with the blend weights of
:mod:`arctic_rts.tiling` and the halo is trimmed. For the paper's UNet (4 poolings) with
``halo >= 128`` and tiles on the 16 px grid this equals whole-scene inference exactly, away from
the scene's edges; a trained model's influence fades much sooner, so its card carries the
smallest halo measured to stay within ``HALO_TOLERANCE`` of whole-image output
(:func:`arctic_rts.model.halo.measure_halo`), and that is the default. Only the scene's
bottom/right edge is padded (reflect) to a multiple of 16.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import dask.array as dsa
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import torch
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from arctic_rts.cluster import (
    GPU_RESOURCE,
    active_client,
    get_model,
    gpu_workers,
    release_free_memory,
)
from arctic_rts.config import PredictConfig
from arctic_rts.errors import ConfigError
from arctic_rts.model.halo import ALIGN, EXACT_HALO
from arctic_rts.model.runners import backend_runner
from arctic_rts.model.weights import ModelRef, NormalizedModel, Weights, check_bands
from arctic_rts.model_tasks import model_slot, model_turn, use_task_threads
from arctic_rts.tiling import (
    Blender,
    aligned_chunks,
    axis_pieces,
    batched,
    block_windows,
    pad_to_multiple,
    tile_windows,
)

#: A model for :func:`predict`: the run's :class:`~arctic_rts.model.weights.Weights`, a weights
#: reference, a callable tensor -> logits, or several references or callables (an ensemble:
#: probabilities are averaged).
ModelSpec: TypeAlias = (
    Weights
    | ModelRef
    | Callable[[torch.Tensor], torch.Tensor]
    | Sequence[ModelRef | Callable[..., Any]]
)


def resolve_halo(config: PredictConfig, model: ModelSpec) -> PredictConfig:
    """``config`` with ``halo`` filled in where it is ``None``: the largest halo the models'
    cards name (:func:`~arctic_rts.model.halo.measure_halo`), or :data:`EXACT_HALO` for models
    without one.

    Given bare :class:`~arctic_rts.model.weights.ModelRef` s this reads their cards; given
    the run's :class:`~arctic_rts.model.weights.Weights` it reads nothing."""
    if config.halo is not None:
        return config
    return _with_halo(config, *_identify(model))


def _with_halo(config: PredictConfig, models: list[Any], weights: Weights | None) -> PredictConfig:
    """``config`` with its halo from ``weights`` (for the references among ``models``) and
    :data:`EXACT_HALO` for the callables among them."""
    if config.halo is not None:
        return config
    halos = [EXACT_HALO for m in models if not isinstance(m, ModelRef)]
    if weights is not None:
        halos.append(EXACT_HALO if weights.halo is None else weights.halo)
    return dataclasses.replace(config, halo=max(halos))


def _halo(config: PredictConfig) -> int:
    return EXACT_HALO if config.halo is None else config.halo


def _identify(model: ModelSpec) -> tuple[list[Any], Weights | None]:
    """The models to run, and the identity of the weights files among them: the given
    :class:`~arctic_rts.model.weights.Weights`, or one read from bare references' cards."""
    if isinstance(model, Weights):
        return list(model.references), model
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ConfigError("predict needs at least one model.")
    for m in models:
        if not isinstance(m, ModelRef) and not callable(m):
            raise ConfigError(
                f"model must be Weights (arctic_rts.model.resolve_weights('weights.safetensors'))"
                f", a ModelRef or a callable tensor -> logits, got {type(m).__name__}."
            )
    refs = [m for m in models if isinstance(m, ModelRef)]
    return models, Weights.from_references(refs) if refs else None


def _check_input(da: xr.DataArray, weights: Weights | None) -> None:
    if da.dims != ("band", "y", "x"):
        raise ConfigError(
            f"predict needs a DataArray with dims ('band', 'y', 'x'), got {da.dims}; "
            "load scenes with arctic_rts.load.load_scenes."
        )
    if "band" in da.coords and weights is not None:
        check_bands(weights, [str(b) for b in da["band"].values])


def _check_backend(config: PredictConfig) -> None:
    """Refuse a backend that is not installed here or a GPU for a CPU-only backend."""
    if config.backend == "torch":
        return
    if "cuda" in config.device:
        raise ConfigError(f"backend {config.backend!r} runs on the CPU, not {config.device!r}.")
    if importlib.util.find_spec(config.backend) is None:
        raise ConfigError(
            f"backend {config.backend!r} is not installed: pip install 'arctic-rts[onnx]'."
        )


# ---------------------------------------------------------------------------------------------
# inside a task


def _resolve(
    model: Any, config: PredictConfig
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Any]:
    """The callable for one model spec and the device its input must live on; a weights file's
    model runs on ``config.backend`` (ONNX Runtime: on the CPU)."""
    if isinstance(model, ModelRef):
        net = get_model(model, "cpu" if config.backend != "torch" else config.device)
        if config.backend != "torch":
            run = backend_runner(config.backend, net.unet)
            return lambda x: run(net.normalize(x)), net.mean.device
        return net, net.mean.device
    if isinstance(model, torch.nn.Module):
        param = next(model.parameters(), None)
        return model, param.device if param is not None else torch.device("cpu")
    return model, torch.device("cpu")


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """One of the 8 flips/rotations, in channels_last (``rot90`` copies even for ``k = 0``, into
    the default layout: the model would then run in the slower NCHW layout)."""
    if k == 0 and not flip:
        return x
    x = torch.flip(x, dims=(-1,)) if flip else x
    return torch.rot90(x, k, dims=(-2, -1)).contiguous(memory_format=torch.channels_last)


def _undo_dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if k == 0 and not flip:
        return x
    x = torch.rot90(x, -k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def _probabilities(batch: torch.Tensor, models: list[Any], config: PredictConfig) -> np.ndarray:
    """Mean probability ``(N, H, W)`` over models (and the 8 dihedral views with TTA) for
    float32 reflectance ``(N, C, H, W)``, best in channels_last layout (then not copied)."""
    h, w = batch.shape[-2:]
    ph, pw = pad_to_multiple(h, ALIGN), pad_to_multiple(w, ALIGN)
    x_cpu = batch
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x_cpu = torch.nn.functional.pad(x_cpu, (0, pw, 0, ph), mode=mode)
    views = [(k, f) for f in (False, True) for k in range(4)] if config.tta else [(0, False)]
    total: torch.Tensor | None = None
    for spec in models:
        net, device = _resolve(spec, config)
        on_gpu = device.type == "cuda"
        bf16 = config.precision == "bf16" or (config.precision == "auto" and on_gpu)
        with model_turn(device):
            x = x_cpu.to(device, non_blocking=True)
            if not isinstance(net, NormalizedModel) and not isinstance(spec, ModelRef):
                x = torch.nan_to_num(x, nan=0.0)  # stand-in models get the normalized band mean
            x = x.contiguous(memory_format=torch.channels_last)
            for k, flip in views:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = net(_dihedral(x, k, flip))
                prob = torch.sigmoid(_undo_dihedral(logits.float(), k, flip))[:, 0].cpu()
                total = prob if total is None else total.add_(prob)
    assert total is not None  # _identify guarantees a model
    if len(models) * len(views) > 1:
        total /= len(models) * len(views)
    return total[:, :h, :w].numpy()


def _predict_block(
    block: torch.Tensor, invalid: np.ndarray, models: list[Any], config: PredictConfig
) -> np.ndarray:
    """Probability ``(y, x)`` for one block ``(band, y, x)`` of float32 reflectance (halo
    included), NaN where ``invalid``."""
    shape = (int(block.shape[1]), int(block.shape[2]))
    if invalid.all():
        return np.full(shape, np.nan, dtype=np.float32)  # fully masked: nothing to run
    halo = _halo(config)
    windows = tile_windows(shape, config.tile_size + 2 * halo, halo=halo)
    with torch.inference_mode():
        if len(windows) == 1:
            prob = _probabilities(block[None], models, config)[0]
        else:
            blender = Blender(shape, halo=halo)
            for group in batched(windows, config.batch_size):
                batch = torch.stack([block[(slice(None), *win.slices)] for win in group])
                for win, p in zip(group, _probabilities(batch, models, config), strict=True):
                    blender.add(win, p)
            prob = blender.result()
    prob[invalid] = np.nan  # float32, writable: a view of the model's output or the blend
    return prob


# ---------------------------------------------------------------------------------------------
# the graph


def _piece(block: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """Part of an input block that a model window needs, as a copy: a view would keep the whole
    block in memory until the last window that reads it has run."""
    return np.array(block[:, rows, cols], dtype=np.float32, copy=True)


def _assemble(pieces: list[list[np.ndarray]]) -> tuple[torch.Tensor, np.ndarray]:
    """A window from its rows of ``(band, y, x)`` pieces: float32 ``(band, y, x)`` in
    channels_last layout (bands of a pixel side by side, the model's layout, written in one
    pass instead of a concatenation and a layout copy) and where any band is NaN."""
    heights = [row[0].shape[1] for row in pieces]
    widths = [piece.shape[2] for piece in pieces[0]]
    window = torch.empty((sum(heights), sum(widths), pieces[0][0].shape[0]), dtype=torch.float32)
    invalid = np.empty(window.shape[:2], dtype=bool)
    y = 0
    for row, h in zip(pieces, heights, strict=True):
        x = 0
        for piece, w in zip(row, widths, strict=True):
            piece = np.require(piece, dtype=np.float32, requirements="W")  # torch needs both
            window[y : y + h, x : x + w].copy_(torch.from_numpy(piece).permute(1, 2, 0))
            # NaN in any band makes the band sum NaN: one pass, no (band, y, x) mask
            invalid[y : y + h, x : x + w] = np.isnan(piece.sum(axis=0, dtype=np.float32))
            x += w
        y += h
    return window.permute(2, 0, 1), invalid


def _predict_window(
    pieces: list[list[np.ndarray]],
    top: int,
    bottom: int,
    left: int,
    right: int,
    *,
    models: list[Any],
    config: PredictConfig,
    tasks: int,
    report: tuple[str, str, int] | None = None,
) -> np.ndarray:
    """Probability of one block from the pieces of its window (the block and ``halo`` px of
    context where the scene goes on); the context is cut off again. ``tasks``: model tasks in
    the graph (how many could run at once, for :func:`~arctic_rts.model_tasks.use_task_threads`).
    ``report``: ``(topic, label, tiles)`` of a progress event (see :func:`predict`)."""
    use_task_threads(tasks)
    with model_slot():
        window, invalid = _assemble(pieces)
        prob = _predict_block(window, invalid, models, config)
        h, w = prob.shape
        out = prob[top : h - bottom, left : w - right].copy()
        del window, invalid, prob
    release_free_memory()
    if report is not None:
        _report_tiles(*report)
    return out


def _report_tiles(topic: str, label: str, tiles: int) -> None:
    """Log a progress event on the distributed worker running this task (none elsewhere)."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # the threaded or synchronous scheduler: no one to tell
        return
    worker.log_event(topic, {"scene": label, "tiles": tiles})


def _blocks(height: int, width: int, config: PredictConfig) -> tuple[tuple[int, ...], ...]:
    """Sizes of the model blocks along y and x: the tile grid from the array origin, a block
    ``batch_size`` tiles wide."""
    halo = _halo(config)
    tile = max(config.tile_size, halo)
    return (
        aligned_chunks(height, tile, minimum=halo),
        aligned_chunks(width, tile * config.batch_size, minimum=halo),
    )


def _model_windows(height: int, width: int, config: PredictConfig) -> list[list[list[Any]]]:
    """The model windows (tiles, halo included) of every block, as ``_predict_block`` cuts
    them: ``[block row][block column] -> windows``."""
    halo = _halo(config)
    ychunks, xchunks = _blocks(height, width, config)
    window = config.tile_size + 2 * halo
    xwins = block_windows(width, xchunks, halo)
    return [
        [tile_windows((y1 - y0, x1 - x0), window, halo=halo) for x0, x1, _, _ in xwins]
        for y0, y1, _, _ in block_windows(height, ychunks, halo)
    ]


def block_tiles(height: int, width: int, config: PredictConfig) -> np.ndarray:
    """Model windows (tiles) that each model task of :func:`predict` runs on a scene of
    ``height`` x ``width`` px, as an array ``(block rows, block columns)``: what progress
    reports count. ``config.halo`` as :func:`resolve_halo` leaves it (``None`` counts with
    :data:`EXACT_HALO`)."""
    blocks = _model_windows(height, width, config)
    return np.array([[len(wins) for wins in row] for row in blocks], dtype=np.int64)


def window_pixels(height: int, width: int, config: PredictConfig) -> int:
    """Pixels the model sees on a scene of ``height`` x ``width`` px, halos included (the
    work the dry run's time estimate scales with)."""
    blocks = _model_windows(height, width, config)
    return sum(w.shape[0] * w.shape[1] for row in blocks for wins in row for w in wins)


def time_pixel(model: ModelSpec, config: PredictConfig | None = None) -> tuple[float, str]:
    """Seconds per window pixel of a forward pass here, and the device: a calibration.

    One small warm-up pass (model load, kernel choice), then one timed pass of
    ``batch_size`` full windows (a tile and its halo) of random reflectance on
    ``config.device``. Needs weights (the number of bands comes from their card).
    """
    import time

    models, weights = _identify(model)
    if weights is None:
        raise ConfigError("time_pixel needs weights with a card (for their bands).")
    config = _with_halo(config or PredictConfig(), models, weights)
    side = config.tile_size + 2 * _halo(config)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((config.batch_size, len(weights.bands), side, side), generator=gen) * 0.3
    with torch.inference_mode():
        _probabilities(x[:1, :, :32, :32], models, config)
        start = time.perf_counter()
        _probabilities(x, models, config)  # returns on the host: GPU work has finished
        seconds = time.perf_counter() - start
    return seconds / x[:, 0].numel(), str(_resolve(models[0], config)[1])


def _probability_graph(
    arr: dsa.Array,
    models: list[Any],
    config: PredictConfig,
    read_ahead: int | None = None,
    progress: tuple[str, str] | None = None,
) -> dsa.Array:
    """Lazy ``(y, x)`` probabilities for a ``(band, y, x)`` dask array.

    One model task per block of the tile grid (origins on multiples of ``tile_size``), fed
    with its window: the block plus ``halo`` px of context. The window is gathered straight
    from whichever input chunks it overlaps, without rechunking: input chunks it covers whole
    are passed as they are, the others through small tasks that copy the part needed. Unlike
    ``dask.array.overlap`` (whose slices are views that pin whole neighbour chunks), an input
    chunk is freed as soon as its own copies are made. What still grows with the scene is the
    row of input chunks that waits for the next row's context; input read with
    :func:`input_chunks` keeps every halo strip a chunk of its own, which bounds that too.

    With ``read_ahead`` (see :func:`predict`), each window's input chunks are computed by a
    read task of its own (the input graph runs inside it) that waits for the model task
    ``read_ahead`` windows earlier.
    """
    arr = arr.rechunk({0: -1})  # all bands of a pixel in one chunk
    halo = _halo(config)
    height, width = arr.shape[1:]
    ychunks, xchunks = _blocks(height, width, config)
    token = tokenize(arr, models, config, read_ahead, progress)
    src, piece_name, name = arr.name, f"rts-piece-{token}", f"rts-predict-{token}"
    run = functools.partial(
        _predict_window, models=models, config=config, tasks=len(ychunks) * len(xchunks)
    )
    pieces_dsk: dict[Any, Any] = {}
    model_dsk: dict[Any, Any] = {}
    ywins, xwins = block_windows(height, ychunks, halo), block_windows(width, xchunks, halo)
    # Model tasks ask for the GPU resource when workers declare one, so reading and
    # vectorising never wait for a GPU slot. Dask keeps layer annotations only while the graph
    # is not low-level fused (``optimize_graph=False``, see ``cluster.as_delayed``); the
    # per-device lock in the model task serialises GPU use either way.
    annotations = None
    client = active_client()
    if client is not None and gpu_workers(client):
        annotations = {"resources": {GPU_RESOURCE: 1}}
    # gated reads share one layer with the model tasks: not with the GPU annotation
    gated = _Gated(arr, name, read_ahead) if read_ahead and annotations is None else None
    counts = block_tiles(height, width, config) if progress else None
    for (i, (y0, y1, top, bottom)), (j, (x0, x1, left, right)) in itertools.product(
        enumerate(ywins), enumerate(xwins)
    ):
        task = run
        if progress is not None and counts is not None:
            task = functools.partial(run, report=(*progress, int(counts[i, j])))
        if gated is not None:
            model_dsk[(name, i, j)] = (
                task,
                gated.add(i, j, y0, y1, x0, x1),
                top,
                bottom,
                left,
                right,
            )
            continue
        rows = []
        for ky, rows_slice, whole_y in axis_pieces(arr.chunks[1], y0, y1):
            row: list[tuple[Any, ...]] = []
            for kx, cols_slice, whole_x in axis_pieces(arr.chunks[2], x0, x1):
                if whole_y and whole_x:
                    row.append((src, 0, ky, kx))
                    continue
                key = (piece_name, i, j, ky, kx)
                pieces_dsk[key] = (_piece, (src, 0, ky, kx), rows_slice, cols_slice)
                row.append(key)
            rows.append(row)
        model_dsk[(name, i, j)] = (task, rows, top, bottom, left, right)
    meta = np.empty((0, 0), dtype=np.float32)
    if gated is not None:  # one layer: reads wait on model tasks, which wait on reads
        layer = MaterializedLayer({**gated.dsk, **model_dsk})
        graph = HighLevelGraph({name: layer}, {name: set()})
        return dsa.Array(graph, name, chunks=(ychunks, xchunks), meta=meta)
    (src_layer,) = arr.__dask_layers__()
    graph = HighLevelGraph(
        {
            **arr.dask.layers,
            piece_name: MaterializedLayer(pieces_dsk),
            name: MaterializedLayer(model_dsk, annotations=annotations),
        },
        {
            **arr.dask.dependencies,
            piece_name: {src_layer},
            name: {src_layer, piece_name},
        },
    )
    return dsa.Array(graph, name, chunks=(ychunks, xchunks), meta=meta)


class _Gated:
    """The read tasks of a gated probability graph (:func:`_probability_graph`): one per input
    chunk, read once however many windows use it, by a task that runs the part of the input
    graph that chunk needs and waits for the model task ``read_ahead`` windows before the first
    window (in the windows' order) that uses the chunk."""

    def __init__(self, arr: dsa.Array, model_name: str, read_ahead: int) -> None:
        from dask.core import flatten
        from dask.utils import ensure_dict

        self.arr, self.model, self.ahead = arr, model_name, max(1, read_ahead)
        self.input = ensure_dict(
            arr.__dask_optimize__(arr.__dask_graph__(), list(flatten(arr.__dask_keys__())))
        )
        self.parts, shared = _split_input(self.input, list(flatten(arr.__dask_keys__())))
        self.order: list[tuple[int, int]] = []
        self.dsk: dict[Any, Any] = {k: self.input[k] for k in shared}

    def _name(self, kind: str) -> str:
        return self.model.replace("rts-predict-", f"rts-{kind}-")

    def add(self, i: int, j: int, y0: int, y1: int, x0: int, x1: int) -> list[list[Any]]:
        """The keys of the pieces of window (i, j), rows ``y0:y1``, columns ``x0:x1``, as
        ``_predict_window`` takes them: input chunks it covers whole are read tasks, the
        others small tasks that copy the part needed from a read task."""
        gate = None
        if len(self.order) >= self.ahead:
            gate = (self._name("done"), *self.order[-self.ahead])
            self.dsk[gate] = (_done, (self.model, *self.order[-self.ahead]))
        rows = []
        for ky, rows_slice, whole_y in axis_pieces(self.arr.chunks[1], y0, y1):
            row: list[Any] = []
            for kx, cols_slice, whole_x in axis_pieces(self.arr.chunks[2], x0, x1):
                read = (self._name("read"), ky, kx)
                if read not in self.dsk:  # the first window that needs the chunk reads it
                    src = (self.arr.name, 0, ky, kx)
                    part = self.parts.pop(src)
                    self.dsk[read] = (_read_chunk, part, gate, *part.needs)
                if whole_y and whole_x:
                    row.append(read)
                    continue
                piece = (self._name("piece"), i, j, ky, kx)
                self.dsk[piece] = (_piece, read, rows_slice, cols_slice)
                row.append(piece)
            rows.append(row)
        self.order.append((i, j))
        return rows


def _split_input(
    graph: dict[Any, Any], keys: list[Any]
) -> tuple[dict[Any, _InputGraph], list[Any]]:
    """Each of ``keys``' part of ``graph``, less the tasks that every part needs (none for a
    single key), and those tasks' keys: they stay tasks of the cluster, computed once and
    given to each read. For a stackstac scene they are its reader tables, so every read of
    the scene on a worker goes through the same open files (and GDAL's cache of their decoded
    tiles), instead of opening the files again and decoding again the tiles it shares with
    its neighbours."""
    from dask.optimization import cull

    culled = {key: cull(graph, [key])[0] for key in keys}
    shared: list[Any] = []
    if len(keys) > 1:
        shared = sorted(set.intersection(*(set(part) for part in culled.values())), key=str)
    omit = set(shared)
    parts = {
        key: _InputGraph({k: v for k, v in part.items() if k not in omit}, key, shared)
        for key, part in culled.items()
    }
    return parts, shared


class _InputGraph:
    """A part of the input's graph carried by a read task as data (dask does not look inside):
    its chunk is computed where the read task runs, when it runs, from the part and the
    values of the tasks it ``needs`` (tasks of the cluster, shared by every read).

    The part is kept pickled: one bytes object in the graph, on the scheduler and on the
    worker, instead of the several hundred Python objects of a read's part of a stackstac
    graph; compressed, because each part repeats what the scene's reads share (hrefs, GDAL
    options). A worker keeps a finished task's arguments for as long as a task that depends on
    it is on the worker, and a scene's tasks are chained (read, model, done, a later read, and
    the vectorise windows' parts until the seam join), so on a worker without
    :class:`~arctic_rts.worker_plugins.DropFinishedSpecs` every read's part stays until the
    scene ends (the map run memory sections of BENCHMARKS.md)."""

    def __init__(self, graph: dict[Any, Any], key: Any, needs: Sequence[Any] = ()) -> None:
        import zlib

        from distributed.protocol.pickle import dumps  # pickle, cloudpickle where it must

        self.graph, self.key = zlib.compress(dumps(graph), 1), key
        self.needs = needs  # in the order the read task passes their values


def _read_chunk(part: _InputGraph, gate: None, *given: Any) -> np.ndarray:
    """One input chunk, computed here (``gate``: the model task it waited for; ``given``: the
    values of the tasks ``part`` needs, in ``part.needs`` order)."""
    import zlib

    import dask.local
    from dask._task_spec import DataNode
    from distributed.protocol.pickle import loads

    # Bytes that _InputGraph made from this run's own graph, carried inside the task as Dask
    # carries every task (pickled); never bytes from a file or from a user.
    graph = loads(zlib.decompress(part.graph))
    # as data nodes: a bare value that looks like a task (a tuple led by a callable) would run
    graph.update({k: DataNode(k, v) for k, v in zip(part.needs, given, strict=True)})
    return np.asarray(dask.local.get_sync(graph, part.key))


def _done(prob: np.ndarray) -> None:
    """Nothing: a token that a model task has finished (what a gated read waits for)."""
    return None


def input_chunks(
    height: int, width: int, config: PredictConfig | None = None, model: ModelSpec | None = None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunk sizes along y and x for reading a scene that :func:`predict` will run on.

    Every block of the tile grid is split into its ``halo``-wide margins and its middle, so
    the context one block needs from its neighbours is a chunk of its own: no task then waits
    on a neighbour's whole block, and a worker's memory does not grow with the scene's width.
    The price is more, smaller reads (9 per block). With input chunked on the tile grid
    instead (or coarser), a worker holds about one row of input chunks per scene. Pass the
    ``model`` that :func:`predict` will get when ``config.halo`` is ``None``.
    """
    config = config or PredictConfig()
    if model is not None:
        config = resolve_halo(config, model)
    halo = _halo(config)
    out = []
    for blocks in _blocks(height, width, config):
        sizes: list[int] = []
        for n in blocks:
            if halo and n > 2 * halo:
                sizes += [halo, n - 2 * halo, halo]
            else:
                sizes.append(n)
        out.append(tuple(sizes))
    return out[0], out[1]


def _in_memory(data: np.ndarray, chunks: tuple[tuple[int, ...], tuple[int, ...]]) -> dsa.Array:
    """A ``(band, y, x)`` numpy array as a dask array whose chunks are views of it.

    ``dask.array.from_array`` copies a numpy array first (a 12-band 4096^2 scene: 805 MB; without
    that copy predict went from 0.73 to 0.82 of the raw forward rate in ``bench/inference.py
    --only predict``); the views cost nothing, and every window is made of
    whole chunks (``chunks`` from :func:`input_chunks`), so no piece is copied twice. The
    array is read when the result is computed, not before. The name is random instead of a
    hash of every pixel."""
    ys, xs = chunks
    name = f"rts-input-{uuid.uuid4().hex}"
    yoff, xoff = np.cumsum((0, *ys)), np.cumsum((0, *xs))
    dsk: dict[Any, Any] = {
        (name, 0, i, j): data[:, yoff[i] : yoff[i + 1], xoff[j] : xoff[j + 1]]
        for i in range(len(ys))
        for j in range(len(xs))
    }
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return dsa.Array(graph, name, chunks=((data.shape[0],), ys, xs), dtype=data.dtype)


def predict(
    da: xr.DataArray,
    model: ModelSpec,
    config: PredictConfig | None = None,
    *,
    read_ahead: int | None = None,
    progress: tuple[str, str] | None = None,
) -> xr.DataArray:
    """Probability of "thaw slump" per pixel, lazily: no pixel is read before ``.compute()``.

    Args:
        da: Reflectance ``(band, y, x)`` in the model card's band order (as from
            ``load_scenes``), NaN where invalid; numpy- or dask-backed (numpy is read in
            place when the result is computed, not copied: do not change it before).
        model: The run's :class:`~arctic_rts.model.weights.Weights` (from
            :func:`~arctic_rts.model.weights.resolve_weights`; its references are loaded
            once per worker process and no card is read here), a bare
            :class:`~arctic_rts.model.weights.ModelRef` (its card is read once per call), a
            callable tensor ``(N, C, H, W)`` -> logits ``(N, 1, H, W)``, or a list of
            references or callables (an ensemble: the mean of their probabilities).
        config: Tile size, halo (``None``: the weights' measured halo, see
            :func:`resolve_halo`), batch size, test-time augmentation, device, precision.
        read_ahead: For dask input read in :func:`input_chunks`: each model window's input is
            read by a task of its own that waits until the model task this many windows
            earlier has finished, so reading never runs further ahead of the model (a worker
            whose model tasks are slower than its reads would otherwise read the whole scene
            into memory while it waits). None: every read as soon as a thread is free. Not
            with GPU workers (their model tasks' resource annotation needs a layer of its own).
        progress: ``(topic, label)``: each model task that runs on a distributed worker logs
            an event ``{"scene": label, "tiles": n}`` on ``topic`` when its ``n`` tiles are
            done (``Client.subscribe_topic`` receives them), so a client can count tiles
            without holding the probabilities.

    Without a distributed Client, Dask's threaded scheduler runs the model tasks side by side,
    each on its share of the cores (:func:`~arctic_rts.model_tasks.use_task_threads`); the
    synchronous scheduler runs them one after the other on the caller's torch threads.

    Returns:
        float32 ``(y, x)`` probabilities in [0, 1], NaN where any input band was NaN, with the
        input's ``y``/``x`` coordinates, CRS and attrs. With a distributed Client active the
        work runs on its workers (on their GPUs when they declare the ``GPU`` resource).

    Raises:
        ConfigError: wrong dims or model type.
        WeightsError: the bands of ``da`` differ from a model card's.
    """
    models, weights = _identify(model)
    config = _with_halo(config or PredictConfig(), models, weights)
    _check_input(da, weights)
    _check_backend(config)
    data = da.data
    if isinstance(data, dsa.Array):
        arr = data
    else:
        arr = _in_memory(np.asarray(data), input_chunks(da.sizes["y"], da.sizes["x"], config))
    gate = read_ahead if isinstance(data, dsa.Array) else None  # numpy input: nothing to read
    prob = _probability_graph(arr, models, config, gate, progress)
    template = da.isel(band=0, drop=True)
    out = xr.DataArray(
        prob, coords=template.coords, dims=("y", "x"), attrs=dict(da.attrs), name="rts_probability"
    )
    crs = da.rio.crs if hasattr(da, "rio") else None
    if crs is not None:
        out = out.rio.write_crs(crs)
    return out
