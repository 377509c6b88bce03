"""Runners of a UNet's forward pass besides torch's own: ONNX Runtime on the CPU.

Optional (the ``onnx`` extra); ``PredictConfig.backend`` picks it. Each runner
takes the network's normalized input ``(N, C, H, W)`` as a float32 CPU tensor and returns the
logits as a tensor, like :class:`~arctic_rts.model.unet.UNet` itself. The graph is exported once
per input shape (a tile size: a handful per run) from :meth:`UNet.reference_forward`, the plain
composition of the modules: the fused path of ``UNet.forward`` writes into slices of its
buffers, which tracing does not record.
"""

from __future__ import annotations

import io
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from arctic_rts.config import BACKENDS
from arctic_rts.model.unet import UNet

Runner = Callable[[torch.Tensor], torch.Tensor]


class _Plain(nn.Module):
    """``UNet.reference_forward`` as a module's forward, for export."""

    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet.reference_forward(x)


def _onnxruntime(unet: UNet, example: torch.Tensor, threads: int) -> Callable[[np.ndarray], Any]:
    import onnxruntime as ort  # the onnx extra

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            _Plain(unet).eval(),
            (example,),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
            dynamo=False,
            input_names=["x"],
            opset_version=17,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


_BUILDERS = {"onnxruntime": _onnxruntime}
#: Held while a graph is built: tracing for export is not thread-safe (model tasks run in threads).
_BUILDING = threading.Lock()
#: One runner per (UNet, backend) in this process, so the graphs of a model are built once.
_CACHE: weakref.WeakKeyDictionary[UNet, dict[str, Runner]] = weakref.WeakKeyDictionary()


def backend_runner(name: str, unet: UNet, threads: int | None = None) -> Runner:
    """The forward pass of ``unet`` on backend ``name`` (``"torch"``: ``unet`` itself).

    Raises:
        ImportError: the backend's package is not installed (its extra names it).
        ValueError: an unknown backend name.
    """
    if name == "torch":
        return unet
    if name not in _BUILDERS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}.")
    cached = _CACHE.setdefault(unet, {})
    if name in cached:
        return cached[name]
    __import__(name)  # fail now, with the package's name, rather than at the first tile
    n_threads = threads or torch.get_num_threads()
    graphs: dict[tuple[int, ...], Callable[[np.ndarray], Any]] = {}

    def run(x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        with _BUILDING:
            if arr.shape not in graphs:
                graphs[arr.shape] = _BUILDERS[name](unet, torch.from_numpy(arr), n_threads)
        return torch.from_numpy(np.asarray(graphs[arr.shape](arr)))

    cached[name] = run
    return run
