"""The offline demo run: generate (or reuse) the demo catalog, map it, score it against the truth.

It sits on top of the pipeline (it calls :func:`~arctic_rts.pipeline.map_region` like any user);
nothing in the library below it imports this module.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import geopandas as gpd

from arctic_rts.config import MapConfig, VectorizeConfig
from arctic_rts.demo.baseline import score_against_truth, single_band_baseline
from arctic_rts.demo.generate import generate_demo
from arctic_rts.pipeline import map_region

#: Where ``--stac demo`` and ``arctic-rts demo`` keep the generated demo catalog (reused between
#: runs).
DEFAULT_DEMO_ROOT = Path(".demo")


def run_demo(
    *,
    root: Path = DEFAULT_DEMO_ROOT,
    out: Path = Path("demo-out/rts_demo.gpkg"),
    weights: str | Path | None = None,
    workers: int = 2,
    threshold: float | None = None,
    progress: bool = True,
    **catalog: Any,
) -> str:
    """The offline demo: generate (or reuse) the demo catalog, map it, score it against the truth.

    Args:
        root: Folder of the demo catalog (reused when it already holds the same catalog).
        out: The GeoPackage to write (replaced).
        weights: Model to map with; None for the bundled demo weights.
        workers: Local Dask worker processes.
        threshold: Probability threshold of the polygons; None takes the model card's.
        progress: Show progress bars.
        **catalog: ``seed``, ``years``, ``size_px`` for :func:`~arctic_rts.demo.generate_demo`
            (another seed gives an independent scene set: a validation of the weights).

    Returns the printed report: the GeoPackage, the scenes used, the polygon count, and the
    object-level precision/recall of the model and of the best single-band threshold.
    """
    from arctic_rts.cluster import connect
    from arctic_rts.config import ClusterConfig
    from arctic_rts.load import load_scenes
    from arctic_rts.model.domain import demo_weights
    from arctic_rts.model.weights import resolve_weights

    t0 = time.perf_counter()
    # Every input is checked before any scene is generated or folder made.
    config = MapConfig(
        vectorize=VectorizeConfig(threshold=threshold), cluster=ClusterConfig(n_workers=workers)
    )
    model = resolve_weights(weights if weights is not None else demo_weights())
    demo = generate_demo(root, **catalog)
    year = demo.years[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    truth = gpd.read_file(demo.truth_path)
    truth = truth[truth["year"] == year]
    with connect(config.cluster) as client:
        result = map_region(
            demo.bbox,
            year,
            stac=demo.items_dir,
            weights=model,
            out=out,
            config=config,
            overwrite=True,
            client=client,
            progress=progress,
        )
        scenes = load_scenes(result.items, list(model.bands), config.load)
        model_scores = score_against_truth(result.polygons, truth, scenes)
        baseline = single_band_baseline(scenes, truth, config.vectorize, config.inventory.crs)
    lines = [
        f"arctic-rts demo: generated scenes (seed {demo.seed}), embedded STAC API, model "
        f"{model.name or '?'} ({model.method or '?'})",
        result.summary(),
        "",
        f"ground truth : {model_scores.n_true} slumps visible in the selected scenes",
        f"model        : precision {model_scores.precision:.3f}  recall "
        f"{model_scores.recall:.3f}  ({model_scores.n_matched} matched of "
        f"{model_scores.n_pred} predicted, IoU >= 0.5)",
        f"baseline     : precision {baseline.scores.precision:.3f}  recall "
        f"{baseline.scores.recall:.3f}  (best single band: {baseline.describe()})",
        f"time         : {time.perf_counter() - t0:.1f} s",
    ]
    return "\n".join(lines)
