"""Running the tools and timing them.

- :func:`measure_model`: a model built on CPU; every tool once for its figures, then timed
  rounds, each run paired with a bare forward just before it, the tools interleaved;
- :func:`measure_meta_in_process`: the model built on meta, netbudget and FlopCounterMode
  against a bare meta forward;
- :func:`llama_rows`: the 7B decoder on meta, each tool in a fresh subprocess (this file run
  as a script: ``python benchmarks/measure.py MODEL:TOOL[,TOOL]``) so that its time and peak
  RSS (VmHWM) are its own;
- :func:`measure_example_project`: cold ``pytest --netbudget`` against plain ``pytest`` on
  the example project.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import signal
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from diagnose import NetbudgetProfiles, device_consistency, diagnose, error_notes
from models import MODELS, BenchModel
from results import ModelResult, Outcome
from tools import TOOL_NAMES, Inputs, Tool, first_line, run_bare, run_flop_counter, run_netbudget, tools_for

ROOT = Path(__file__).resolve().parent.parent
PER_TOOL_BUDGET = 25.0  # seconds of timed runs per tool per model; then it stops repeating


# --------------------------------------------------------------------------------------
# Time limits and process memory
# --------------------------------------------------------------------------------------


class ToolTimeout(Exception):
    """A tool ran past its time limit on one model."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ToolTimeout in the main thread after ``seconds`` (checked between bytecodes,
    so a single long C++ kernel finishes first)."""

    def expire(signum: int, frame: Any) -> None:
        raise ToolTimeout(f"over {seconds:.0f}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def proc_status_kib(field_name: str) -> int:
    """VmRSS / VmHWM of this process, in KiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return -1


def call_tool(tool: Tool, model: torch.nn.Module, inputs: Inputs, limit: float) -> tuple[float, Any]:
    with time_limit(limit):
        start = time.perf_counter()
        result = tool(model, inputs)
        return time.perf_counter() - start, result


