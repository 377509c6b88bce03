"""Scoring a map against ground truth, and the single-band threshold baseline it must beat.

The baseline is deliberately generous: for every band and both directions (> and <) it fits the
threshold that maximises pixel IoU *on the very scenes it is scored on*, then turns the mask into
polygons through the same vectorize/merge/match path as the model. A model is worth something
only clearly above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import xarray as xr
from rasterio.features import rasterize

from arctic_rts.config import VectorizeConfig
from arctic_rts.metrics import ObjectScores, match_objects

#: Candidate thresholds per band: these quantiles of the band's valid pixels.
QUANTILES = np.linspace(0.005, 0.995, 199)
#: A truth slump counts as visible when this share of it is valid (not cloud/snow/nodata) in at
#: least one scene; hidden slumps cannot be mapped by any method and are left out of the score.
MIN_VISIBLE_SHARE = 0.5


@dataclass(frozen=True)
class BaselineResult:
    """The best single-band threshold and its object-level scores."""

    band: str
    direction: str
    threshold: float
    pixel_iou: float
    scores: ObjectScores

    def describe(self) -> str:
        """One line: which band, which side, which threshold, which pixel IoU."""
        return f"{self.band} {self.direction} {self.threshold:.4f}, pixel IoU {self.pixel_iou:.3f}"


def _truth_raster(da: xr.DataArray, truth: gpd.GeoDataFrame) -> np.ndarray:
    """Truth polygon ids (1-based, 0 = background) burnt onto the scene's grid."""
    local = truth.to_crs(da.rio.crs)
    shapes = [(g, i + 1) for i, g in enumerate(local.geometry) if g is not None and not g.is_empty]
    out_shape = (da.sizes["y"], da.sizes["x"])
    if not shapes:
        return np.zeros(out_shape, dtype=np.int32)
    return rasterize(shapes, out_shape=out_shape, transform=da.rio.transform(), dtype="int32")


def visible_truth(truth: gpd.GeoDataFrame, scenes: list[xr.DataArray]) -> gpd.GeoDataFrame:
    """The truth slumps that at least one scene shows mostly unmasked."""
    truth = truth.reset_index(drop=True)
    best = np.zeros(len(truth))
    for da in scenes:
        ids = _truth_raster(da, truth)
        valid = np.isfinite(np.asarray(da.isel(band=0)))
        total = np.bincount(ids.ravel(), minlength=len(truth) + 1)[1:]
        seen = np.bincount(ids[valid].ravel(), minlength=len(truth) + 1)[1:]
        share = np.divide(seen, total, out=np.zeros(len(truth)), where=total > 0)
        best = np.maximum(best, share)
    return truth[best >= MIN_VISIBLE_SHARE]


def score_against_truth(
    polygons: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, scenes: list[xr.DataArray]
) -> ObjectScores:
    """Object-level precision/recall of ``polygons`` against the truth visible in ``scenes``."""
    target = visible_truth(truth, scenes).to_crs(polygons.crs)
    return match_objects(polygons.geometry, target.geometry)


def _best_threshold(values: np.ndarray, labels: np.ndarray) -> tuple[float, str, float]:
    """Threshold and direction maximising pixel IoU of ``values`` against boolean ``labels``."""
    pos = np.sort(values[labels])
    neg = np.sort(values[~labels])
    cands = np.unique(np.quantile(values, QUANTILES))
    pos_le = np.searchsorted(pos, cands, side="right")  # positives <= t
    neg_le = np.searchsorted(neg, cands, side="right")
    best = (0.0, ">", float(cands[0]))
    for direction, tp, fp in (
        (">", pos.size - pos_le, neg.size - neg_le),
        ("<=", pos_le, neg_le),
    ):
        ious = tp / np.maximum(pos.size + fp, 1)  # tp / (tp + fp + fn) with fn = pos - tp
        i = int(np.argmax(ious))
        if ious[i] > best[0]:
            best = (float(ious[i]), direction, float(cands[i]))
    return best[2], best[1], best[0]


def single_band_baseline(
    scenes: list[xr.DataArray],
    truth: gpd.GeoDataFrame,
    config: VectorizeConfig | None = None,
    crs: str = "EPSG:3413",
) -> BaselineResult:
    """Fit the best single-band threshold on ``scenes`` and score its polygons like the model's."""
    from arctic_rts.merge import merge_polygons
    from arctic_rts.vectorize import vectorize

    config = config or VectorizeConfig()
    arrays = [da.compute() for da in scenes]
    labels = [_truth_raster(da, truth) > 0 for da in arrays]
    valid = [np.isfinite(np.asarray(da)).all(axis=0) for da in arrays]
    best: tuple[float, str, str, float] = (-1.0, "", ">", 0.0)
    for band in [str(b) for b in arrays[0].band.values]:
        values = np.concatenate(
            [np.asarray(da.sel(band=band))[v] for da, v in zip(arrays, valid, strict=True)]
        )
        lab = np.concatenate([lb[v] for lb, v in zip(labels, valid, strict=True)])
        threshold, direction, iou = _best_threshold(values, lab)
        if iou > best[0]:
            best = (iou, band, direction, threshold)
    iou, band, direction, threshold = best
    frames = []
    for da, v in zip(arrays, valid, strict=True):
        x = da.sel(band=band)
        hit = (x > threshold) if direction == ">" else (x <= threshold)
        prob = hit.astype("float32").where(v)
        prob.attrs = dict(da.attrs)
        prob = prob.rio.write_crs(da.rio.crs)
        attrs: dict[str, Any] = {"scene_id": da.attrs.get("item_id", "")}
        frames.append(vectorize(prob, threshold=0.5, config=config, attrs=attrs))
    merged = merge_polygons(frames, crs=crs)
    scores = score_against_truth(merged, truth, arrays)
    return BaselineResult(band, direction, threshold, iou, scores)
