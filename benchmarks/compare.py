"""Accuracy and speed of pytest-netbudget against the usual PyTorch counters.

    python benchmarks/compare.py              # everything (< 10 minutes on a 2-core CPU box)
    python benchmarks/compare.py --quick      # skip the transformers models and the 7B decoder
    python benchmarks/compare.py --models cnn,resnet50

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
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from models import MODELS, BenchModel  # noqa: E402

TOLERANCE = 0.01  # a figure more than 1% from the hand-derived one is marked
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


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Swallow what the tools print (ptflops prints its exceptions instead of raising)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield buffer


# --------------------------------------------------------------------------------------
# The tools: each returns (params or None, MACs)
# --------------------------------------------------------------------------------------

Inputs = tuple


def run_bare(model: torch.nn.Module, inputs: Inputs) -> tuple[None, None]:
    with torch.no_grad():
        model(*inputs)
    return None, None


def run_netbudget(device: str) -> Callable[[torch.nn.Module, Inputs], tuple[int, int]]:
    def tool(model: torch.nn.Module, inputs: Inputs) -> tuple[int, int]:
        from pytest_netbudget import profile

        result = profile(model, inputs=inputs, device=device)
        return result.params, result.macs

    return tool


def run_flop_counter(model: torch.nn.Module, inputs: Inputs) -> tuple[None, int]:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return None, counter.get_total_flops() // 2


def run_thop(model: torch.nn.Module, inputs: Inputs) -> tuple[int, int]:
    import thop

    with quiet():
        macs, params = thop.profile(model, inputs=inputs, verbose=False)
    return int(params), int(macs)


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:260] if lines else ""


class ToolFailed(Exception):
    """Stands for the exception a tool caught and printed instead of raising."""


def run_ptflops(backend: str, bench: BenchModel) -> Callable[[torch.nn.Module, Inputs], tuple[int, int]]:
    def tool(model: torch.nn.Module, inputs: Inputs) -> tuple[int, int]:
        from ptflops import get_model_complexity_info

        with quiet() as printed, torch.no_grad():
            macs, params = get_model_complexity_info(
                model,
                bench.input_res,
                as_strings=False,
                print_per_layer_stat=False,
                input_constructor=lambda _res: inputs[0],
                backend=backend,
                ost=printed,
            )
        if macs is None:
            # ptflops prints "<class 'RuntimeError'>: ..." and returns None: re-raise by name
            found = re.search(r"<class '([\w.]+)'>: (.*)", printed.getvalue())
            name = found.group(1).rsplit(".", 1)[-1] if found else "ToolFailed"
            raise type(name, (ToolFailed,), {})(found.group(2) if found else printed.getvalue()[-300:])
        return int(params), int(macs)

    return tool


def run_torchinfo(model: torch.nn.Module, inputs: Inputs) -> tuple[int, int]:
    from torchinfo import summary

    with quiet():
        stats = summary(model, input_data=list(inputs), verbose=0)
    return int(stats.total_params), int(stats.total_mult_adds)


def run_fvcore(model: torch.nn.Module, inputs: Inputs) -> tuple[int, int]:
    from fvcore.nn import FlopCountAnalysis, parameter_count

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with quiet(), torch.no_grad():
        analysis = FlopCountAnalysis(model, inputs)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        macs = analysis.total()  # fvcore's "flops" are MACs
        params = parameter_count(model)[""]
    return int(params), int(macs)


def tools_for(bench: BenchModel) -> dict[str, Callable[[torch.nn.Module, Inputs], tuple[Any, Any]]]:
    return {
        "netbudget": run_netbudget("cpu"),
        "nb[meta]": run_netbudget("meta"),
        "FlopCounterMode": run_flop_counter,
        "thop": run_thop,
        "ptflops[pytorch]": run_ptflops("pytorch", bench),
        "ptflops[aten]": run_ptflops("aten", bench),
        "torchinfo": run_torchinfo,
        "fvcore": run_fvcore,
    }


TOOL_NAMES = list(tools_for(next(iter(MODELS.values()))))


# --------------------------------------------------------------------------------------
# Measuring one model
# --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    params: int | None = None
    macs: int | None = None
    error: str | None = None
    detail: str = ""  # the first line of the error message
    times: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # each run / the bare forward run just before it

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def median_ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None


@dataclass
class ModelResult:
    name: str
    expected_params: int
    expected_macs: int
    outcomes: dict[str, Outcome]
    notes: list[str] = field(default_factory=list)


def call_tool(tool: Callable, model: torch.nn.Module, inputs: Inputs, limit: float) -> tuple[float, Any]:
    with time_limit(limit):
        start = time.perf_counter()
        result = tool(model, inputs)
        return time.perf_counter() - start, result


def timed_rounds(
    tools: dict[str, Callable],
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
    # No collection inside the timed runs: a pause (gc.collect()) before a run lets the
    # OpenMP workers sleep, and on a loaded 2-core machine waking them can cost more
    # than a small model's whole forward.
    gc.collect()
    gc.disable()
    try:
        _rounds(tools, outcomes, model, inputs, reps, limit, names, bare)
    finally:
        gc.enable()


def _rounds(
    tools: dict[str, Callable],
    outcomes: dict[str, Outcome],
    model: torch.nn.Module,
    inputs: Inputs,
    reps: int,
    limit: float,
    names: list[str],
    bare: Outcome,
) -> None:
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


def measure_model(bench: BenchModel, reps: int, only: list[str] | None = None) -> ModelResult:
    torch.manual_seed(0)
    model = bench.build().eval()
    inputs = bench.make_inputs("cpu")
    expected_params, expected_macs = bench.expected()
    tools: dict[str, Callable] = {"bare forward": run_bare}
    tools.update({name: tool for name, tool in tools_for(bench).items() if only is None or name in only})
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
    result.notes = diagnose(bench, model, inputs, result) + device_consistency(model, inputs)
    del model
    gc.collect()
    return result


# --------------------------------------------------------------------------------------
# Diagnosis: why a tool disagrees, from what actually ran
# --------------------------------------------------------------------------------------


class OpRecorder(TorchDispatchMode):
    """The aten ops a forward runs: calls, and MACs by netbudget's formula for each op."""

    def __init__(self) -> None:
        from pytest_netbudget.formulas import FormulaSet

        super().__init__()
        self.calls: Counter[str] = Counter()
        self.macs: Counter[str] = Counter()
        self.packets: dict[str, Any] = {}
        self.formula_set = FormulaSet()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        from pytest_netbudget.formulas import OpCall

        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        self.calls[name] += 1
        self.packets[name] = func.overloadpacket
        formula = self.formula_set.for_op(func)
        if formula is not None and not self.formula_set.is_free(formula):
            self.macs[name] += formula(OpCall(func, args, kwargs, out)).macs
        return out