# --------------------------------------------------------------------------------------
# Timed rounds
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """No collection inside the timed runs: a pause (gc.collect()) before a run lets the
    OpenMP workers sleep, and on a loaded 2-core machine waking them can cost more than a
    small model's whole forward."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def timed_rounds(
    tools: dict[str, Tool],
    outcomes: dict[str, Outcome],
    model: torch.nn.Module,
    inputs: Inputs,
    reps: int,
    limit: float,
) -> None:
    """Each timed run of a tool is paired with a bare forward run just before it, and the
    tools take turns (the order rotated every round), so that load from other processes on
    the machine hits the tool and its reference alike. A tool stops repeating once its
    timed runs add up to PER_TOOL_BUDGET seconds."""
    names = [name for name in tools if name != "bare forward" and outcomes[name].error is None]
    bare = outcomes["bare forward"]
    with _no_collection():
        for round_index in range(reps):
            shift = round_index % max(len(names), 1)
            for name in names[shift:] + names[:shift]:
                outcome = outcomes[name]
                if sum(outcome.times) > PER_TOOL_BUDGET or outcome.error is not None:
                    continue
                try:
                    reference, _ = call_tool(run_bare, model, inputs, limit)
                    elapsed, _ = call_tool(tools[name], model, inputs, limit)
                except ToolTimeout:
                    outcome.error = "ToolTimeout"
                    continue
                bare.times.append(reference)
                outcome.times.append(elapsed)
                outcome.ratios.append(elapsed / reference)


# --------------------------------------------------------------------------------------
# A model built on CPU, and the same model built on meta
# --------------------------------------------------------------------------------------


def measure_model(bench: BenchModel, reps: int) -> ModelResult:
    """Every tool on the CPU-built model: a warm-up round for the figures, the timed rounds, the notes."""
    torch.manual_seed(0)
    model = bench.build().eval()
    inputs = bench.make_inputs("cpu")
    expected_params, expected_macs = bench.expected()
    tools: dict[str, Tool] = {"bare forward": run_bare}
    tools.update(tools_for(bench))
    outcomes = {name: Outcome() for name in tools}

    # warm-up round: gives the figures; a tool that fails here is not timed
    bare_time, _ = call_tool(run_bare, model, inputs, 120)
    bare_time = min(bare_time, call_tool(run_bare, model, inputs, 120)[0])  # the first call warms up
    limit = max(30.0, 40 * bare_time)
    if bare_time > 0.15:
        reps = min(reps, 5)
    for name, tool in tools.items():
        try:
            _, (params, macs) = call_tool(tool, model, inputs, limit)
            outcomes[name].params, outcomes[name].macs = params, macs
        except BaseException as error:  # noqa: B036 - any failure of a tool is a result
            if isinstance(error, KeyboardInterrupt):
                raise
            outcomes[name].error = type(error).__name__
            outcomes[name].detail = first_line(error)

    timed_rounds(tools, outcomes, model, inputs, reps, limit)
    result = ModelResult(bench.name, expected_params, expected_macs, outcomes)
    profiles = NetbudgetProfiles(model, inputs)
    result.notes = diagnose(bench, model, inputs, result, profiles, "cpu") + device_consistency(profiles)
    del model, profiles
    gc.collect()
    return result


def build_on_meta(bench: BenchModel) -> tuple[torch.nn.Module, Inputs]:
    with torch.device("meta"):
        model = bench.build()
    return model.eval(), bench.make_inputs("meta")


def measure_meta_in_process(name: str, reps: int) -> dict[str, Outcome]:
    """The model built under ``torch.device("meta")``: netbudget and FlopCounterMode on meta
    against a bare meta forward (which still runs PyTorch's meta kernels, some in Python)."""
    model, inputs = build_on_meta(MODELS[name])
    tools = {"bare forward": run_bare, "netbudget": run_netbudget("meta"), "FlopCounterMode": run_flop_counter}
    outcomes = {tool: Outcome() for tool in tools}
    bare_time = None
    for tool, function in tools.items():
        try:
            elapsed, (params, macs) = call_tool(function, model, inputs, 60)
            outcomes[tool].params, outcomes[tool].macs = params, macs
            bare_time = elapsed if tool == "bare forward" else bare_time
        except Exception as error:
            outcomes[tool].error = type(error).__name__
            outcomes[tool].detail = first_line(error)
    if bare_time is not None and bare_time > 0.3:
        reps = min(reps, 3)
    timed_rounds(tools, outcomes, model, inputs, reps, 60)
    return outcomes


# --------------------------------------------------------------------------------------
# The 7B decoder: subprocesses
# --------------------------------------------------------------------------------------


def child_main(spec: str) -> None:
    """``MODEL:TOOL[,TOOL]``: build MODEL on meta, run each TOOL cold then warm, print JSON.
    The pseudo-tool ``notes`` diagnoses the tools run before it."""
    model_name, tool_list = spec.split(":")
    bench = MODELS[model_name]
    start = time.perf_counter()
    model, inputs = build_on_meta(bench)
    report: dict[str, Any] = {
        "build_s": time.perf_counter() - start,
        "rss_before_kib": proc_status_kib("VmRSS"),
        "hwm_before_kib": proc_status_kib("VmHWM"),
    }
    every = {"bare forward": run_bare, **tools_for(bench, netbudget_device="meta")}
    for tool in tool_list.split(","):
        if tool == "notes":  # diagnose the tools run so far, as for the in-process models
            result = ModelResult(model_name, *bench.expected(), outcomes=outcomes_from(report))
            report["notes"] = diagnose(bench, model, inputs, result, NetbudgetProfiles(model, inputs), "meta")
            continue
        entry: dict[str, Any] = {}
        try:
            entry["cold_s"], (entry["params"], entry["macs"]) = call_tool(every[tool], model, inputs, 120)
            entry["warm_s"], _ = call_tool(every[tool], model, inputs, 120)
        except Exception as error:
            entry["error"] = type(error).__name__
            entry["detail"] = first_line(error)
        entry["hwm_kib"] = proc_status_kib("VmHWM")
        report[tool] = entry
    print("CHILD-JSON " + json.dumps(report))


def run_child(spec: str, timeout: float) -> dict[str, Any]:
    """Run :func:`child_main` in a fresh interpreter and return its JSON report.

    Peak memory is the child's own VmHWM, read inside it: ``getrusage(RUSAGE_CHILDREN)``
    would not do, because Linux carries ``ru_maxrss`` across the fork, so a child forked
    from this (by then large) process reports this process's size as its maximum."""
    try:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), spec],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return {"error": "TimeoutExpired"}
    for line in done.stdout.splitlines():
        if line.startswith("CHILD-JSON "):
            return json.loads(line[len("CHILD-JSON ") :])
    return {"error": f"child exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}


def outcomes_from(report: dict[str, Any]) -> dict[str, Outcome]:
    """Outcomes from a child's JSON report; netbudget ran on meta there, so it is also nb[meta]."""
    outcomes = {}
    for tool in TOOL_NAMES:
        entry = report.get("netbudget" if tool == "nb[meta]" else tool)
        if isinstance(entry, dict):
            outcomes[tool] = Outcome(
                entry.get("params"), entry.get("macs"), entry.get("error"), entry.get("detail", "")
            )
    return outcomes


def llama_rows(timeout: float) -> tuple[ModelResult, dict[str, Any]]:
    """The 7B decoder: each timed tool alone in a fresh subprocess (time, peak RSS), then one
    subprocess that runs every tool for table 1 and diagnoses the disagreements."""
    bench = MODELS["llama_7b_meta"]
    runs = {
        tool: run_child(f"llama_7b_meta:{tool}", timeout) for tool in ("bare forward", "netbudget", "FlopCounterMode")
    }
    tools = [tool for tool in TOOL_NAMES if tool != "nb[meta]"]
    counts = run_child(f"llama_7b_meta:{','.join(tools)},notes", 3 * timeout)
    outcomes = outcomes_from(counts)
    if "error" in counts:
        outcomes = {tool: Outcome(error="ChildFailed", detail=counts["error"]) for tool in tools}
    outcomes.pop("nb[meta]", None)
    result = ModelResult("llama_7b_meta", *bench.expected(), outcomes=outcomes)
    result.notes = counts.get("notes") or error_notes(result)
    return result, runs


# --------------------------------------------------------------------------------------
# Cold `pytest --netbudget` on the example project
# --------------------------------------------------------------------------------------


def has_netbudget_table(pyproject: Path) -> bool:
    if not pyproject.exists():
        return False
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(pyproject.read_text())
    except Exception:
        return False
    return "netbudget" in data.get("tool", {})


def measure_example_project(rounds: int = 7) -> list[str]:
    """What ``--netbudget`` costs a user: in example_project, plain ``pytest`` against ``pytest
    --netbudget``, each a fresh interpreter (as a CI step pays it: Python, pytest, its plugins, torch,
    the project's tests), cache plugin off, ``rounds`` rounds, the two commands' order alternating
    from round to round so that drift on a shared machine hits both alike. The cost is the median of
    the per-round differences (and ratios), with their range."""
    project = ROOT / "example_project"
    if not has_netbudget_table(project / "pyproject.toml"):
        return [
            "cold `pytest --netbudget` on example_project: not yet measurable "
            "(example_project/pyproject.toml has no [tool.netbudget] table yet)"
        ]
    commands = {
        "plain pytest": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        "pytest --netbudget": [sys.executable, "-m", "pytest", "--netbudget", "-q", "-p", "no:cacheprovider"],
    }
    timings: dict[str, list[float]] = {label: [] for label in commands}
    tails: dict[str, str] = {}
    for round_index in range(rounds):
        order = list(commands) if round_index % 2 == 0 else list(reversed(commands))
        for label in order:
            start = time.perf_counter()
            try:
                done = subprocess.run(commands[label], cwd=project, capture_output=True, text=True, timeout=300)
            except subprocess.TimeoutExpired:
                return [f"{label}: timed out after 300 s"]
            timings[label].append(time.perf_counter() - start)
            tails[label] = f"exit {done.returncode}: " + (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    lines = [
        f"{label:20s} {statistics.median(values):6.2f} s median of {rounds} "
        f"({min(values):.2f}-{max(values):.2f} s; {tails[label]})"
        for label, values in timings.items()
    ]
    plain, ours = timings["plain pytest"], timings["pytest --netbudget"]
    costs = [netbudget - bare for bare, netbudget in zip(plain, ours)]
    ratios = [netbudget / bare for bare, netbudget in zip(plain, ours)]
    lines.append(
        f"--netbudget costs {statistics.median(costs):+.2f} s over plain pytest, median of {rounds} paired rounds "
        f"({min(costs):+.2f} to {max(costs):+.2f} s), {statistics.median(ratios):.2f}x "
        f"({min(ratios):.2f}-{max(ratios):.2f}x)"
    )
    return lines


if __name__ == "__main__":  # a child of run_child
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    child_main(sys.argv[1])
