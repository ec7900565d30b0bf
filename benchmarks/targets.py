"""The speed targets of issue 13, each judged met / not met over three runs.

    python benchmarks/targets.py --threads 1     # everything (4 minutes quiet, 20 on a loaded 2-core box)
    python benchmarks/targets.py --threads 1 --runs 1 --skip suite,startup

Every in-process figure is a ratio taken in one process from interleaved rounds: each
round runs every variant once (the order rotated every round), each paired with a bare
forward just before it, and a run's figure is the median of its per-round ratios. A
target's verdict reads the median of the three runs' figures; the range of the three is
printed beside it, since other processes on the machine move single runs.

- CPU: netbudget / a bare ``no_grad`` forward (ResNet-50 <= 1.2x), netbudget /
  FlopCounterMode (ResNet-50 <= 0.85x), netbudget with a target (estimated latency on the
  A100) / without (ResNet-50 <= 1.05x, issue 23; on meta too), for every CPU model of the benchmark, with
  netbudget's microseconds per aten op above the floor (a dispatch mode that only calls
  each op, plus a no-op wrapper around every module's forward, as the tracer installs);
- meta: netbudget / a bare meta forward (<= 1.3x for ResNet-50 and the transformer
  models), and the SDPA routing's cost on ResNet-50, which never calls attention;
- fixed cost per ``profile()`` on the spec's CNN: its time less that of the same forward
  under a dispatch mode that only calls each op (an upper bound: it includes the
  accounting of the CNN's ops), <= 0.5 ms;
- start-up: ``netbudget show`` on the spec's CNN against ``python -c "import torch"``
  (fresh interpreters, alternating), <= +0.5 s, and whether profiling imports
  ``torch._dynamo``;
- a suite: ``pytest --netbudget`` on a project of 20 registered models (the benchmark's
  models at small inputs), serial and with ``-n 2``, against one ``import torch`` plus the
  sum of their bare forwards (measured in one fresh interpreter).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hotspots import CallOnly, CountOps, with_noop_wrappers
from models import MODELS
from tools import run_bare, run_flop_counter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CPU_MODELS = [name for name, bench in MODELS.items() if not bench.meta_only]
QUICK_CPU = ["cnn", "resnet18", "resnet50", "sdpa_einsum"]  # the others (over 0.3 s a forward) get fewer rounds
META_MODELS = ["resnet50", "vit_b16_mha", "sdpa_einsum", "gpt2_small", "bert_base"]


def has_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------
# Interleaved rounds
# --------------------------------------------------------------------------------------


@dataclass
class Rounds:
    """Per variant: its times, and each over the bare run just before it (one per round)."""

    ratios: dict[str, list[float]]
    times: dict[str, list[float]]
    bare: list[float]


def paired_ratios(variants: dict[str, Callable[[], Any]], rounds: int) -> Rounds:
    """Interleaved rounds; ``variants`` holds ``"bare"`` and the variants compared to it."""
    bare = variants["bare"]
    names = [name for name in variants if name != "bare"]
    for function in variants.values():  # warm-up
        function()
    ratios: dict[str, list[float]] = {name: [] for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    bare_times = []
    gc.collect()
    gc.disable()
    try:
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                bare()
                middle = time.perf_counter()
                variants[name]()
                end = time.perf_counter()
                bare_times.append(middle - start)
                times[name].append(end - middle)
                ratios[name].append((end - middle) / (middle - start))
    finally:
        gc.enable()
    return Rounds(ratios, times, bare_times)


@dataclass
class Target:
    """One target: a figure per run, the limit it must stay under, and how it is printed."""

    label: str
    limit: float | None  # None: reported, not judged
    unit: str = "x"
    runs: list[float] = field(default_factory=list)

    def line(self) -> str:
        if not self.runs:
            return f"n/a     {self.label}: not measured"
        middle = statistics.median(self.runs)
        spread = f"{min(self.runs):.{self.digits}f}-{max(self.runs):.{self.digits}f}{self.unit}"
        figure = f"{middle:.{self.digits}f}{self.unit} (runs {spread})"
        if self.limit is None:
            return f"        {self.label}: {figure}"
        met = sum(value <= self.limit for value in self.runs)
        verdict = "MET    " if middle <= self.limit else "NOT MET"
        return f"{verdict} {self.label} <= {self.limit:g}{self.unit}: {figure}, {met}/{len(self.runs)} runs under"

    @property
    def digits(self) -> int:
        return 2 if self.unit in ("x", " s") else 3 if self.unit == " ms" else 1


# --------------------------------------------------------------------------------------
# In-process: CPU, meta, fixed cost
# --------------------------------------------------------------------------------------


def netbudget_call(model: torch.nn.Module, inputs: tuple, device: str, target: str | None = None) -> Callable[[], Any]:
    from pytest_netbudget import profile

    return lambda: profile(model, inputs=inputs, device=device, target=target)


def aten_ops(model: torch.nn.Module, inputs: tuple) -> int:
    counter = CountOps()
    with torch.no_grad(), counter:
        model(*inputs)
    return counter.count


def cpu_run(name: str, rounds: int) -> dict[str, float]:
    """One run on a CPU-built model: netbudget's ratios to the bare forward and to
    FlopCounterMode (the median of per-round ratios), and its microseconds per op above the floor."""
    bench = MODELS[name]
    torch.manual_seed(0)
    model = bench.build().eval()
    inputs = bench.make_inputs("cpu")

    def floor() -> None:
        with_noop_wrappers(model, lambda: run_mode_only(model, inputs))

    variants = {
        "bare": lambda: run_bare(model, inputs),
        "floor": floor,
        "FlopCounterMode": lambda: run_flop_counter(model, inputs),
        "netbudget": netbudget_call(model, inputs, "cpu"),
        "with_target": netbudget_call(model, inputs, "cpu", "a100"),
    }
    measured = paired_ratios(variants, rounds)
    ratios, times = measured.ratios, measured.times
    per_round_vs_fcm = [ours / theirs for ours, theirs in zip(ratios["netbudget"], ratios["FlopCounterMode"])]
    per_round_target = [ours / plain for ours, plain in zip(ratios["with_target"], ratios["netbudget"])]
    above_floor = statistics.median(times["netbudget"]) - statistics.median(times["floor"])
    return {
        "bare_ms": statistics.median(measured.bare) * 1000,
        "netbudget": statistics.median(ratios["netbudget"]),
        "floor": statistics.median(ratios["floor"]),
        "FlopCounterMode": statistics.median(ratios["FlopCounterMode"]),
        "vs_fcm": statistics.median(per_round_vs_fcm),
        "target": statistics.median(per_round_target),
        "us_per_op": above_floor / aten_ops(model, inputs) * 1e6,
    }


def run_mode_only(model: torch.nn.Module, inputs: tuple) -> None:
    with torch.no_grad(), CallOnly():
        model(*inputs)


def meta_run(name: str, rounds: int) -> dict[str, float]:
    """One run on a model built on meta: netbudget / a bare meta forward; on ResNet-50 also a
    bare meta forward under the SDPA routing / a bare meta forward."""
    bench = MODELS[name]
    with torch.device("meta"):
        model = bench.build().eval()
    inputs = bench.make_inputs("meta")
    variants: dict[str, Callable[[], Any]] = {
        "bare": lambda: run_bare(model, inputs),
        "netbudget": netbudget_call(model, inputs, "meta"),
        "with_target": netbudget_call(model, inputs, "meta", "a100"),
    }
    if name == "resnet50":
        variants["routing"] = lambda: routed_meta_forward(model, inputs)
    ratios = paired_ratios(variants, rounds).ratios
    figures = {variant: statistics.median(values) for variant, values in ratios.items()}
    figures["target"] = statistics.median(
        ours / plain for ours, plain in zip(ratios["with_target"], ratios["netbudget"])
    )
    return figures


def routed_meta_forward(model: torch.nn.Module, inputs: tuple) -> None:
    """A bare meta forward with the engine's SDPA routing for meta around it, as profile() sets it."""
    from pytest_netbudget.engine.fused_on_meta import FUSED_KERNELS_ON_META

    with torch.no_grad(), FUSED_KERNELS_ON_META.on(torch.device("meta")):
        model(*inputs)


