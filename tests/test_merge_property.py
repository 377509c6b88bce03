"""The vectorised merge against a plain one-slump-at-a-time reference, on random views.

The reference is the straightforward form of the merge rule (one pandas group per slump), as
the merge was written before it was vectorised; both must give identical rows.
"""

from __future__ import annotations

import math
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, box

from arctic_rts.merge import _column, _merge_views, overlap_groups, overlap_labels
from arctic_rts.vectorize import polygonal

CRS = "EPSG:3413"


def _joined(frame: pd.DataFrame, name: str) -> str:
    if name not in frame.columns:
        return ""
    return ",".join(sorted({str(v) for v in frame[name] if v is not None and v == v}))


def _reference_row(views: pd.DataFrame) -> dict[str, Any]:
    complete = ~_column(views, "touches_invalid", False).astype(bool).to_numpy()
    chosen = views[complete] if complete.any() else views
    weights = _column(chosen, "n_pixels", 1).astype(float).to_numpy()
    probs = _column(chosen, "mean_prob", math.nan).astype(float).to_numpy()
    per_scene = (
        pd.DataFrame(
            {
                "scene": _column(views, "scene_id", "").astype(str).to_numpy(),
                "p": _column(views, "mean_prob", math.nan).astype(float).to_numpy(),
                "w": _column(views, "n_pixels", 1).astype(float).to_numpy(),
                "complete": complete,
            }
        )
        .assign(pw=lambda d: d.p * d.w)
        .groupby("scene", sort=True)
        .agg(pw=("pw", "sum"), w=("w", "sum"), complete=("complete", "any"))
    )
    geom = polygonal(shapely.union_all(np.asarray(chosen.geometry.values)))
    return {
        "geometry": geom if isinstance(geom, MultiPolygon) else MultiPolygon([geom]),
        "year": int(_column(views, "year", -1).iloc[0]),
        "mean_prob": float(np.average(probs, weights=weights)) if weights.sum() else math.nan,
        "max_prob": float(_column(views, "max_prob", math.nan).astype(float).max()),
        "n_scenes": len(per_scene),
        "n_scenes_complete": int(per_scene["complete"].sum()),
        "touches_invalid": bool(not complete.any()),
        "scene_ids": ",".join(per_scene.index),
        "scene_mean_probs": ",".join(f"{v:.3f}" for v in per_scene.pw / per_scene.w),
        "mgrs_tiles": _joined(views, "mgrs_tile"),
        "dates": _joined(views, "date"),
        "model": _joined(views, "model"),
        "weights_sha256": _joined(views, "weights_sha256"),
        "run_id": _joined(views, "run_id"),
    }


def _same(a: Any, b: Any) -> bool:
    a = a.item() if isinstance(a, np.generic) else a
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return bool(a == b)


_view = st.fixed_dictionaries(
    {
        "x": st.integers(0, 30),
        "y": st.integers(0, 30),
        "w": st.integers(1, 12),
        "h": st.integers(1, 12),
        "touches_invalid": st.booleans(),
        "n_pixels": st.integers(0, 400),
        "mean_prob": st.one_of(st.floats(0.0, 1.0), st.just(math.nan)),
        "max_prob": st.one_of(st.floats(0.0, 1.0), st.just(math.nan)),
        "scene_id": st.sampled_from(["S2A_1", "S2B_2", "S2A_3"]),
        "year": st.sampled_from([2020, 2021]),
        "mgrs_tile": st.sampled_from(["08WLB", "08WMB", None]),
        "date": st.sampled_from(["2021-07-01", "2021-08-02", None]),
        "model": st.just("m"),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_view, min_size=1, max_size=30), st.sampled_from([0.5, 0.01, 1.0]))
def test_vectorised_merge_equals_the_reference(views: list[dict[str, Any]], overlap: float) -> None:
    geoms = [
        box(v["x"] * 10, v["y"] * 10, (v["x"] + v["w"]) * 10, (v["y"] + v["h"]) * 10) for v in views
    ]
    frame = gpd.GeoDataFrame(
        [{k: v for k, v in view.items() if k not in "xywh"} for view in views],
        geometry=geoms,
        crs=CRS,
    )
    years = frame["year"].to_numpy()
    cut = frame["touches_invalid"].to_numpy()
    arr = np.asarray(frame.geometry.values)
    label = overlap_labels(arr, years, True, overlap, cut)
    groups = overlap_groups(arr, years, True, overlap, cut)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(frame)))
    got = _merge_views(frame, label, CRS)
    expected = [_reference_row(frame.iloc[idx]) for idx in groups]
    assert len(got) == len(expected) == int(label.max()) + 1
    for i, row in enumerate(expected):
        assert shapely.equals_exact(got.geometry.iloc[i], row["geometry"], 0), i
        for key, value in row.items():
            if key != "geometry":
                assert _same(
                    got[key].iloc[i].item()
                    if hasattr(got[key].iloc[i], "item")
                    else got[key].iloc[i],
                    value,
                ), (i, key)


def test_views_without_optional_columns() -> None:
    frame = gpd.GeoDataFrame(geometry=[box(0, 0, 10, 10), box(2, 0, 12, 10)], crs=CRS)
    label = overlap_labels(np.asarray(frame.geometry.values), np.zeros(2, int), True, 0.5)
    got = _merge_views(frame, label, CRS)
    row = _reference_row(frame)
    assert len(got) == 1
    for key, value in row.items():
        if key != "geometry":
            assert _same(
                got[key].iloc[0].item() if hasattr(got[key].iloc[0], "item") else got[key].iloc[0],
                value,
            ), key
    assert got.geometry.iloc[0].equals(row["geometry"])
