"""Accuracy and speed of pytest-netbudget against the usual PyTorch counters.

    python benchmarks/compare.py              # everything (< 10 minutes on a 2-core CPU box)
    python benchmarks/compare.py --quick      # skip the transformers models and the 7B decoder
    python benchmarks/compare.py --models cnn,resnet50
    python benchmarks/compare.py --example-project-only   # what --netbudget costs a user's pytest run

Table 1: parameters and MACs per tool per model, judged against the figures derived
by hand in ``benchmarks/models.py``. A cell more than 1% off is marked ``!`` with
its deviation; a tool that raises shows ``error: <ExceptionName>``.

Table 2: the time one call of each tool takes (median of N runs after a warm-up,
all tools interleaved round-robin so that machine noise hits them alike), as a ratio
to a bare eval-mode ``torch.no_grad()`` forward of the same model and inputs in the
same process. The 7B decoder is profiled on the meta device only, each tool in a
fresh subprocess, so that its time and peak RSS (VmHWM) are its own.

The benchmark tools (thop, ptflops, torchinfo, fvcore, transformers) come from
``benchmarks/requirements.txt``; they are never runtime dependencies.

This file only parses the arguments and runs the steps: ``models.py`` holds the models
and their hand-derived figures, ``tools.py`` one adapter per tool, ``measure.py`` the
timed rounds and subprocesses, ``diagnose.py`` the notes on why a tool differs (from
netbudget's own per-op and per-layer figures), ``report.py`` the printing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings

import torch

from diagnose import attention_probe
from measure import llama_rows, measure_example_project, measure_meta_in_process, measure_model
from models import MODELS
from report import MetaRows, print_lines, print_llama_runs, print_table1, print_table2, target_lines
from results import ModelResult

EXAMPLE_PROJECT = "Example project (fresh interpreters, interleaved, -p no:cacheprovider):"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the transformers models and the 7B decoder")
    parser.add_argument("--models", help=f"comma-separated subset of: {', '.join(MODELS)}")
    parser.add_argument(
        "--reps", type=int, default=9, help="timed runs per tool after the warm-up (default 9; 5 for slow models)"
    )
    parser.add_argument(
        "--threads", type=int, help="torch.set_num_threads for the whole run (default: torch's default)"
    )
    parser.add_argument(
        "--no-example-project", action="store_true", help="skip timing pytest --netbudget on example_project"
    )
    parser.add_argument(
        "--example-project-only",
        action="store_true",
        help="only time plain pytest against pytest --netbudget on example_project (fresh processes, interleaved)",
    )
    parser.add_argument(
        "--example-rounds", type=int, default=7, help="rounds of that timing, each command once a round (default 7)"
    )
    args = parser.parse_args()
    args.names = list(MODELS)
    if args.models:
        args.names = [name.strip() for name in args.models.split(",") if name.strip()]
        unknown = [name for name in args.names if name not in MODELS]
        if unknown:
            parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if args.quick:
        args.names = [name for name in args.names if not MODELS[name].transformers]
    return args


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, python {sys.version.split()[0]}, "
        f"load average {load_average()}"
    )
    if args.example_project_only:
        print_lines(EXAMPLE_PROJECT, measure_example_project(args.example_rounds))
        print(f"\ntotal runtime {time.perf_counter() - started:.0f} s; load average at the end {load_average()}")
        return
    built_on_cpu = [name for name in args.names if not MODELS[name].meta_only]
    results: list[ModelResult] = []
    for name in built_on_cpu:
        step = time.perf_counter()
        results.append(measure_model(MODELS[name], args.reps))
        print(f"  measured {name} in {time.perf_counter() - step:.1f} s", flush=True)
    meta_rows: MetaRows = []
    for name in built_on_cpu:
        step = time.perf_counter()
        meta_rows.append((f"{name} [meta]", measure_meta_in_process(name, 2 * args.reps)))
        print(f"  measured {name} built on meta in {time.perf_counter() - step:.1f} s", flush=True)
    llama_runs = None
    if "llama_7b_meta" in args.names:
        llama_result, llama_runs = llama_rows(180)
        results.append(llama_result)
        print("  measured llama_7b_meta (subprocesses)", flush=True)

    print_table1(results)
    print_table2([r for r in results if r.name != "llama_7b_meta"], args.reps, meta_rows)
    if llama_runs is not None:
        print_llama_runs(llama_runs)
    print_lines("Performance targets:", target_lines(results, meta_rows, llama_runs))
    if not args.no_example_project:
        print_lines(EXAMPLE_PROJECT, measure_example_project(args.example_rounds))
    notes = [attention_probe()] + [f"{result.name}: {note}" for result in results for note in result.notes]
    print_lines("Notes (measured disagreements):", notes, bullet="- ")
    print(f"\ntotal runtime {time.perf_counter() - started:.0f} s; load average at the end {load_average()}")


if __name__ == "__main__":
    main()