def fixed_cost_run(rounds: int) -> float:
    """profile() on the spec's CNN less the same forward under a dispatch mode that only
    calls each op, in milliseconds (median over rounds of the paired difference)."""
    bench = MODELS["cnn"]
    torch.manual_seed(0)
    model = bench.build().eval()
    inputs = bench.make_inputs("cpu")
    variants = {"bare": lambda: run_mode_only(model, inputs), "netbudget": netbudget_call(model, inputs, "cpu")}
    measured = paired_ratios(variants, rounds)
    return statistics.median(ours - mode for ours, mode in zip(measured.times["netbudget"], measured.bare)) * 1000


# --------------------------------------------------------------------------------------
# Fresh interpreters: start-up and a suite
# --------------------------------------------------------------------------------------


def wall(
    command: list[str], cwd: Path, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)
) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    elapsed = time.perf_counter() - start
    if done.returncode not in ok:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stdout[-800:]}{done.stderr[-800:]}")
    return elapsed, done.stdout


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


IMPORT_TORCH = [sys.executable, "-c", "import torch"]
SHOW_CNN = [sys.executable, "-m", "pytest_netbudget", "show", "models:SpecCNN", "--input-shape", "1,1,28,28"]
DYNAMO_CHECK = textwrap.dedent(
    """
    import sys, torch
    from models import MODELS
    from pytest_netbudget import profile
    cnn, vit = MODELS["cnn"], MODELS["vit_b16_mha"]
    models = cnn.build(), vit.build()  # built on CPU: torch's meta init functions import torch._dynamo
    assert "torch._dynamo" not in sys.modules
    profile(models[0], inputs=cnn.make_inputs("cpu"), device="cpu")
    after_cpu = "torch._dynamo" in sys.modules
    with torch.no_grad():
        models[1].to("meta")(*vit.make_inputs("meta"))
    print(after_cpu, "torch._dynamo" in sys.modules)
    """
)