def record_ops(model: torch.nn.Module, inputs: Inputs) -> OpRecorder:
    recorder = OpRecorder()
    with torch.no_grad(), recorder:
        model(*inputs)
    return recorder


def _off(value: int | None, expected: int) -> float | None:
    if value is None or expected == 0:
        return None
    return (value - expected) / expected


def _g(value: float) -> str:
    return human(value) if abs(value) >= 1 else "0"


def _by_type(model: torch.nn.Module, per_path: dict[str, float]) -> Counter[str]:
    types = {path: type(module).__name__ for path, module in model.named_modules()}
    counted: Counter[str] = Counter()
    for path, value in per_path.items():
        counted[types.get(path, "?")] += value
    return counted


def netbudget_by_type(model: torch.nn.Module, inputs: Inputs) -> Counter[str]:
    """MACs each module type does in its own forward (netbudget's rows; on meta)."""
    from pytest_netbudget import profile

    return _by_type(model, {row.path: row.macs for row in profile(model, inputs=inputs, device="meta").layers})


def thop_by_type(model: torch.nn.Module, inputs: Inputs) -> Counter[str]:
    import thop

    with quiet():
        _, _, tree = thop.profile(model, inputs=inputs, verbose=False, ret_layer_info=True)
    per_path: dict[str, float] = {}

    def walk(prefix: str, node: dict) -> None:
        for name, (ops, _params, children) in node.items():
            path = f"{prefix}.{name}" if prefix else name
            if children:
                walk(path, children)
            else:
                per_path[path] = ops

    walk("", tree)
    return _by_type(model, per_path)


