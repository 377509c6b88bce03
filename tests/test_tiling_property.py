"""Property-based tests (hypothesis) of the tile windows and the blend weights."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from arctic_rts.tiling import FLOOR, Blender, blend_weights, tile_windows, trailing_windows


@st.composite
def _tiling(draw: st.DrawFn) -> tuple[tuple[int, int], int, int, int]:
    halo = draw(st.integers(0, 24))
    ramp = draw(st.integers(0, 16))
    window = draw(st.integers(2 * halo + ramp + 1, 2 * halo + ramp + 64))
    shape = (draw(st.integers(1, 160)), draw(st.integers(1, 160)))
    return shape, window, halo, ramp


@settings(max_examples=80, deadline=None)
@given(_tiling())
def test_windows_cover_the_array_on_the_grid_with_reliable_interiors(
    case: tuple[tuple[int, int], int, int, int],
) -> None:
    (height, width), window, halo, ramp = case
    stride = window - 2 * halo - ramp
    windows = tile_windows((height, width), window, halo, ramp)
    covered = np.zeros((height, width), dtype=int)
    reliable = np.zeros((height, width), dtype=bool)
    for w in windows:
        assert 0 <= w.y0 < w.y1 <= height and 0 <= w.x0 < w.x1 <= width
        assert w.y1 - w.y0 <= window and w.x1 - w.x0 <= window
        assert w.y0 % stride == 0 and w.x0 % stride == 0  # origins stay on the grid
        assert w.edges == (w.y0 == 0, w.y1 == height, w.x0 == 0, w.x1 == width)
        covered[w.slices] += 1
        # the reliable part: beyond the halo on every side that is not the array's edge
        top = w.y0 if w.edges[0] else w.y0 + halo
        bottom = w.y1 if w.edges[1] else w.y1 - halo
        left = w.x0 if w.edges[2] else w.x0 + halo
        right = w.x1 if w.edges[3] else w.x1 - halo
        reliable[top:bottom, left:right] = True
    assert (covered > 0).all()
    assert reliable.all()  # every pixel lies beyond the halo of some window


@settings(max_examples=80, deadline=None)
@given(_tiling(), st.floats(1e-9, 1.0))
def test_weights_are_positive_bounded_and_blend_a_constant_exactly(
    case: tuple[tuple[int, int], int, int, int], floor: float
) -> None:
    shape, window, halo, ramp = case
    blender = Blender((2, *shape), halo, ramp, floor)
    for w in tile_windows(shape, window, halo, ramp):
        weights = blend_weights(w, halo, ramp, floor)
        assert weights.shape == w.shape
        assert (weights > 0).all() and (weights <= 1).all()
        assert weights.min() >= floor * floor * (1 - 1e-12)
        blender.add(w, np.stack([np.full(w.shape, 3.5), np.full(w.shape, -1.0)]))
    out = blender.result(np.float64)
    np.testing.assert_allclose(out[0], 3.5, rtol=1e-12)
    np.testing.assert_allclose(out[1], -1.0, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(_tiling())
def test_without_ramp_tiles_paste_a_whole_array_back(
    case: tuple[tuple[int, int], int, int, int],
) -> None:
    """With ramp 0 the cores partition the array: tiling an array and blending the windows'
    own values gives the array back up to the floor's weight."""
    shape, window, halo, _ = case
    rng = np.random.default_rng(0)
    values = rng.random(shape)
    blender = Blender(shape, halo, 0, FLOOR)
    for w in tile_windows(shape, window, halo, 0):
        blender.add(w, values[w.slices])
    np.testing.assert_allclose(blender.result(np.float64), values, rtol=0, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=8), st.integers(0, 6))
def test_trailing_windows_tile_the_axis_and_reach_only_the_next_block(
    blocks: list[int], halo: int
) -> None:
    """The cores tile the axis in order; each window is its core plus ``halo`` px of context
    on each side (less at the axis' ends); and where blocks are longer than ``2 * halo`` a
    window reaches no block before the one it starts in, and none after the next."""
    size = sum(blocks)
    windows = trailing_windows(size, tuple(blocks), halo)
    edges = np.cumsum([0, *blocks])
    core_end = 0
    for lo, hi, before, after in windows:
        core0, core1 = lo + before, hi - after
        assert core0 == core_end < core1  # in order, no gap, not empty
        assert (before, after) == (min(halo, core0), min(halo, size - core1))
        core_end = core1
        if min(blocks) > 2 * halo:
            first = np.searchsorted(edges, lo, side="right") - 1  # the block the window starts in
            last = np.searchsorted(edges, hi, side="left") - 1  # the block its last pixel is in
            assert last - first <= 1
    assert core_end == size
