"""The checks that need a GPU, in one run (issue 21): under 4 minutes on one H100.

    python benchmarks/gpu_check.py

prints one table per check:

1. the suite's CUDA tests (``pytest -m cuda``);
2. cuda = meta: every figure of the benchmark's models profiled on cuda and on meta;
3. measured against tracked memory: ``peak_memory_mb`` (``torch.cuda.max_memory_allocated``
   over the forward, weights and inputs included) beside ``activations_mb`` (live intermediate
   tensors only), and ``train_peak_memory_mb`` beside ``train_memory_mb`` for a training step,
   with their ratio;
4. the CUDA attention kernels (flash, memory-efficient, cuDNN) each forced in turn, counted
   against the math kernel's figure;
5. a model too big for the device: the out-of-memory message a user reads.

On a machine without CUDA it says so and exits 0. ``--skip tests,models,memory,attention,oom``
leaves checks out.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

#: The figures a cuda profile and a meta profile must agree on.
FIGURES = ("params", "buffers", "size_mb", "macs", "flops", "activations_mb")


def table(title: str, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """One titled, aligned table."""
    cells = [tuple(str(cell) for cell in row) for row in [header, *rows]]
    widths = [max(len(row[index]) for row in cells) for index in range(len(header))]
    print(f"\n{title}")
    for number, row in enumerate(cells):
        print(
            "  "
            + "  ".join(
                cell.rjust(width) if index else cell.ljust(width)
                for index, (cell, width) in enumerate(zip(row, widths))
            )
        )
        if number == 0:
            print("  " + "  ".join("-" * width for width in widths))


def cuda_tests() -> None:
    """The suite's tests marked ``cuda``, in a fresh interpreter."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    rows = [
        ("pytest -m cuda", lines[-1] if lines else done.stderr.strip()[-200:], f"{time.perf_counter() - started:.0f} s")
    ]
    rows += [("", failure, "") for failure in failures]
    table("1. CUDA tests", ("run", "result", "time"), rows)


def benchmark_models() -> Iterator[tuple[str, torch.nn.Module, tuple]]:
    from models import MODELS

    for name, bench in MODELS.items():
        if bench.meta_only:
            continue
        if bench.transformers:
            try:
                import transformers  # noqa: F401
            except ImportError:
                continue
        torch.manual_seed(0)
        yield name, bench.build().eval(), bench.make_inputs("cpu")


def cuda_equals_meta() -> None:
    from pytest_netbudget import profile

    rows = []
    for name, model, inputs in benchmark_models():
        cuda = profile(model, inputs, device="cuda")
        meta = profile(model, inputs, device="meta")
        differing = [figure for figure in FIGURES if getattr(cuda, figure) != getattr(meta, figure)]
        rows.append(
            (
                name,
                f"{cuda.macs:,}",
                f"{meta.macs:,}",
                f"{cuda.activations_mb:.3f} / {meta.activations_mb:.3f}",
                "equal" if not differing else "DIFFER: " + ", ".join(differing),
            )
        )
    table(
        "2. cuda = meta (every figure of the benchmark's models)",
        ("model", "macs cuda", "macs meta", "activations_mb cuda / meta", "figures"),
        rows,
    )


def training_models() -> dict[str, tuple[Callable[[], torch.nn.Module], Callable[[], Any]]]:
    from training import MODELS

    return MODELS


def measured_memory() -> None:
    from pytest_netbudget import profile

    rows = []
    for name, model, inputs in benchmark_models():
        p = profile(model, inputs, device="cuda")
        rows.append(
            (
                f"{name} forward",
                f"{p.peak_memory_mb:.2f}",
                f"{p.activations_mb:.2f}",
                f"{p.peak_memory_mb / max(p.activations_mb, 1e-9):.2f}",
            )
        )
    for name, (build, make_inputs) in training_models().items():
        torch.manual_seed(0)
        p = profile(build(), make_inputs(), device="cuda", train=True, optimizer="adamw")
        rows.append(
            (
                f"{name} step",
                f"{p.train_peak_memory_mb:.2f}",
                f"{p.train_memory_mb:.2f}",
                f"{p.train_peak_memory_mb / p.train_memory_mb:.3f}",
            )
        )
    table(
        "3. measured (torch.cuda.max_memory_allocated) against tracked, MiB",
        ("model", "peak_memory_mb / train_peak_memory_mb", "activations_mb / train_memory_mb", "ratio"),
        rows,
    )
    print("  (a forward's measured peak includes the weights and inputs, its tracked figure only the activations)")


def attention_kernels() -> None:
    """SDPA on [2, 8, 1024, 64] in float16, each CUDA kernel forced, against the math kernel: QK^T and
    AV, 2 x 2 x 8 x 1024^2 x 64 MACs, whichever kernel runs."""
    from engine_helpers import Call
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from pytest_netbudget import profile

    attention = Call(lambda m, q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
    q, k, v = (torch.randn(2, 8, 1024, 64, dtype=torch.float16, device="cuda") for _ in range(3))
    expected = 2 * 2 * 8 * 1024 * 1024 * 64
    figures: dict[str, Any] = {}
    for label, backend in (
        ("math", SDPBackend.MATH),
        ("flash", SDPBackend.FLASH_ATTENTION),
        ("memory-efficient", SDPBackend.EFFICIENT_ATTENTION),
        ("cuDNN", SDPBackend.CUDNN_ATTENTION),
    ):
        try:
            with sdpa_kernel(backend):
                p = profile(attention, (q, k, v), device="cuda")
            ops = ", ".join(name for name, stats in p.ops.items() if stats.macs)
            figures[label] = (p.macs, p.flops, ops)
        except Exception as error:  # a kernel this GPU or build does not have
            figures[label] = (None, None, f"not run: {type(error).__name__}: {str(error).splitlines()[0][:80]}")
    math = figures["math"]
    rows = []
    for label, (macs, flops, ops) in figures.items():
        verdict = "-" if macs is None else "equal" if (macs, flops) == math[:2] else "DIFFERS"
        rows.append((label, "-" if macs is None else f"{macs:,}", "-" if flops is None else f"{flops:,}", verdict, ops))
    table(
        f"4. CUDA attention kernels against math (expected MACs {expected:,})",
        ("kernel", "macs", "flops", "vs math", "ops counted"),
        rows,
    )


def out_of_memory() -> None:
    """``netbudget show`` on a factory whose weights do not fit: Linear(200,000, 200,000) is 160 GB
    of float32."""
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "too_big.py").write_text(
            textwrap.dedent(
                """
                from torch import nn

                def build():
                    return nn.Linear(200_000, 200_000)
                """
            )
        )
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest_netbudget",
                "show",
                "too_big:build",
                "--input-shape",
                "1,200000",
                "--device",
                "cuda",
            ],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": f"{directory}{os.pathsep}{ROOT}"},
        )
    message = (done.stderr or done.stdout).strip().splitlines()
    table("5. a model too big for the device", ("exit", "message"), [(done.returncode, line) for line in message[:4]])


CHECKS = {
    "tests": cuda_tests,
    "models": cuda_equals_meta,
    "memory": measured_memory,
    "attention": attention_kernels,
    "oom": out_of_memory,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", default="", help="comma-separated: " + ", ".join(CHECKS))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (run this on a machine with one)")
        return 0
    print(
        f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB"
    )
    skip = set(filter(None, args.skip.split(",")))
    started = time.perf_counter()
    for name, check in CHECKS.items():
        if name not in skip:
            check()
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