def torchinfo_by_type(model: torch.nn.Module, inputs: Inputs) -> Counter[str]:
    from torchinfo import summary

    with quiet():
        stats = summary(model, input_data=list(inputs), verbose=0)
    counted: Counter[str] = Counter()
    for layer in stats.summary_list:
        if layer.is_leaf_layer:
            counted[layer.class_name] += layer.macs
    return counted


_PTFLOPS_LINE = re.compile(r"^\s*\((\w+)\): (\w+)\(.*?% Params, ([\d.]+) ([KMGT]?)Mac, .*\)\s*$")
_PTFLOPS_UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def ptflops_by_type(model: torch.nn.Module, inputs: Inputs, bench: BenchModel, total: int) -> Counter[str]:
    """From ptflops' own per-layer print (rounded to 2 decimals); what no module holds is
    what its patched torch.nn.functional / tensor ops counted."""
    from ptflops import get_model_complexity_info

    with quiet() as printed, torch.no_grad():
        get_model_complexity_info(
            model, bench.input_res, as_strings=False, input_constructor=lambda _res: inputs[0], ost=printed
        )
    counted: Counter[str] = Counter()
    for line in printed.getvalue().splitlines():
        found = _PTFLOPS_LINE.match(line)
        if found:
            counted[found.group(2)] += float(found.group(3)) * _PTFLOPS_UNITS[found.group(4)]
    counted["(ptflops patched torch functions)"] = total - sum(counted.values())
    return counted


def fvcore_by_op(model: torch.nn.Module, inputs: Inputs) -> tuple[Counter[str], Counter[str]]:
    from fvcore.nn import FlopCountAnalysis

    with quiet(), torch.no_grad():
        analysis = FlopCountAnalysis(model, inputs)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return Counter(analysis.by_operator()), Counter(analysis.unsupported_ops())


def _differences(tool: Counter[str], reference: Counter[str], total: int) -> str:
    """Categories where a tool counts more or less than the reference, largest first."""
    keys = set(tool) | set(reference)
    diffs = [(key, tool.get(key, 0) - reference.get(key, 0)) for key in keys]
    diffs = [(key, diff) for key, diff in diffs if abs(diff) > 0.001 * total]
    diffs.sort(key=lambda item: -abs(item[1]))
    return ", ".join(f"{key} {'+' if diff > 0 else '-'}{_g(abs(diff))}" for key, diff in diffs[:6]) or "spread thinly"


def device_consistency(model: torch.nn.Module, inputs: Inputs) -> list[str]:
    """netbudget's figures for the same model on cpu and on meta (the spec wants the counts equal)."""
    from pytest_netbudget import profile

    on_cpu = profile(model, inputs=inputs, device="cpu")
    on_meta = profile(model, inputs=inputs, device="meta")
    differ = [
        f"{name} {getattr(on_cpu, name):,.4f} on cpu vs {getattr(on_meta, name):,.4f} on meta"
        if isinstance(getattr(on_cpu, name), float)
        else f"{name} {getattr(on_cpu, name):,} on cpu vs {getattr(on_meta, name):,} on meta"
        for name in ("params", "macs", "flops", "activations_mb")
        if getattr(on_cpu, name) != getattr(on_meta, name)
    ]
    ops = sorted(set(on_cpu.uncounted_ops) | set(on_meta.uncounted_ops))
    notes = [f"netbudget differs by device: {'; '.join(differ)}"] if differ else []
    if ops:
        notes.append(f"netbudget uncounted ops: {', '.join(ops)}")
    return notes


def attention_probe() -> str:
    """activations_mb of one causal SDPA call (1 x 8 heads x 2048 tokens x 64) on cpu and on meta:
    CPU runs a fused kernel, meta PyTorch's math path, which materialises the score matrix."""
    from pytest_netbudget import profile

    class Attention(torch.nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)

    query = torch.randn(1, 8, 2048, 64)
    on_cpu = profile(Attention(), inputs=(query,), device="cpu")
    on_meta = profile(Attention(), inputs=(query,), device="meta")
    return (
        f"probe, one causal SDPA (1x8x2048x64): netbudget activations_mb {on_cpu.activations_mb:.2f} on cpu vs "
        f"{on_meta.activations_mb:.2f} on meta (MACs {'equal' if on_cpu.macs == on_meta.macs else 'differ'}, "
        f"FLOPs {'equal' if on_cpu.flops == on_meta.flops else 'differ'})"
    )


