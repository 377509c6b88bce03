"""Tile windows and blend weights: pure numpy, no model, no xarray, no torch.

A scene (or one Dask block of it) is covered by windows of at most ``window`` pixels whose
origins lie on a grid of ``stride`` pixels from the array origin. Each window's output is blended
into the result with separable weights that are 1 in the window's interior, ramp smoothly
(raised cosine) over ``ramp`` pixels, and sit at ``floor`` (> 0, never zero) over the outer
``halo`` pixels, where a convolutional network's output is unreliable. Sides that touch the
array's edge get no ramp and no floor: no other window covers them, and the array's own edge is
the same for whole-array and tiled inference.

With ``ramp = 0`` the windows' cores partition the array and the blend is a plain paste; for the
paper's UNet with ``halo >= 128`` and windows on the 16 px grid that reproduces whole-array
inference exactly (DESIGN.md). A positive ``ramp`` cross-fades neighbours over a band where both
are reliable, which hides seams for models that are not exactly tiling-invariant.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

#: Default weight of the unreliable outer band of a window: small enough that it changes a
#: blended value by far less than 1e-5, large enough that a weight sum is never zero.
FLOOR: float = 1e-6


@dataclass(frozen=True)
class Window:
    """One tile: rows ``y0:y1`` and columns ``x0:x1`` of the array, plus which sides are edges."""

    y0: int
    y1: int
    x0: int
    x1: int
    #: Whether the top, bottom, left, right sides lie on the array's edge.
    edges: tuple[bool, bool, bool, bool]

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices for indexing the last two axes of an array."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the window."""
        return self.y1 - self.y0, self.x1 - self.x0


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window origins along one axis: multiples of ``stride`` until a window reaches the end."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    last = starts[-1] + stride
    starts.append(last)  # this window reaches the end (possibly clipped: stays on the grid)
    return starts


def tile_windows(shape: tuple[int, int], window: int, halo: int = 0, ramp: int = 0) -> list[Window]:
    """Windows of at most ``window`` px covering an array of ``shape`` (height, width).

    Neighbouring windows overlap by ``2 * halo + ramp`` px, so every pixel lies in the
    reliable interior of at least one window (or at the array's edge). Origins are multiples of
    the stride ``window - 2 * halo - ramp``; windows at the far edges are clipped, not shifted,
    so the origins stay on the grid (callers pad the clipped ones if they need equal sizes).

    Args:
        shape: Array height and width.
        window: Window edge in pixels.
        halo: Unreliable band at each window side, in pixels.
        ramp: Cross-fade band in pixels beyond the halo.

    Raises:
        ValueError: when no positive stride remains.
    """
    height, width = shape
    if height < 1 or width < 1:
        raise ValueError(f"cannot tile an empty array of shape {shape}.")
    if halo < 0 or ramp < 0:
        raise ValueError(f"halo and ramp must be >= 0, got halo={halo}, ramp={ramp}.")
    stride = window - 2 * halo - ramp
    if stride < 1:
        raise ValueError(
            f"window {window} leaves no core after halo {halo} and ramp {ramp} on both sides; "
            f"use a window larger than {2 * halo + ramp}."
        )
    out = []
    for y0 in _starts(height, window, stride):
        for x0 in _starts(width, window, stride):
            y1, x1 = min(y0 + window, height), min(x0 + window, width)
            edges = (y0 == 0, y1 == height, x0 == 0, x1 == width)
            out.append(Window(y0, y1, x0, x1, edges))
    return out


def _profile(
    n: int, halo: int, ramp: int, floor: float, edge_lo: bool, edge_hi: bool
) -> np.ndarray:
    """1-D weights: ``floor`` over the halo, a raised-cosine ramp to 1, then 1."""
    w = np.ones(n, dtype=np.float64)
    d = np.arange(n, dtype=np.float64)
    for is_edge, dist in ((edge_lo, d), (edge_hi, d[::-1])):
        if is_edge:
            continue
        if ramp > 0:
            t = np.clip((dist - halo + 0.5) / ramp, 0.0, 1.0)
            side = floor + (1.0 - floor) * 0.5 * (1.0 - np.cos(np.pi * t))
        else:
            side = np.where(dist < halo, floor, 1.0)
        w = np.minimum(w, side)
    return w


def blend_weights(window: Window, halo: int = 0, ramp: int = 0, floor: float = FLOOR) -> np.ndarray:
    """Blend weights of shape ``window.shape`` (float64, all > 0); see the module docstring."""
    if not 0 < floor <= 1:
        raise ValueError(f"floor must lie in (0, 1], got {floor}.")
    top, bottom, left, right = window.edges
    h, w = window.shape
    wy = _profile(h, halo, ramp, floor, top, bottom)
    wx = _profile(w, halo, ramp, floor, left, right)
    return np.outer(wy, wx)


