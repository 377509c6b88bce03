"""Evaluation of trained weights on image/mask folders: the paper's pixel metrics plus objects.

Pixel level (the paper's protocol): TP/FP/FN/TN summed over the whole set, then IoU, mIoU,
precision, recall and F1 once (:mod:`arctic_rts.metrics`). Object level: per image, predicted
and true slumps become polygons (:func:`arctic_rts.vectorize.vectorize`) and are matched
one-to-one at polygon IoU >= 0.5 (:func:`arctic_rts.metrics.match_objects`); matched, predicted
and true counts are summed over the set before precision = matched / predicted and
recall = matched / true. Images without georeference (PNG/JPEG) are measured on a stand-in metric
grid of 1 m pixels, which changes no IoU.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from affine import Affine

from arctic_rts.config import VectorizeConfig
from arctic_rts.errors import DatasetError
from arctic_rts.metrics import match_objects, pixel_counts, pixel_scores

#: Stand-in CRS for images without georeference (metric, so areas and IoUs are planar).
_PIXEL_CRS = "EPSG:3413"


def predict_array(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Slump probability ``(H, W)`` for one raw-reflectance image ``(C, H, W)`` (NaN allowed).

    The image is padded to a multiple of 16 (the UNet's pooling grid) with NaN, which the model
    treats as the band mean, and the output is cropped back.
    """
    _, h, w = image.shape
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
    ph, pw = (-h) % 16, (-w) % 16
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=float("nan"))
    with torch.no_grad():
        prob = torch.sigmoid(model(x).float())[0, 0, :h, :w]
    return prob.cpu().numpy()


