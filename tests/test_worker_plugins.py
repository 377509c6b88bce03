"""The map run's worker plugins on a real local cluster (one worker process)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dask
import pytest

from arctic_rts.cluster import connect
from arctic_rts.config import ClusterConfig
from arctic_rts.worker_plugins import DropFinishedSpecs


@pytest.fixture
def client() -> Iterator[Any]:
    with connect(ClusterConfig(n_workers=1, threads_per_worker=1, gpu="no")) as c:
        yield c


def _double(x: list[int]) -> list[int]:
    return [2 * v for v in x]


def _definitions(dask_worker: Any) -> dict[str, tuple[str, bool]]:
    """Each task on the worker: its state, and whether it still has its definition."""
    return {
        str(key): (ts.state, ts.run_spec is not None) for key, ts in dask_worker.state.tasks.items()
    }


def _once_released(client: Any, key: str) -> dict[str, tuple[str, bool]]:
    """:func:`_definitions` once the worker has let ``key``'s result go (the scheduler tells
    it so after the dependent task has finished, a message that may still be on its way)."""
    deadline = time.monotonic() + 10
    while True:
        (tasks,) = client.run(_definitions).values()
        if tasks[key][0] == "released" or time.monotonic() > deadline:
            return tasks
        time.sleep(0.05)


def _held_chain(client: Any, tag: str) -> tuple[Any, Any, dict[str, tuple[str, bool]]]:
    """A task ``first-<tag>`` and one that depends on it, ``second-<tag>``, whose result the
    cluster keeps: the first task, the kept result and the worker's tasks once the first
    one's result is let go (:func:`_once_released`)."""
    first = dask.delayed(list, pure=True)(range(5), dask_key_name=f"first-{tag}")
    second = dask.delayed(_double, pure=True)(first, dask_key_name=f"second-{tag}")
    held = client.persist(second)
    assert held.compute() == [0, 2, 4, 6, 8]
    return first, held, _once_released(client, f"first-{tag}")


def test_finished_tasks_keep_no_definition_on_the_worker(client: Any) -> None:
    """What Dask does without the plugin: a finished task whose dependent's result is held
    stays on the worker, definition and all; with it, no finished task keeps one."""
    _, held, before = _held_chain(client, "bare")
    assert before["first-bare"] == ("released", True)
    assert before["second-bare"] == ("memory", True)
    del held

    client.register_plugin(DropFinishedSpecs())
    _, _held, after = _held_chain(client, "dropped")  # kept: the result stays held
    assert after["first-dropped"] == ("released", False)
    assert after["second-dropped"] == ("memory", False)


def test_a_task_asked_for_again_runs_with_the_definition_sent_again(client: Any) -> None:
    """The worker still knows the released task whose definition was dropped; asked for it
    again, it runs it with the definition the scheduler sends with the request."""
    client.register_plugin(DropFinishedSpecs())
    first, _held, state = _held_chain(client, "again")  # kept: the result stays held
    assert state["first-again"] == ("released", False)
    assert client.compute(first).result() == [0, 1, 2, 3, 4]