def startup_run(rounds: int) -> float:
    """Median over ``rounds`` alternating pairs of (netbudget show) - (import torch), seconds."""
    env = child_env()
    extra = []
    for _ in range(rounds):
        torch_only, _ = wall(IMPORT_TORCH, HERE, env)
        show, _ = wall(SHOW_CNN, HERE, env)
        extra.append(show - torch_only)
    return statistics.median(extra)


def dynamo_imports() -> tuple[bool, bool]:
    """Whether profiling the spec's CNN on CPU imports torch._dynamo; whether a bare meta
    forward of the ViT does (torch's Python meta kernels, e.g. aten.cat's, are wrapped in
    ``torch._disable_dynamo``, which imports it on their first call)."""
    _, out = wall([sys.executable, "-c", DYNAMO_CHECK], HERE, child_env())
    cpu, bare_meta = out.split()[-2:]
    return cpu == "True", bare_meta == "True"


# name, factory, kwargs, input shape: the benchmark's models at small inputs
SUITE_MODELS: list[tuple[str, str, dict[str, Any], list[int]]] = [
    ("cnn", "reference_models:SpecCNN", {}, [1, 1, 28, 28]),
    *[(f"resnet18_{size}", "reference_models:resnet18", {}, [1, 3, size, size]) for size in (32, 64, 96, 128)],
    *[(f"resnet50_{size}", "reference_models:resnet50", {}, [1, 3, size, size]) for size in (32, 64, 96, 128)],
    *[
        (
            f"vit_{size}",
            "models:ViT",
            {"image_size": size, "layers": 4, "heads": 4, "dim": 192, "mlp_dim": 768},
            [1, 3, size, size],
        )
        for size in (32, 64, 96, 128)
    ],
    *[
        (f"sdpa_einsum_{seq}", "models:FunctionalAttentionNet", {"dim": 128, "heads": 4, "depth": 2}, [1, seq, 128])
        for seq in (32, 64, 128, 256)
    ],
    *[(f"bilstm_{seq}", "models:BiLSTM", {"inputs": 64, "hidden": 128}, [1, seq, 64]) for seq in (25, 50, 100)],
]