def error_notes(result: ModelResult) -> list[str]:
    return [
        f"{tool} raised {outcome.error}: {outcome.detail}"
        for tool, outcome in result.outcomes.items()
        if outcome.error and tool not in ("netbudget", "nb[meta]")
    ]


def diagnose(bench: BenchModel, model: torch.nn.Module, inputs: Inputs, result: ModelResult) -> list[str]:
    """One line per tool figure that is more than 1% off, with what was measured about why.
    The reference split (by op and by module type) is netbudget's, used only when its own
    total equals the hand-derived figure."""
    notes = error_notes(result)
    outcomes = result.outcomes
    expected_macs, expected_params = result.expected_macs, result.expected_params

    def pct(value: float) -> str:
        return f"{value * 100:+.1f}%"

    def off_tools(metric: str, expected: int) -> list[str]:
        found = []
        for tool, outcome in outcomes.items():
            off = _off(getattr(outcome, metric), expected)
            if tool not in ("bare forward", "netbudget", "nb[meta]") and off is not None and abs(off) > TOLERANCE:
                found.append(tool)
        return found

    for tool in ("netbudget", "nb[meta]"):
        outcome = outcomes.get(tool)
        if outcome is None:
            continue
        for metric, expected in (("params", expected_params), ("macs", expected_macs)):
            off = _off(getattr(outcome, metric), expected)
            if outcome.error or (off is not None and abs(off) > TOLERANCE):
                notes.append(f"{tool} {metric}: {outcome.error or pct(off)} -- an engine bug to look at")
    reference_ok = outcomes.get("nb[meta]", Outcome()).macs == expected_macs

    unique = {id(p) for p in model.parameters()}
    tied = len(list(model.named_parameters(remove_duplicate=False))) - len(unique)
    for tool in off_tools("params", expected_params):
        extra = outcomes[tool].params - expected_params
        why = ""
        if tied and extra > 0:
            why = f": the model has {tied} tied parameter(s) (a tensor held by two modules), counted once per holder"
        elif tool == "thop" and extra < 0:
            why = ": thop counts only the parameters of modules it has a rule for"
        notes.append(f"{tool} params {pct(_off(outcomes[tool].params, expected_params))} ({extra:+,}){why}")

    macs_off = off_tools("macs", expected_macs)
    if not macs_off:
        return notes
    recorder = record_ops(model, inputs)
    by_op = Counter({name: macs for name, macs in recorder.macs.items() if macs})
    by_type = netbudget_by_type(model, inputs) if reference_ok else Counter()
    if reference_ok:
        split = ", ".join(f"{name} {_g(macs)}" for name, macs in by_op.most_common(5))
        notes.append(f"expected MACs by aten op (netbudget's formulas; they sum to the hand figure): {split}")
    for tool in macs_off:
        outcome = outcomes[tool]
        head = f"{tool} MACs {pct(_off(outcome.macs, expected_macs))} ({outcome.macs - expected_macs:+,})"
        try:
            if tool == "FlopCounterMode":
                missing = [f"{op} ({_g(by_op[op])})" for op in by_op if recorder.packets[op] not in flop_registry]
                notes.append(f"{head}: no formula for {', '.join(missing) or '-'}")
            elif tool == "ptflops[aten]":
                from ptflops.aten_ops import ATEN_OPS_MAPPING

                missing = [f"{op} ({_g(by_op[op])})" for op in by_op if recorder.packets[op] not in ATEN_OPS_MAPPING]
                notes.append(f"{head}: counts only mm/matmul/addmm/bmm/convolution; not {', '.join(missing) or '-'}")
            elif tool == "thop" and reference_ok:
                notes.append(
                    f"{head}: by module type vs expected: {_differences(thop_by_type(model, inputs), by_type, expected_macs)}"
                )
            elif tool == "torchinfo" and reference_ok:
                split = _differences(torchinfo_by_type(model, inputs), by_type, expected_macs)
                notes.append(
                    f"{head}: by module type vs expected: {split} (torchinfo: weight/bias numel x batch size, x output spatial size only for *Conv* classes)"
                )
            elif tool == "ptflops[pytorch]" and reference_ok:
                split = _differences(ptflops_by_type(model, inputs, bench, outcome.macs), by_type, expected_macs)
                notes.append(f"{head}: by module type vs expected: {split}")
            elif tool == "fvcore":
                counted, unsupported = fvcore_by_op(model, inputs)
                relevant = [f"{op} x{n}" for op, n in unsupported.items() if _is_matmul_like(op)]
                split = ", ".join(f"{op} {_g(value)}" for op, value in counted.most_common(5))
                notes.append(
                    f"{head}: fvcore counted {split}; unsupported matmul-like ops: {', '.join(relevant) or '-'}"
                )
            else:
                notes.append(head)
        except Exception as error:  # a diagnosis that fails must not stop the benchmark
            notes.append(f"{head} (diagnosis failed: {type(error).__name__})")
    return notes


