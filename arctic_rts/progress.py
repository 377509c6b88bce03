"""Progress inside the scenes of a map run, per stage, as log records.

Model tasks report their tiles as Dask worker events on :data:`PROGRESS_TOPIC`
(:func:`arctic_rts.predict.predict`'s ``progress``); :class:`StageProgress` counts them in the
client and logs each stage through the map run's logger, ``arctic_rts.pipeline``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger("arctic_rts.pipeline")

#: The Dask event topic on which model tasks report their tiles (one topic, so that a
#: long-lived scheduler keeps one bounded event log for it, not one per run).
PROGRESS_TOPIC = "arctic-rts-progress"


class StageProgress:
    """Progress inside the scenes of a run, per stage, as log records (``arctic_rts.pipeline``).

    ``predict``: model tiles done of the scene's total, at every quarter (every tile at
    DEBUG); ``vectorise``: logged as started once the last tile is in (its blocks have been
    vectorised alongside since their tiles were done), done with the scene. Each record
    carries ``scene``, ``stage``, ``done`` and ``total`` attributes for handlers that draw
    bars or feed a dashboard; nothing is printed here. Tiles are counted from the model
    tasks' events, which arrive on the client's event loop thread: hence the lock.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.tiles: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def _log(self, scene: str, stage: str, done: int, total: int, level: int, note: str) -> None:
        extra = {"scene": scene, "stage": stage, "done": done, "total": total}
        logger.log(level, "%s: %s %d/%d %s", scene, stage, done, total, note, extra=extra)

    def start(self, scene: str, total: int) -> None:
        with self._lock:
            self.tiles[scene] = (0, total)
            self._log(scene, "predict", 0, total, logging.INFO, "tiles")

    def tile(self, scene: str, n: int) -> None:
        with self._lock:
            if scene not in self.tiles:  # a late event of a scene that has ended
                return
            done, total = self.tiles[scene]
            if done >= total:  # a recomputed tile (its worker died) after the last one
                return
            now = min(done + n, total)
            self.tiles[scene] = (now, total)
            quarter = (4 * now // total) > (4 * done // total)
            level = logging.INFO if quarter else logging.DEBUG
            self._log(scene, "predict", now, total, level, "tiles")
            if now == total:
                self._log(scene, "vectorise", 0, 1, logging.INFO, "started")

    def event(self, event: tuple[float, dict[str, Any]]) -> None:
        """A model task's report (:func:`~arctic_rts.predict.predict`'s ``progress``), labelled
        ``<run_id>:<item id>``; other runs' reports are not this one's."""
        run, _, scene = str(event[1]["scene"]).partition(":")
        if run == self.run_id:
            self.tile(scene, int(event[1]["tiles"]))

    def finish(self, scene: str, n_polygons: int | None) -> None:
        with self._lock:
            if scene in self.tiles and n_polygons is not None:
                self._log(scene, "vectorise", 1, 1, logging.INFO, f"done, {n_polygons} polygons")
            self.tiles.pop(scene, None)