def write_suite(directory: Path) -> None:
    lines = [
        "[tool.pytest.ini_options]",
        f"pythonpath = [{json.dumps(str(HERE))}, {json.dumps(str(ROOT / 'tests'))}]",
        "",
        "[tool.netbudget]",
        'device = "cpu"',
        "",
    ]
    for name, factory, kwargs, shape in SUITE_MODELS:
        lines += [f"[tool.netbudget.models.{name}]", f'factory = "{factory}"', f"input_shape = {shape}"]
        if kwargs:
            lines.append("kwargs = {" + ", ".join(f"{key} = {value}" for key, value in kwargs.items()) + "}")
        lines += ['max_params = "1G"', ""]
    (directory / "pyproject.toml").write_text("\n".join(lines))


BARE_SUITE = textwrap.dedent(
    """
    import sys, time
    start = time.perf_counter()
    import torch
    imported = time.perf_counter()
    sys.path[:0] = {paths!r}
    from importlib import import_module
    built = forwards = 0.0
    for factory, kwargs, shape in {models!r}:
        module, name = factory.split(":")
        begin = time.perf_counter()
        model = getattr(import_module(module), name)(**kwargs).eval()
        x = torch.randn(shape)
        middle = time.perf_counter()
        with torch.no_grad():
            model(x)
        built += middle - begin
        forwards += time.perf_counter() - middle
    print(imported - start, built, forwards)
    """
)


