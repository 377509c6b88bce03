"""The one definition of the toolkit's accuracy metrics, object and pixel level.

Object level (demo, ``arctic-rts evaluate``, inventory checks): predicted and true polygons are
matched one-to-one, greedily by descending IoU; a pair counts when IoU >= ``min_iou`` (0.5);
precision = matched / predicted, recall = matched / true, F1 their harmonic mean.

Pixel level (the paper's protocol): TP/FP/FN/TN are *summed over a whole evaluation set* by the
caller with :func:`pixel_counts`, then turned into scores once with :func:`pixel_scores`;
averaging per-image IoUs instead gives a different, usually higher, number.

A ratio whose denominator is zero (no predictions, no truth) is NaN: undefined, not 0 or 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import shapely


@dataclass(frozen=True)
class ObjectScores:
    """Result of :func:`match_objects`."""

    #: matched / predicted (NaN without predictions).
    precision: float
    #: matched / true (NaN without true objects).
    recall: float
    #: 2 * matched / (predicted + true) (NaN when both are empty).
    f1: float
    #: Number of predicted objects.
    n_pred: int
    #: Number of true objects.
    n_true: int
    #: Number of one-to-one matches with IoU >= min_iou.
    n_matched: int
    #: ``(pred_position, true_position, iou)`` per match, by descending IoU; positions are
    #: 0-based row positions in the inputs (not index labels).
    matches: list[tuple[int, int, float]] = field(default_factory=list)


def match_objects(
    pred: gpd.GeoSeries | gpd.GeoDataFrame,
    truth: gpd.GeoSeries | gpd.GeoDataFrame,
    min_iou: float = 0.5,
) -> ObjectScores:
    """Match predicted and true polygons one-to-one, greedily by descending IoU.

    Candidate pairs come from an STR-tree (intersecting bounding boxes, then geometries); each
    pair's IoU is exact; pairs are taken from the highest IoU down, each object at most once.

    Args:
        pred: Predicted polygons (a GeoSeries, or a GeoDataFrame whose geometry is used).
        truth: True polygons; when both carry a CRS and they differ, ``pred`` is reprojected to
            ``truth``'s. Use a projected CRS: IoU in degrees is distorted.
        min_iou: Smallest IoU that counts as a match, in (0, 1].

    Returns:
        The scores and the list of matches.

    Raises:
        ValueError: ``min_iou`` outside (0, 1], or exactly one input has a CRS.
    """
    if not 0 < min_iou <= 1:
        raise ValueError(f"min_iou must lie in (0, 1], got {min_iou}.")
    p = _geoseries(pred)
    t = _geoseries(truth)
    if (p.crs is None) != (t.crs is None) and len(p) and len(t):
        raise ValueError(
            "one of pred/truth has a CRS and the other has none; set_crs on the one without."
        )
    if p.crs is not None and t.crs is not None and p.crs != t.crs:
        p = p.to_crs(t.crs)
    pg = np.asarray(shapely.make_valid(np.asarray(p.values, dtype=object)), dtype=object)
    tg = np.asarray(shapely.make_valid(np.asarray(t.values, dtype=object)), dtype=object)

    matches: list[tuple[int, int, float]] = []
    if len(pg) and len(tg):
        tree = shapely.STRtree(tg)
        pi, ti = tree.query(pg, predicate="intersects")
        if len(pi):
            inter = shapely.area(shapely.intersection(pg[pi], tg[ti]))
            union = shapely.area(pg[pi]) + shapely.area(tg[ti]) - inter
            with np.errstate(invalid="ignore", divide="ignore"):
                iou = np.where(union > 0, inter / union, 0.0)
            # Stable sort, ties broken by position, so the result is deterministic.
            order = np.lexsort((ti, pi, -iou))
            used_p: set[int] = set()
            used_t: set[int] = set()
            for k in order:
                if iou[k] < min_iou:
                    break
                a, b = int(pi[k]), int(ti[k])
                if a in used_p or b in used_t:
                    continue
                used_p.add(a)
                used_t.add(b)
                matches.append((a, b, float(iou[k])))

    n_pred, n_true, n_matched = len(pg), len(tg), len(matches)
    return ObjectScores(
        precision=_ratio(n_matched, n_pred),
        recall=_ratio(n_matched, n_true),
        f1=_ratio(2 * n_matched, n_pred + n_true),
        n_pred=n_pred,
        n_true=n_true,
        n_matched=n_matched,
        matches=matches,
    )


def pixel_counts(
    pred_mask: Any, true_mask: Any, ignore: Any | None = None
) -> tuple[int, int, int, int]:
    """Count TP, FP, FN, TN of the slump class in one image (or one batch).

    Args:
        pred_mask: Predicted slump mask, boolean or 0/1 (array-like: numpy, torch CPU tensor...).
        true_mask: True slump mask of the same shape.
        ignore: Optional mask of the same shape; True pixels are left out of every count
            (outside the image footprint, unlabelled, NaN input).

    Returns:
        ``(tp, fp, fn, tn)`` as Python ints; sum them over the evaluation set before scoring.

    Raises:
        ValueError: Shapes differ.
    """
    p = np.asarray(pred_mask).astype(bool)
    t = np.asarray(true_mask).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"pred_mask shape {p.shape} differs from true_mask shape {t.shape}.")
    keep = np.ones_like(p)
    if ignore is not None:
        ig = np.asarray(ignore).astype(bool)
        if ig.shape != p.shape:
            raise ValueError(f"ignore shape {ig.shape} differs from the masks' shape {p.shape}.")
        keep = ~ig
    tp = int(np.count_nonzero(p & t & keep))
    fp = int(np.count_nonzero(p & ~t & keep))
    fn = int(np.count_nonzero(~p & t & keep))
    tn = int(np.count_nonzero(~p & ~t & keep))
    return tp, fp, fn, tn


def pixel_scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Scores from summed pixel counts.

    Returns:
        ``iou`` (slump class), ``iou_background``, ``miou`` (mean of the two), ``precision``,
        ``recall``, ``f1``; NaN where a denominator is zero.
    """
    if min(tp, fp, fn, tn) < 0:
        raise ValueError(f"pixel counts must be >= 0, got tp={tp} fp={fp} fn={fn} tn={tn}.")
    iou = _ratio(tp, tp + fp + fn)
    iou_bg = _ratio(tn, tn + fp + fn)
    return {
        "iou": iou,
        "iou_background": iou_bg,
        "miou": (iou + iou_bg) / 2,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den else math.nan


def _geoseries(obj: gpd.GeoSeries | gpd.GeoDataFrame) -> gpd.GeoSeries:
    if isinstance(obj, gpd.GeoDataFrame):
        return obj.geometry
    if isinstance(obj, gpd.GeoSeries):
        return obj
    raise ValueError(f"expected a GeoSeries or GeoDataFrame, got {type(obj).__name__}.")