def score_dataset(
    model: Callable[[torch.Tensor], torch.Tensor],
    dataset: Any,
    *,
    device: torch.device | str = "cpu",
    threshold: float = 0.5,
) -> dict[str, float]:
    """Pixel scores of ``model`` over a dataset of samples (image, mask, valid), counts summed."""
    tp = fp = fn = tn = 0
    for i in range(len(dataset)):
        s = dataset[i]
        prob = predict_array(model, s["image"], device)
        ignore = s["valid"][0] <= 0
        a, b, c, d = pixel_counts(prob >= threshold, s["mask"][0] > 0.5, ignore=ignore)
        tp, fp, fn, tn = tp + a, fp + b, fn + c, tn + d
    return {**pixel_scores(tp, fp, fn, tn), "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def as_dataarray(values: np.ndarray, geo: dict[str, Any]) -> Any:
    """A georeferenced (y, x) DataArray for ``vectorize`` (stand-in grid without georeference)."""
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    crs, transform = geo.get("crs"), geo.get("transform")
    if crs is None or transform is None:
        crs, transform = _PIXEL_CRS, Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    h, w = values.shape
    xs = transform.c + transform.a * (np.arange(w) + 0.5)
    ys = transform.f + transform.e * (np.arange(h) + 0.5)
    da = xr.DataArray(values.astype(np.float32), dims=("y", "x"), coords={"y": ys, "x": xs})
    return da.rio.write_crs(crs).rio.write_transform(transform)


def evaluate(
    weights: str | Path,
    images_dir: str | Path,
    masks_dir: str | Path,
    *,
    threshold: float | None = None,
    min_iou: float = 0.5,
    min_area_m2: float | None = None,
    opening_px: int | None = None,
    hysteresis_low: float | None = None,
    device: str = "auto",
    json_out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate weights on masks paired by file name with images found under ``images_dir``.

    By default the scores are those a user of ``map`` gets: the card's threshold, minimum
    object area, opening and hysteresis.

    Args:
        weights: A ``.safetensors`` file with its card.
        images_dir: Folder searched recursively for the images (bands as the card names them).
        masks_dir: Masks (0/1 or 0/255; GeoTIFF, PNG or JPEG) named like their images.
        threshold: Probability cut; None takes the card's.
        min_iou: Polygon IoU at which a predicted slump counts as found.
        min_area_m2: Predicted and true objects smaller than this are dropped (0 keeps all);
            None takes the card's ``min_area_m2`` (0 where the card has none).
        opening_px: Opening radius in pixels (0: none); None takes the card's.
        hysteresis_low: Hysteresis lower cut (0: off); None takes the card's.
        device: "auto", "cpu" or "cuda[:N]".
        json_out: Also write the result there as JSON.

    Returns:
        ``{"pixel": {iou, miou, precision, recall, f1, tp, fp, fn, tn}, "object": {precision,
        recall, f1, n_pred, n_true, n_matched}, "n_images", "weights", "threshold",
        "min_area_m2", "opening_px", "hysteresis_low", "images": [per-image counts]}``.

    Raises:
        WeightsError: unreadable weights, or image bands that differ from the card's.
        DatasetError: missing folders, no pairs, or an image/mask size mismatch.
    """
    from arctic_rts.model.weights import check_bands, load_model, resolve_device
    from arctic_rts.train.data import FolderDataset

    dev = resolve_device(device)
    model, card = load_model(weights, device=dev)
    data = FolderDataset(images_dir, masks_dir)
    bands = list(card["bands"])
    if data.bands is not None:
        check_bands(card, list(data.bands))
    elif data[0]["image"].shape[0] != len(bands):
        raise DatasetError(
            f"the images have {data[0]['image'].shape[0]} channels but the weights expect "
            f"{len(bands)} bands ({', '.join(bands)})."
        )
    cut = float(threshold if threshold is not None else card.get("threshold", 0.5))
    area = float(min_area_m2 if min_area_m2 is not None else card.get("min_area_m2", 0.0))
    opening = int(opening_px if opening_px is not None else card.get("opening_px") or 0)
    low = float(hysteresis_low if hysteresis_low is not None else card.get("hysteresis_low") or 0)
    preds = predict_dataset(model, data, dev)
    scores = score_predictions(
        preds, cut, area, opening_px=opening, hysteresis_low=low, min_iou=min_iou
    )
    result = {"weights": str(weights), **scores}
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def predict_dataset(
    model: Callable[[torch.Tensor], torch.Tensor], data: Any, device: torch.device | str = "cpu"
) -> list[dict[str, Any]]:
    """Run ``model`` once over a labelled :class:`~arctic_rts.train.data.FolderDataset`.

    Returns:
        Per image: ``name``, ``prob`` (H, W), ``truth`` and ``invalid`` (boolean), ``geo``.
    """
    preds = []
    for i, name in enumerate(data.names):
        s = data[i]
        preds.append(
            {
                "name": name,
                "prob": predict_array(model, s["image"], device),
                "truth": s["mask"][0] > 0.5,
                "invalid": s["valid"][0] <= 0,
                "geo": data.geo[i],
            }
        )
    return preds


def score_predictions(
    preds: Sequence[Mapping[str, Any]],
    threshold: float,
    min_area_m2: float = 0.0,
    *,
    opening_px: int = 0,
    hysteresis_low: float = 0.0,
    min_iou: float = 0.5,
) -> dict[str, Any]:
    """Pixel and object scores of :func:`predict_dataset` output at one post-processing.

    The prediction is what ``map`` makes of it: thresholded, grown by hysteresis, opened, and
    objects smaller than ``min_area_m2`` dropped; pixel scores compare the kept objects' pixels
    with the whole truth. For object scores, true objects under ``min_area_m2`` are dropped too
    (a minimum mapping unit). Counts are summed over all images before any ratio.
    """
    from arctic_rts.vectorize import object_mask, vectorize

    vconf = VectorizeConfig(
        min_area_m2=min_area_m2, opening_px=opening_px, hysteresis_low=hysteresis_low
    )
    counts = np.zeros(4, dtype=np.int64)
    n_pred = n_true = n_matched = 0
    per_image = []
    for p in preds:
        prob_map = np.where(p["invalid"], np.nan, p["prob"])
        kept = object_mask(prob_map, threshold, vconf, _pixel_area(p["geo"]))
        c = np.array(pixel_counts(kept, p["truth"], ignore=p["invalid"]))
        counts += c
        pred_poly = vectorize(as_dataarray(prob_map, p["geo"]), threshold=threshold, config=vconf)
        truth = as_dataarray(p["truth"].astype(np.float32), p["geo"])
        true_poly = vectorize(truth, threshold=0.5, config=VectorizeConfig(min_area_m2=min_area_m2))
        obj = match_objects(pred_poly.geometry, true_poly.geometry, min_iou=min_iou)
        n_pred, n_true = n_pred + obj.n_pred, n_true + obj.n_true
        n_matched += obj.n_matched
        per_image.append(
            {
                "image": p["name"],
                **dict(zip(("tp", "fp", "fn", "tn"), (int(v) for v in c), strict=True)),
                "n_pred": obj.n_pred,
                "n_true": obj.n_true,
                "n_matched": obj.n_matched,
            }
        )

    def ratio(a: int, b: int) -> float:
        return a / b if b else math.nan

    tp, fp, fn, tn = (int(v) for v in counts)
    return {
        "threshold": threshold,
        "min_area_m2": min_area_m2,
        "opening_px": opening_px,
        "hysteresis_low": hysteresis_low,
        "n_images": len(preds),
        "pixel": {**pixel_scores(tp, fp, fn, tn), "tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "object": {
            "precision": ratio(n_matched, n_pred),
            "recall": ratio(n_matched, n_true),
            "f1": ratio(2 * n_matched, n_pred + n_true),
            "n_pred": n_pred,
            "n_true": n_true,
            "n_matched": n_matched,
            "min_iou": min_iou,
        },
        "images": per_image,
    }


def _pixel_area(geo: Mapping[str, Any]) -> float:
    """Area of one pixel in the image's CRS units (1 on the stand-in grid)."""
    transform = geo.get("transform")
    if geo.get("crs") is None or transform is None:
        return 1.0
    return float(abs(transform.a * transform.e - transform.b * transform.d))


def _counts(pred: Mapping[str, Any], threshold: float) -> np.ndarray:
    return np.array(pixel_counts(pred["prob"] >= threshold, pred["truth"], ignore=pred["invalid"]))


def pixel_totals(preds: Sequence[Mapping[str, Any]], threshold: float) -> dict[str, Any]:
    """Pixel scores of :func:`predict_dataset` output at ``threshold``, counts summed first
    (no polygons: what choosing a threshold by pixel IoU needs)."""
    counts = sum((_counts(p, threshold) for p in preds), np.zeros(4, dtype=np.int64))
    tp, fp, fn, tn = (int(v) for v in counts)
    return {**pixel_scores(tp, fp, fn, tn), "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def format_table(result: dict[str, Any]) -> str:
    """The scores of :func:`evaluate` as a small fixed-width text table."""
    pix, obj = result["pixel"], result["object"]
    rows = [
        ("pixel IoU", pix["iou"]),
        ("pixel mIoU", pix["miou"]),
        ("pixel precision", pix["precision"]),
        ("pixel recall", pix["recall"]),
        ("pixel F1", pix["f1"]),
        ("object precision", obj["precision"]),
        ("object recall", obj["recall"]),
        ("object F1", obj["f1"]),
    ]
    lines = [f"{'metric':<18} {'value':>8}", f"{'-' * 18} {'-' * 8}"]
    lines += [f"{name:<18} {value:>8.3f}" for name, value in rows]
    lines.append(
        f"{result['n_images']} images; objects: {obj['n_matched']} matched of "
        f"{obj['n_pred']} predicted, {obj['n_true']} true (IoU >= {obj['min_iou']})"
    )
    return "\n".join(lines)
