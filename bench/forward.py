"""The raw forward of the paper's UNet on the CPU: where its time goes and what runs it fastest.

Usage::

    .venv/bin/python bench/forward.py [--size 512] [--rounds 6] [--threads 2] [--compile]

One random-init full-width paper UNet (12 bands, widths 16/32/64/128, bottleneck 256), fp32,
one ``size``^2 tile, ``threads`` torch threads. Measures, in one process:

- convolution FLOPs per pixel, counted analytically from the layer shapes (no hooks);
- the share of time per operator (``torch.profiler``) of the plain composition of the modules
  (``UNet.reference_forward``: explicit padding, a ReLU pass per layer, ``torch.cat``) and of
  ``UNet.forward`` (the fused path);
- the runners side by side, taking turns round after round (the machine is shared: absolute
  rates drift with its load; the median ratio of times within a round holds better): the
  plain composition, ``UNet.forward``, optional ``torch.compile`` of it (``--compile``), ONNX
  Runtime (``PredictConfig.backend``) and OpenVINO (timed here only: it did not beat torch)
  where installed, each checked against ``UNet.forward`` (max abs diff);
- GFLOP/s of each as a share of ``--limit``, the machine's fp32 FMA limit on ``threads`` cores
  (default: 535 GFLOP/s, issue 19's microbenchmark on this machine), next to a large fp32
  matmul measured here.

Rewrites this script's section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import rewrite_section

from arctic_rts.model import UNet
from arctic_rts.model.runners import backend_runner

HEADING = "## Raw forward of the paper UNet (bench/forward.py)"
BANDS = 12


def conv_flops_per_pixel(model: UNet) -> float:
    """Convolution FLOPs (2 x MACs) per input pixel, from the layer shapes: a convolution at
    pooling depth d runs on 4^-d of the pixels; the up-convolution and the body of a decoder
    stage run at the depth of the skip they join."""

    def per_px(conv: nn.Conv2d) -> float:
        kh, kw = conv.kernel_size
        return 2.0 * conv.in_channels * conv.out_channels * kh * kw // conv.groups

    def convs(module: nn.Module) -> list[nn.Conv2d]:
        return [m for m in module.modules() if isinstance(m, nn.Conv2d)]

    total = 0.0
    for depth, stage in enumerate(model.down):
        total += sum(per_px(c) for c in convs(stage)) / 4**depth
    total += sum(per_px(c) for c in convs(model.bottleneck)) / 4 ** len(model.down)
    for i, up in enumerate(model.up):
        total += sum(per_px(c) for c in convs(up)) / 4 ** (len(model.up) - 1 - i)
    return total + per_px(model.head)


def matmul(n: int = 2048) -> Callable[[], object]:
    """An n x n fp32 matmul: timed in the rounds beside the runners, it shows how much of the
    machine this process gets at the time (GFLOP/s relative to it hold better than absolute)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return lambda: torch.mm(a, b)


def op_shares(fn: Callable[[], object], reps: int = 2) -> dict[str, float]:
    """Share of self CPU time per operator over ``reps`` calls (after one warm-up call)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares = {e.key.removeprefix("aten::"): e.self_cpu_time_total / total for e in events}
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))


def share_text(shares: dict[str, float], floor: float = 0.005) -> str:
    """``op 45 %, ...`` for the operators above ``floor``."""
    return ", ".join(f"{k} {100 * v:.0f} %" for k, v in shares.items() if v >= floor)


def runners(model: UNet, x: torch.Tensor, compile_: bool) -> dict[str, Callable[[], np.ndarray]]:
    """Every runner of ``model`` to time, by name (backends that are not installed left out)."""

    def torch_run(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            with torch.inference_mode():
                return fn(x).numpy()

        return run

    out = {
        "plain composition (reference_forward)": torch_run(model.reference_forward),
        "UNet.forward (fused)": torch_run(model),
    }
    if compile_:
        out["torch.compile(UNet.forward)"] = torch_run(torch.compile(model))
    try:
        run = backend_runner("onnxruntime", model, threads=torch.get_num_threads())
        out["onnxruntime (PredictConfig.backend)"] = lambda: run(x).numpy()
    except ImportError as exc:
        print(f"onnxruntime: not installed ({exc})", flush=True)
    try:
        out["openvino (compared here only)"] = openvino_runner(model, x)
    except ImportError as exc:
        print(f"openvino: not installed ({exc})", flush=True)
    return out


def openvino_runner(model: UNet, x: torch.Tensor) -> Callable[[], np.ndarray]:
    """OpenVINO (CPU, fp32) on the plain composition of ``model``, traced at ``x``'s shape."""
    import openvino as ov

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = model  # a submodule: its weights are the graph's parameters

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.unet.reference_forward(t)

    with torch.no_grad():
        graph = ov.convert_model(Plain().eval(), example_input=x)
    threads = torch.get_num_threads()
    compiled = ov.Core().compile_model(
        graph, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    )
    arr = np.ascontiguousarray(x.numpy())
    return lambda: np.asarray(compiled(arr)[0])


