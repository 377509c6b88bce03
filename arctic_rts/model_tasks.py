"""How the model tasks of one process share its cores and devices.

A model task runs torch's forward passes over one window. How many such tasks run at once in a
process, and on how many torch threads each, decides both speed and memory: every running task
holds its window's activations.

* On a GPU, tasks take turns on the device (:func:`model_turn`), while the worker's other threads
  read and vectorise.
* On CPU, workers started by :func:`arctic_rts.cluster.connect` run at most
  ``ClusterConfig.model_tasks_per_worker`` tasks at once (:data:`MODEL_TASKS_ENV`,
  :func:`model_slot`; default one, on all the worker's cores, like a GPU), each on
  :data:`TORCH_THREADS_ENV` torch threads.
  Workers of your own read the same two variables (``deploy/README.md``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Environment variable with the torch threads per model task in a worker process; ``connect``
#: sets it for the workers it starts.
TORCH_THREADS_ENV = "ARCTIC_RTS_TORCH_THREADS"
#: Environment variable with how many model tasks may run at once in a CPU worker process;
#: ``connect`` sets it for the workers it starts. Unset: no limit (one per thread).
MODEL_TASKS_ENV = "ARCTIC_RTS_MODEL_TASKS"

_lock = threading.Lock()
_device_locks: dict[str, threading.Lock] = {}
_cpu_slots: dict[int, threading.BoundedSemaphore] = {}


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _positive_env(name: str) -> int | None:
    """The positive integer in environment variable ``name``, or None (unset, or not one:
    then a warning, once per process and value)."""
    value = os.environ.get(name, "")
    if not value:
        return None
    if value.isdigit() and int(value) >= 1:
        return int(value)
    _warn_env(name, value)
    return None


@functools.cache
def _warn_env(name: str, value: str) -> None:
    """Warn once per process and value, not on every model task."""
    logger.warning("ignoring %s=%r: not a positive integer", name, value)


def task_threads(concurrent_tasks: int) -> int | None:
    """Torch (intra-op) threads for a model task run by the calling thread, or None to keep
    the thread's own setting.

    * :data:`TORCH_THREADS_ENV` set (workers started by ``connect``, deploy recipes): that.
    * another distributed worker, or the calling program's main thread (the synchronous
      scheduler): None.
    * a thread of Dask's local threaded scheduler: the cores shared out over the model tasks
      that can run at once (``concurrent_tasks``, at most the pool's ``num_workers``): model
      tasks side by side on one torch thread each ran faster than one at a time on all of
      them in ``bench/inference.py`` (the bare forward alone is not always faster so).
    """
    n = _positive_env(TORCH_THREADS_ENV)
    if n is not None:
        return n
    if threading.current_thread() is threading.main_thread():
        return None
    from distributed import get_worker

    try:
        get_worker()
        return None
    except ValueError:
        pass
    import dask
    from dask.system import CPU_COUNT

    pool = int(dask.config.get("num_workers", None) or CPU_COUNT)
    return max(1, usable_cores() // max(1, min(pool, concurrent_tasks)))


def use_task_threads(concurrent_tasks: int) -> None:
    """Apply :func:`task_threads` to the calling thread. Torch keeps its thread count per
    thread (set from the process-wide value at the thread's first parallel operation), so
    this runs in every model task rather than once per process."""
    n = task_threads(concurrent_tasks)
    if n is None:
        return
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def model_slot() -> AbstractContextManager[Any]:
    """The context a model task runs in on a CPU worker, from building its window to its
    last forward pass.

    With :data:`MODEL_TASKS_ENV` set, at most that many tasks at once in this process; a task
    that waits for a slot holds its thread, not the cores, and has not built its window yet
    (waiting after that held a second window's input copies beside the running task's
    activations). Unset (Dask's local schedulers, workers of your own without it): no limit.
    """
    slots = _positive_env(MODEL_TASKS_ENV)
    if slots is None:
        return contextlib.nullcontext()
    with _lock:
        return _cpu_slots.setdefault(slots, threading.BoundedSemaphore(slots))


def model_turn(device: torch.device) -> AbstractContextManager[Any]:
    """The context a model task runs its forward passes in, on ``device``: on a GPU one lock
    per device in this process, so tasks take turns on it whatever the scheduler does with the
    ``GPU`` resource annotation (Dask's low-level graph fusion drops layer annotations; see
    ``predict``); on the CPU nothing (:func:`model_slot` limits CPU tasks)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    with _lock:
        return _device_locks.setdefault(str(device), threading.Lock())
