"""Object matching and pixel metrics: the one definition used by evaluate, demo and inventory."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from arctic_rts.metrics import match_objects, pixel_counts, pixel_scores


def _series(geoms: list, crs: str = "EPSG:32608") -> gpd.GeoSeries:
    return gpd.GeoSeries(geoms, crs=crs)


def test_match_objects_one_to_one_greedy_by_iou() -> None:
    truth = _series([box(0, 0, 100, 100), box(1000, 0, 1100, 100), box(5000, 0, 5100, 100)])
    pred = _series(
        [
            box(0, 0, 100, 90),  # IoU 0.9 with truth 0
            box(0, 0, 100, 70),  # IoU 0.7 with truth 0: loses, truth 0 is taken
            box(1000, 0, 1100, 40),  # IoU 0.4 with truth 1: below 0.5
            box(9000, 0, 9100, 100),  # no overlap
        ]
    )
    s = match_objects(pred, truth)
    assert (s.n_pred, s.n_true, s.n_matched) == (4, 3, 1)
    assert s.matches[0][:2] == (0, 0)
    assert s.matches[0][2] == pytest.approx(0.9)
    assert s.precision == pytest.approx(1 / 4)
    assert s.recall == pytest.approx(1 / 3)
    assert s.f1 == pytest.approx(2 / 7)
    # A lower threshold admits the 0.4 pair, never the second claim on truth 0.
    s = match_objects(pred, truth, min_iou=0.3)
    assert s.n_matched == 2
    assert {(a, b) for a, b, _ in s.matches} == {(0, 0), (2, 1)}


def test_match_objects_greedy_prefers_best_pair_over_first_pair() -> None:
    # pred 0 overlaps both truths; the best pair (pred 0, truth 1) must win, leaving truth 0
    # to pred 1.
    truth = _series([box(0, 0, 10, 10), box(2, 0, 12, 10)])
    pred = _series([box(2, 0, 12, 10.5), box(0, 0, 10, 9)])
    s = match_objects(pred, truth)
    assert s.n_matched == 2
    assert sorted((a, b) for a, b, _ in s.matches) == [(0, 1), (1, 0)]


def test_match_objects_reprojects_and_handles_empty() -> None:
    truth = _series([box(500000, 7700000, 500300, 7700300)])
    pred = truth.to_crs("EPSG:3413")
    s = match_objects(pred, truth)
    assert s.n_matched == 1 and s.matches[0][2] > 0.999
    empty = _series([])
    s = match_objects(empty, truth)
    assert (s.n_matched, s.recall) == (0, 0.0) and math.isnan(s.precision)
    s = match_objects(empty, empty)
    assert math.isnan(s.f1)
    with pytest.raises(ValueError, match="min_iou"):
        match_objects(pred, truth, min_iou=0)


def test_pixel_counts_and_scores() -> None:
    pred = np.array([[1, 1, 0], [0, 1, 0]])
    true = np.array([[1, 0, 0], [1, 1, 0]])
    assert pixel_counts(pred, true) == (2, 1, 1, 2)
    ignore = np.array([[0, 0, 0], [1, 0, 1]], dtype=bool)
    assert pixel_counts(pred, true, ignore) == (2, 1, 0, 1)
    s = pixel_scores(2, 1, 1, 2)
    assert s["iou"] == pytest.approx(0.5)
    assert s["iou_background"] == pytest.approx(0.5)
    assert s["miou"] == pytest.approx(0.5)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert math.isnan(pixel_scores(0, 0, 0, 5)["iou"])
    with pytest.raises(ValueError, match="shape"):
        pixel_counts(pred, true[:1])


def test_pixel_counts_summed_over_a_set_differ_from_mean_of_ious() -> None:
    # The paper sums counts over the set; a mean of per-image IoUs would give 0.75 here.
    a = pixel_counts(np.ones((1, 1)), np.ones((1, 1)))
    b = pixel_counts(np.array([[1, 1, 1, 0]]), np.array([[1, 0, 0, 0]]))
    total = tuple(x + y for x, y in zip(a, b, strict=True))
    assert pixel_scores(*total)["iou"] == pytest.approx(2 / 4)
