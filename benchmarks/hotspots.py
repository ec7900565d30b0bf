"""Where netbudget's profiling overhead goes, for the engine's maintainers.

    python benchmarks/hotspots.py                      # ResNet-50 on meta
    python benchmarks/hotspots.py --model resnet50 --device cpu --threads 1

Times, for the same model and inputs (min and median of N interleaved runs):

- a bare ``no_grad`` forward;
- the same forward under a dispatch mode that only calls each op, with no-op forward
  pre/post hooks on every module, with a no-op wrapper around every module's forward (what
  netbudget's tracer installs), and the mode with the wrappers: the floor of an
  operator-level counter that attributes ops to modules as netbudget does;
- the floor of another design, for comparison: the same, with the common leaf modules
  (convolutions, batch norm, ReLU, pooling, linear) run outside the dispatch mode, as a
  counter would that predicted their ops from the module instead of seeing them;
- ``FlopCounterMode`` and ``netbudget.profile``.

then runs netbudget under cProfile and lists its own functions (and torch's
flop-counter formulas that it calls) by internal and cumulative time. cProfile
inflates Python-heavy code, so read its figures as shares, not as milliseconds.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import MODELS  # noqa: E402


class CallOnly(TorchDispatchMode):
    """The floor's dispatch mode: calls each op, as netbudget's tracer, without the
    ``torch._disable_dynamo`` wrapper that torch puts around a mode's ``__torch_dispatch__``
    by default (which swaps the frame evaluator around every op)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        return func(*args, **(kwargs or {}))


def with_noop_hooks(model: torch.nn.Module, body: Callable[[], None]) -> None:
    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(lambda module, args, kwargs: None, with_kwargs=True))
        handles.append(module.register_forward_hook(lambda module, args, output: None, always_call=True))
    try:
        body()
    finally:
        for handle in handles:
            handle.remove()


def with_noop_wrappers(model: torch.nn.Module, body: Callable[[], None]) -> None:
    """``body()`` with every module's forward wrapped by a function that only calls it, as an
    instance attribute (how netbudget's tracer follows modules)."""

    def wrapped(forward: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return forward(*args, **kwargs)
            finally:
                pass

        return call

    modules = list(model.modules())
    for module in modules:
        vars(module)["forward"] = wrapped(module.forward)
    try:
        body()
    finally:
        for module in modules:
            del vars(module)["forward"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", choices=[name for name, b in MODELS.items() if not b.meta_only])
    parser.add_argument("--device", default="meta", choices=["cpu", "meta"])
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--top", type=int, default=25, help="rows of the cProfile listing")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from pytest_netbudget import profile

    bench = MODELS[args.model]
    if args.device == "meta":
        with torch.device("meta"):
            model = bench.build()
    else:
        model = bench.build()
    model.eval()
    inputs = bench.make_inputs(args.device)

    def bare() -> None:
        with torch.no_grad():
            model(*inputs)

    def mode_only() -> None:
        with torch.no_grad(), CallOnly():
            model(*inputs)

    def floor() -> None:
        with_noop_wrappers(model, mode_only)

    def leaves_outside() -> None:
        with_noop_wrappers(model, lambda: with_leaves_outside_the_mode(model, mode_only))

    def flop_counter() -> None:
        with torch.no_grad(), FlopCounterMode(display=False):
            model(*inputs)

    def netbudget() -> None:
        profile(model, inputs=inputs, device=args.device)

    variants = {
        "bare forward": bare,
        "dispatch mode that only calls": mode_only,
        "no-op hooks on every module": lambda: with_noop_hooks(model, bare),
        "no-op forward wrappers": lambda: with_noop_wrappers(model, bare),
        "mode + wrappers (the floor)": floor,
        "the floor, leaves outside the mode": leaves_outside,
        "FlopCounterMode": flop_counter,
        "netbudget.profile": netbudget,
    }
    for function in variants.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in variants}
    gc.collect()
    gc.disable()
    try:
        for _ in range(args.reps):
            for name, function in variants.items():
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
    finally:
        gc.enable()

    ops = CountOps()
    with torch.no_grad(), ops:
        model(*inputs)
    modules = sum(1 for _ in model.modules())
    print(
        f"{args.model} on {args.device}, {torch.get_num_threads()} thread(s): {ops.count} aten ops, "
        f"{modules} modules, {args.reps} interleaved runs"
    )
    floor = min(times["bare forward"])
    for name, values in times.items():
        print(
            f"  {name:34s} min {min(values) * 1000:8.2f} ms  median {statistics.median(values) * 1000:8.2f} ms"
            f"  min/bare {min(values) / floor:5.2f}x"
        )
    extra = min(times["netbudget.profile"]) - min(times["mode + wrappers (the floor)"])
    print(f"  netbudget above the floor: {extra * 1000:.2f} ms, {extra / ops.count * 1e6:.1f} us per aten op")

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5):
        netbudget()
    profiler.disable()
    for order in ("tottime", "cumtime"):
        buffer = io.StringIO()
        stats = pstats.Stats(profiler, stream=buffer)
        stats.sort_stats(order).print_stats(r"pytest_netbudget|flop_counter|weakref", args.top)
        listing = buffer.getvalue()
        print(f"\ncProfile of 5 netbudget calls, by {order}:")
        print(listing[listing.find("   ncalls") :].rstrip())


#: Leaf modules whose ops a per-module counter could predict rather than see.
LEAVES = (
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.ReLU,
    torch.nn.MaxPool2d,
    torch.nn.AdaptiveAvgPool2d,
    torch.nn.Linear,
)


def with_leaves_outside_the_mode(model: torch.nn.Module, body: Callable[[], None]) -> None:
    """``body()`` with every leaf module of :data:`LEAVES` running its forward with Python
    dispatch off, so that no dispatch mode sees its ops (it wraps whatever ``forward`` the
    module has then, the no-op wrapper included)."""

    def outside(forward: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with torch._C._DisableTorchDispatch():
                return forward(*args, **kwargs)

        return call

    leaves = [module for module in model.modules() if isinstance(module, LEAVES)]
    previous = [vars(module).get("forward") for module in leaves]
    for module in leaves:
        vars(module)["forward"] = outside(module.forward)
    try:
        body()
    finally:
        for module, forward in zip(leaves, previous):
            if forward is None:
                del vars(module)["forward"]
            else:
                vars(module)["forward"] = forward


class CountOps(CallOnly):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


if __name__ == "__main__":
    main()
