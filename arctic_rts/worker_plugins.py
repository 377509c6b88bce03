"""What the map run asks of the Dask workers it runs on, as worker plugins.

:class:`DropFinishedSpecs`: a Dask worker keeps a task's state, with the task's definition
(its function and arguments, ``run_spec``), for as long as a task that depends on it is still
on the worker, and a scene's tasks form one chain (read, model, the model's done marker that a
later read waits for, the vectorise windows whose parts wait for the seam join at the scene's
end). So every finished read and model task of a scene stayed on the worker, definition and
all, until the scene ended: about 1,100 read and 120 model tasks at 10980^2 px, a few tens of
MiB that grew with the scene (the map-run memory sections of BENCHMARKS.md). A finished task's
definition is never used again on the worker: if the scheduler asks for the task once more,
it sends the definition with the request. The plugin drops it as the task finishes.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

#: The states after which a task's definition is not needed on the worker (its result is
#: held, or it was let go); a task still running is "executing", "long-running", "cancelled"
#: or "resumed", and a failed one ("error") keeps its definition for the error report.
_FINISHED = frozenset({"memory", "released"})


class DropFinishedSpecs(WorkerPlugin):  # type: ignore[misc]
    """Drops a task's definition on the worker once the task has finished (see module doc)."""

    name = "arctic-rts-drop-finished-specs"
    idempotent = True

    def setup(self, worker: Any) -> None:
        """Keep the worker: its task states are looked up at each transition."""
        self._worker = worker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        """On a transition into a finished state, forget the task's definition."""
        if finish in _FINISHED:
            ts = self._worker.state.tasks.get(key)
            if ts is not None:
                ts.run_spec = None


def prepare_workers(client: Any) -> None:
    """Register the map run's worker plugins on ``client``'s cluster (workers that join later
    get them too; registering again replaces them)."""
    client.register_plugin(DropFinishedSpecs())
