"""Peak memory of one model window, as a map run's worker runs it (not part of make test).

Usage::

    .venv/bin/python bench/window_memory.py [--sizes 1008 1088] [--passes 3]

Each size runs in a fresh process with the environment local workers get
(``cluster.worker_environ()``: mimalloc and its settings) and one torch thread: the bundled demo
weights run ``predict._predict_block`` on one window of random reflectance ``--passes`` times,
and the process's peak resident set (``VmHWM``) is read before the first pass and after each.
Prints one line per size; the map run's memory sections of BENCHMARKS.md quote it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from inference import MIB, _vm_hwm  # noqa: E402


def _peak_mib() -> float:
    return _vm_hwm() / MIB


def child(size: int, passes: int) -> dict[str, object]:
    """Peak memory around ``passes`` forward passes over one ``size``^2 window."""
    import numpy as np
    import torch

    from arctic_rts.config import PredictConfig
    from arctic_rts.model import resolve_weights
    from arctic_rts.model.domain import demo_weights
    from arctic_rts.predict import _identify, _predict_block

    torch.set_num_threads(1)
    models, weights = _identify(resolve_weights(demo_weights()))
    assert weights is not None
    x = torch.rand(len(weights.bands), size, size)
    invalid = np.zeros((size, size), dtype=bool)
    before = _peak_mib()
    after = []
    for _ in range(passes):
        _predict_block(x, invalid, models, PredictConfig(halo=weights.halo))
        after.append(_peak_mib())
    return {"size": size, "before_mib": before, "after_mib": after, "rise_mib": after[-1] - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1008, 1088])
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.passes)))
        return
    from arctic_rts.cluster import worker_environ

    env = {**os.environ, **worker_environ()}
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(size), "--passes", str(args.passes)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{size}^2 window: +{result['rise_mib']:.0f} MiB over the process before the first "
            f"pass ({result['before_mib']:.0f} -> "
            f"{' / '.join(f'{v:.0f}' for v in result['after_mib'])} MiB)",
            flush=True,
        )


if __name__ == "__main__":
    main()