def _is_matmul_like(name: str) -> bool:
    return any(key in name for key in ("attention", "rnn", "lstm", "gru", "conv", "mm", "linear", "einsum", "matmul"))


# --------------------------------------------------------------------------------------
# Meta device: ResNet-50 in process, the 7B decoder in subprocesses
# --------------------------------------------------------------------------------------


def measure_meta_in_process(name: str, reps: int) -> dict[str, Outcome]:
    """The model built under ``torch.device("meta")``: netbudget and FlopCounterMode on meta
    against a bare meta forward (which still runs PyTorch's meta kernels, some in Python)."""
    bench = MODELS[name]
    with torch.device("meta"):
        model = bench.build()
    model.eval()
    inputs = bench.make_inputs("meta")
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


def child_main(spec: str) -> None:
    """``--child MODEL:TOOL[,TOOL]``: build MODEL on meta, run each TOOL cold then warm, print JSON."""
    model_name, tool_list = spec.split(":")
    bench = MODELS[model_name]
    start = time.perf_counter()
    with torch.device("meta"):
        model = bench.build()
    model.eval()
    inputs = bench.make_inputs("meta")
    report: dict[str, Any] = {
        "build_s": time.perf_counter() - start,
        "rss_before_kib": proc_status_kib("VmRSS"),
        "hwm_before_kib": proc_status_kib("VmHWM"),
    }
    every = {
        "bare forward": run_bare,
        "netbudget": run_netbudget("meta"),
        "FlopCounterMode": run_flop_counter,
        "thop": run_thop,
        "ptflops[pytorch]": run_ptflops("pytorch", bench),
        "ptflops[aten]": run_ptflops("aten", bench),
        "torchinfo": run_torchinfo,
        "fvcore": run_fvcore,
    }
    for tool in tool_list.split(","):
        if tool == "notes":  # diagnose the tools run so far, as for the in-process models
            result = ModelResult(model_name, *bench.expected(), outcomes=outcomes_from(report))
            report["notes"] = diagnose(bench, model, inputs, result)
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
    """Run ``--child`` in a fresh interpreter and return its JSON report.

    Peak memory is the child's own VmHWM, read inside it: ``getrusage(RUSAGE_CHILDREN)``
    would not do, because Linux carries ``ru_maxrss`` across the fork, so a child forked
    from this (by then large) process reports this process's size as its maximum."""
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--child", spec],
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