def suite_run(directory: Path) -> dict[str, float]:
    """One round: the bare reference in a fresh interpreter, then pytest --netbudget serial and -n 2."""
    env = child_env()
    script = BARE_SUITE.format(
        paths=[str(HERE), str(ROOT / "tests")], models=[(f, k, s) for _, f, k, s in SUITE_MODELS]
    )
    _, out = wall([sys.executable, "-c", script], directory, env)
    import_s, build_s, forwards_s = map(float, out.split())
    pytest = [sys.executable, "-m", "pytest", "--netbudget", "-q", "-p", "no:cacheprovider"]
    serial, _ = wall(pytest, directory, env)
    parallel, _ = wall([*pytest, "-n", "2"], directory, env)
    # exit status 5: no tests collected, which is all this measures (pytest's own start-up)
    plain, _ = wall([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--co"], directory, env, (0, 5))
    return {
        "reference": import_s + forwards_s,
        "import": import_s,
        "build": build_s,
        "forwards": forwards_s,
        "serial": serial,
        "parallel": parallel,
        "pytest_alone": plain,
    }


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per run (default 7)")
    parser.add_argument("--skip", default="", help="comma-separated: cpu, meta, fixed, startup, suite")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads here and in the fresh interpreters (default: torch's); 1 keeps a loaded "
        "machine's OpenMP wake-ups out of small forwards",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # and in every fresh interpreter
    skip = set(filter(None, args.skip.split(",")))
    meta_models = [name for name in META_MODELS if not MODELS[name].transformers or has_transformers()]
    started = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
        f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}; {args.runs} runs of {args.rounds} rounds"
    )
    cpu: dict[str, list[dict[str, float]]] = {name: [] for name in CPU_MODELS}
    meta: dict[str, list[dict[str, float]]] = {name: [] for name in meta_models}
    fixed: list[float] = []
    startup: list[float] = []
    suite: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as directory:
        write_suite(Path(directory))
        for run in range(args.runs):
            if "cpu" not in skip:
                for name in CPU_MODELS:
                    cpu[name].append(cpu_run(name, args.rounds if name in QUICK_CPU else max(2, args.rounds // 2)))
            if "meta" not in skip:
                for name in meta_models:
                    meta[name].append(meta_run(name, args.rounds))
            if "fixed" not in skip:
                fixed.append(fixed_cost_run(4 * args.rounds))
            if "startup" not in skip:
                startup.append(startup_run(3))
            if "suite" not in skip:
                suite.append(suite_run(Path(directory)))
            print(f"  run {run + 1} done at {time.perf_counter() - started:.0f} s", flush=True)
    report(cpu, meta, fixed, startup, suite, skip)
    print(
        f"\ntotal {time.perf_counter() - started:.0f} s; load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )


def spread(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def report(
    cpu: dict[str, list[dict[str, float]]],
    meta: dict[str, list[dict[str, float]]],
    fixed: list[float],
    startup: list[float],
    suite: list[dict[str, float]],
    skip: set[str],
) -> None:
    if "cpu" not in skip:
        print("\nCPU, median of per-round ratios; median (range) over runs:")
        print(
            f"  {'model':12s} {'bare ms':>8s} {'floor':>17s} {'FlopCounterMode':>17s} {'netbudget':>17s} {'nb / FCM':>17s} {'us/op above floor':>19s}"
        )
        for name, runs in cpu.items():
            column = {key: [run[key] for run in runs] for key in runs[0]}
            print(
                f"  {name:12s} {statistics.median(column['bare_ms']):8.1f} {spread(column['floor']):>17s} "
                f"{spread(column['FlopCounterMode']):>17s} {spread(column['netbudget']):>17s} "
                f"{spread(column['vs_fcm']):>17s} {spread(column['us_per_op'], 1):>19s}"
            )
    if "meta" not in skip:
        print("\nmeta (models built on meta), netbudget / a bare meta forward:")
        for name, runs in meta.items():
            print(f"  {name:12s} {spread([run['netbudget'] for run in runs])}")
    targets = [
        Target(
            "ResNet-50 CPU: netbudget / bare no_grad forward",
            1.2,
            runs=[r["netbudget"] for r in cpu.get("resnet50", [])],
        ),
        Target("ResNet-50 CPU: netbudget / FlopCounterMode", 0.85, runs=[r["vs_fcm"] for r in cpu.get("resnet50", [])]),
        Target(
            "ResNet-50 CPU: netbudget with a target (estimated latency) / without",
            1.05,
            runs=[r["target"] for r in cpu.get("resnet50", [])],
        ),
        Target(
            "ResNet-50 meta: netbudget with a target / without (all of it accounting)",
            1.05,
            runs=[r["target"] for r in meta.get("resnet50", [])],
        ),
        *[
            Target(f"{name} meta: netbudget / bare meta forward", 1.3, runs=[r["netbudget"] for r in runs])
            for name, runs in meta.items()
        ],
        Target(
            "ResNet-50 meta: bare forward under the SDPA routing / bare (no attention: nothing to pay)",
            1.02,
            runs=[r["routing"] for r in meta.get("resnet50", [])],
        ),
        Target("spec CNN: fixed cost per profile() (upper bound)", 0.5, " ms", fixed),
        Target("start-up: netbudget show (spec CNN) - python -c 'import torch'", 0.5, " s", startup),
    ]
    print("\nTargets (verdict on the median of the runs):")
    for target in targets:
        print(f"  {target.line()}")
    if "startup" not in skip:
        cpu, bare_meta = dynamo_imports()
        print(f"  {'NOT MET' if cpu else 'MET    '} profiling on CPU imports no torch._dynamo")
        print(
            f"          a bare meta forward (ViT) imports it: {bare_meta} (torch's own meta kernels; see the docstring)"
        )
    if suite:
        column = {key: [run[key] for run in suite] for key in suite[0]}
        reference = column["reference"]
        print(f"\nA suite of {len(SUITE_MODELS)} models, pytest --netbudget (fresh interpreters; median (range) s):")
        print(
            f"  reference: import torch + the bare forwards   {spread(reference)}  (import {spread(column['import'])}, forwards {spread(column['forwards'])})"
        )
        print(f"  building the models (not in the reference)   {spread(column['build'])}")
        print(f"  pytest alone (--co, no --netbudget)           {spread(column['pytest_alone'])}")
        for key, label in (("serial", "pytest --netbudget"), ("parallel", "pytest --netbudget -n 2")):
            ratios = [ours / ref for ours, ref in zip(column[key], reference)]
            print(f"  {label:44s}  {spread(column[key])}  = {spread(ratios)}x the reference")


if __name__ == "__main__":
    main()