def side_by_side(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of every call of each runner, the runners taking turns in every round (in
    reverse order every other round, so none always runs right after the same one)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=float, default=535.0, help="fp32 FMA limit, GFLOP/s")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = UNet(BANDS).eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x = torch.rand(1, BANDS, args.size, args.size).contiguous(memory_format=torch.channels_last)
    fpp = conv_flops_per_pixel(model)
    n_mm = 2048
    with torch.inference_mode():
        shares = {
            "plain composition": op_shares(lambda: model.reference_forward(x)),
            "UNet.forward (fused)": op_shares(lambda: model(x)),
        }
    runs = runners(model, x, args.compile)
    outputs = {name: run() for name, run in runs.items()}  # first calls: compile, warm-up
    ref = outputs["UNet.forward (fused)"]
    mm = f"fp32 matmul {n_mm}^2"
    times = side_by_side({**runs, mm: matmul(n_mm)}, args.rounds)
    mm_rate = 2 * n_mm**3 / min(times.pop(mm)) / 1e9
    fused = times["UNet.forward (fused)"]
    px = args.size**2
    rows = [
        f"| {mm} (the same rounds) | | {mm_rate:.0f} | "
        f"{100 * mm_rate / args.limit:.0f} % | 1.00 | | |"
    ]
    for name, secs in times.items():
        mpx = px / min(secs) / 1e6
        gflops = mpx * fpp / 1e3
        speed = statistics.median(f / s for f, s in zip(fused, secs, strict=True))
        diff = float(np.abs(outputs[name] - ref).max())
        rows.append(
            f"| {name} | {mpx:.3f} | {gflops:.0f} | {100 * gflops / args.limit:.0f} % | "
            f"{gflops / mm_rate:.2f} | {speed:.2f} | {diff:.1e} |"
        )
    load = os.getloadavg()
    text = [
        HEADING,
        "",
        f"`bench/forward.py --size {args.size} --rounds {args.rounds} --threads {args.threads}"
        f"{' --compile' if args.compile else ''}` on {platform.machine()} CPU, torch "
        f"{torch.__version__}, {time.strftime('%Y-%m-%d')}, load average {load[0]:.1f} / "
        f"{load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) on {os.cpu_count()} cores: other work "
        "on a shared machine slows every rate; the runners take turns, rates from the best round "
        "of each; the speed relative to UNet.forward is the median over the rounds of the ratio "
        "of their times in the same round, which holds better than the rates. "
        "Random-init paper UNet "
        f"({BANDS} bands, widths {'/'.join(map(str, model.widths))}, bottleneck "
        f"{model.bottleneck_width}), fp32, one {args.size}^2 tile. Convolution FLOPs counted "
        f"from the layer shapes: {fpp / 1e3:.1f} kFLOP per pixel. Limit: {args.limit:.0f} GFLOP/s "
        f"(fp32 FMA limit on {args.threads} cores); a {n_mm}^2 fp32 matmul timed in the same "
        "rounds shows how much of the machine the runners got (the column relative to it).",
        "",
        "| runner | Mpx/s | GFLOP/s | share of the limit | relative to the matmul | "
        "speed relative to UNet.forward | max abs diff to UNet.forward |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Where the time goes (share of self CPU time per operator, `torch.profiler`):",
        "",
        *[f"- {name}: {share_text(s)}" for name, s in shares.items()],
        "",
    ]
    print(rewrite_section(HEADING, text, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