def measure_example_project(runs: int = 3) -> list[str]:
    """Fresh interpreters in example_project: plain ``pytest -q`` against ``pytest --netbudget -q``,
    both with the cache plugin off, alternating, ``runs`` times each (median wall time)."""
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
    for _ in range(runs):
        for label, command in commands.items():
            start = time.perf_counter()
            try:
                done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=300)
            except subprocess.TimeoutExpired:
                return [f"{label}: timed out after 300 s"]
            timings[label].append(time.perf_counter() - start)
            tails[label] = f"exit {done.returncode}: " + (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    medians = {label: statistics.median(values) for label, values in timings.items()}
    lines = [f"{label:20s} {medians[label]:6.2f} s median of {runs}  ({tails[label]})" for label in commands]
    plain, ours = medians["plain pytest"], medians["pytest --netbudget"]
    lines.append(f"--netbudget costs {ours - plain:+.2f} s over plain pytest ({ours / plain:.2f}x)")
    return lines


# --------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------


def human(value: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{unit}"
    return f"{value:.4g}"


def cell(value: int | None, expected: int, error: str | None) -> str:
    if error:
        return f"error: {error}"
    if value is None:
        return "-"
    off = _off(value, expected)
    text = human(value)
    if off is not None and abs(off) > TOLERANCE:
        text += f" !{off * 100:+.1f}%"
    return text


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(row[index])) for row in [header, *rows]) for index in range(len(header))]
    line = "  ".join(
        name.ljust(width) if index == 0 else name.rjust(width)
        for index, (name, width) in enumerate(zip(header, widths))
    )
    print(line)
    print("-" * len(line))
    for row in rows:
        print(
            "  ".join(
                str(value).ljust(width) if index == 0 else str(value).rjust(width)
                for index, (value, width) in enumerate(zip(row, widths))
            )
        )


def print_table1(results: list[ModelResult]) -> None:
    print(
        "\nTable 1: parameters and MACs per tool (MACs for every tool; '!' = more than 1% off the hand-derived figure)"
    )
    header = ["model / metric", "hand-derived", *TOOL_NAMES]
    rows = []
    for result in results:
        for metric, expected in (("params", result.expected_params), ("MACs", result.expected_macs)):
            row = [f"{result.name} {metric}", human(expected)]
            for tool in TOOL_NAMES:
                outcome = result.outcomes.get(tool)
                if outcome is None:
                    row.append("n/a")
                else:
                    row.append(cell(getattr(outcome, metric.lower()), expected, outcome.error))
            rows.append(row)
    print_table(header, rows)


def ratio_cell(outcome: Outcome | None, bare: float | None, reps: int) -> str:
    if outcome is None:
        return "n/a"
    if outcome.error:
        return f"error: {outcome.error}"
    if outcome.median_ratio is None:
        return "-"
    text = f"{outcome.median_ratio:.2f}x"
    if len(outcome.ratios) < reps:
        text += f" (n={len(outcome.times)})"
    return text


def print_table2(results: list[ModelResult], reps: int, meta_rows: list[tuple[str, dict[str, Outcome]]]) -> None:
    print(
        f"\nTable 2: time per call as a multiple of a bare no_grad forward (median of up to {reps} paired runs after a warm-up)"
    )
    header = ["model", "bare forward", *TOOL_NAMES]
    rows = []
    for result in results:
        bare = result.outcomes["bare forward"].median
        row = [result.name, f"{bare * 1000:.1f} ms" if bare else "-"]
        row += [ratio_cell(result.outcomes.get(tool), bare, reps) for tool in TOOL_NAMES]
        rows.append(row)
    for label, outcomes in meta_rows:
        bare = outcomes["bare forward"].median
        row = [label, f"{bare * 1000:.1f} ms" if bare else "-"]
        row += [ratio_cell(outcomes.get(tool), bare, reps) if tool in outcomes else "" for tool in TOOL_NAMES]
        rows.append(row)
    print_table(header, rows)
    print(
        "  nb[meta] = netbudget with device='meta' on the CPU-built model (stateless meta copies), vs the CPU forward"
    )


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


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