class Blender:
    """Accumulates window outputs with their weights; :meth:`result` is the weighted mean.

    Args:
        shape: Output shape; the last two axes are (height, width) of the tiled array.
        halo: As in :func:`tile_windows`.
        ramp: As in :func:`tile_windows`.
        floor: Weight of the unreliable outer band (> 0).
    """

    def __init__(
        self, shape: tuple[int, ...], halo: int = 0, ramp: int = 0, floor: float = FLOOR
    ) -> None:
        self.total = np.zeros(shape, dtype=np.float64)
        self.weight = np.zeros(shape[-2:], dtype=np.float64)
        self.halo, self.ramp, self.floor = halo, ramp, floor

    def add(self, window: Window, values: np.ndarray) -> None:
        """Add one window's output (``(..., h, w)`` matching ``window.shape``)."""
        if values.shape[-2:] != window.shape:
            raise ValueError(f"values of shape {values.shape} do not fit window {window.shape}.")
        w = blend_weights(window, self.halo, self.ramp, self.floor)
        rows, cols = window.slices
        self.total[..., rows, cols] += values * w
        self.weight[rows, cols] += w

    def result(self, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """The blended array; raises if some pixel was covered by no window."""
        if not (self.weight > 0).all():
            raise ValueError("some pixels were covered by no window; tile the whole array.")
        return (self.total / self.weight).astype(dtype)


def batched(windows: Iterable[Window], batch_size: int) -> Iterator[list[Window]]:
    """Group windows of equal shape into batches of at most ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    groups: dict[tuple[int, int], list[Window]] = {}
    for win in windows:
        group = groups.setdefault(win.shape, [])
        group.append(win)
        if len(group) == batch_size:
            yield group
            groups[win.shape] = []
    for group in groups.values():
        if group:
            yield group


def aligned_chunks(size: int, chunk: int, minimum: int = 0) -> tuple[int, ...]:
    """Chunk sizes for one axis: ``chunk`` each from the origin, a last remainder merged into
    its neighbour when smaller than ``minimum`` (Dask's overlap needs chunks >= its depth), so
    every chunk boundary stays a multiple of ``chunk``."""
    if size < 1 or chunk < 1:
        raise ValueError(f"size and chunk must be positive, got {size} and {chunk}.")
    sizes = [chunk] * (size // chunk)
    rest = size % chunk
    if rest:
        if sizes and rest < minimum:
            sizes[-1] += rest
        else:
            sizes.append(rest)
    return tuple(sizes)


def axis_pieces(chunks: tuple[int, ...], start: int, stop: int) -> list[tuple[int, slice, bool]]:
    """Input chunks along one axis that overlap ``start:stop``: (index, slice in the chunk,
    whether the whole chunk is used)."""
    offsets = np.concatenate([[0], np.cumsum(chunks)])
    out = []
    for k in range(len(chunks)):
        lo, hi = max(start, int(offsets[k])), min(stop, int(offsets[k + 1]))
        if lo < hi:
            whole = lo == offsets[k] and hi == offsets[k + 1]
            out.append((k, slice(lo - int(offsets[k]), hi - int(offsets[k])), whole))
    return out


def _around(cuts: list[int], size: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Windows around the cores between successive ``cuts``: start and stop (core +- ``halo``,
    within ``size``) and how much context to cut off before and after."""
    out = []
    for core0, core1 in itertools.pairwise(cuts):
        lo, hi = max(0, core0 - halo), min(size, core1 + halo)
        out.append((lo, hi, core0 - lo, hi - core1))
    return out


def block_windows(size: int, blocks: tuple[int, ...], halo: int) -> list[tuple[int, int, int, int]]:
    """Per output block along one axis: window start and stop (block +- halo, within the
    scene) and how much context to cut off before and after."""
    return _around([0, *itertools.accumulate(blocks)], size, halo)


def trailing_windows(
    size: int, blocks: tuple[int, ...], halo: int
) -> list[tuple[int, int, int, int]]:
    """Windows along one axis whose cores are the blocks moved ``halo`` px on (the first one
    longer, the last shorter; a last core of ``halo`` px or less joins the one before), as
    :func:`block_windows` gives them. With its context a window then lies in its own block and
    the next one (where blocks are longer than ``2 * halo``), so a block is let go once the
    window that starts in it has run, not the one after."""
    inner = [edge + halo for edge in itertools.accumulate(blocks[:-1]) if edge + halo < size]
    return _around([0, *inner, size], size, halo)


def pad_to_multiple(size: int, multiple: int) -> int:
    """Pixels to add after ``size`` to reach the next multiple of ``multiple``."""
    return -size % multiple