def target_lines(
    results: list[ModelResult], meta_rows: list[tuple[str, dict[str, Outcome]]], llama_runs: dict[str, Any] | None
) -> list[str]:
    """The spec's speed targets, judged on this run's measurements."""

    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    lines = []
    resnet = next((result for result in results if result.name == "resnet50"), None)
    if resnet is not None:
        ours = resnet.outcomes["netbudget"].median_ratio
        theirs = resnet.outcomes["FlopCounterMode"].median_ratio
        if ours is not None and theirs is not None:
            lines.append(f"{verdict(ours <= 1.2)}  ResNet-50 on CPU <= 1.2x a bare forward: {ours:.2f}x")
            lines.append(
                f"{verdict(ours <= theirs)}  ResNet-50 on CPU no slower than FlopCounterMode: {ours:.3f}x vs {theirs:.3f}x"
            )
    for label, outcomes in meta_rows:
        ours = outcomes["netbudget"].median_ratio
        if ours is not None and label == "resnet50 [meta]":
            lines.append(f"{verdict(ours <= 1.3)}  {label}: netbudget <= 1.3x a bare meta forward: {ours:.2f}x")
    if llama_runs is not None:
        entry = llama_runs.get("netbudget", {}).get("netbudget", {})
        if "cold_s" in entry:
            lines.append(
                f"{verdict(entry['cold_s'] < 2)}  7B decoder on meta < 2 s: {entry['cold_s']:.2f} s "
                f"(first call; second {entry['warm_s']:.2f} s)"
            )
            lines.append(
                f"{verdict(entry['hwm_kib'] < 1024 * 1024)}  7B decoder on meta < 1 GiB peak RSS: "
                f"{entry['hwm_kib'] / 1024:.0f} MiB (whole process, torch and transformers imported)"
            )
        else:
            lines.append(f"MISSED  7B decoder on meta: {entry.get('error') or llama_runs['netbudget'].get('error')}")
    return lines or ["(not measured in this selection of models)"]


def main() -> None:
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
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.child:
        child_main(args.child)
        return

    started = time.perf_counter()
    names = list(MODELS)
    if args.models:
        names = [name.strip() for name in args.models.split(",") if name.strip()]
        unknown = [name for name in names if name not in MODELS]
        if unknown:
            parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if args.quick:
        names = [name for name in names if not MODELS[name].transformers]

    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, python {sys.version.split()[0]}, load average {load}"
    )
    results: list[ModelResult] = []
    for name in names:
        bench = MODELS[name]
        if bench.meta_only:
            continue
        step = time.perf_counter()
        results.append(measure_model(bench, args.reps))
        print(f"  measured {name} in {time.perf_counter() - step:.1f} s", flush=True)

    meta_rows: list[tuple[str, dict[str, Outcome]]] = []
    for name in names:
        if not MODELS[name].meta_only:
            step = time.perf_counter()
            meta_rows.append((f"{name} [meta]", measure_meta_in_process(name, 2 * args.reps)))
            print(f"  measured {name} built on meta in {time.perf_counter() - step:.1f} s", flush=True)
    llama_runs = None
    if "llama_7b_meta" in names:
        llama_result, llama_runs = llama_rows(180)
        results.append(llama_result)
        print("  measured llama_7b_meta (subprocesses)", flush=True)

    print_table1(results)
    print_table2([r for r in results if r.name != "llama_7b_meta"], args.reps, meta_rows)

    if llama_runs is not None:
        print("\n7B Llama-shaped decoder on meta (seq 2048), each in a fresh subprocess:")
        for tool, report in llama_runs.items():
            entry = report.get(tool, {})
            if "error" in report or "error" in entry:
                print(f"  {tool:16s} error: {report.get('error') or entry.get('error')}")
                continue
            print(
                f"  {tool:16s} cold {entry['cold_s']:.3f} s, warm {entry['warm_s']:.3f} s; "
                f"peak RSS {entry['hwm_kib'] / 1024:.0f} MiB (process before the call: "
                f"{report['hwm_before_kib'] / 1024:.0f} MiB after importing and building on meta in "
                f"{report['build_s']:.1f} s)"
            )
        bare = llama_runs.get("bare forward", {}).get("bare forward", {})
        for tool in ("netbudget", "FlopCounterMode"):
            entry = llama_runs.get(tool, {}).get(tool, {})
            if bare.get("warm_s") and entry.get("warm_s"):
                print(f"  {tool} / bare meta forward (warm): {entry['warm_s'] / bare['warm_s']:.2f}x")

    print("\nPerformance targets:")
    for line in target_lines(results, meta_rows, llama_runs):
        print("  " + line)

    if not args.no_example_project:
        print("\nExample project (fresh interpreters, -p no:cacheprovider):")
        for line in measure_example_project():
            print("  " + line)

    print("\nNotes (measured disagreements):")
    print(f"  - {attention_probe()}")
    for result in results:
        for note in result.notes:
            print(f"  - {result.name}: {note}")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\ntotal runtime {time.perf_counter() - started:.0f} s; load average at the end {load}")


if __name__ == "__main__":
    main()
