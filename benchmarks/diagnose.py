"""Why a tool disagrees with the hand-derived figures, from what actually ran.

The reference split is netbudget's own: its per-operator figures (``profile.ops``) and
its per-module rows (``row.type``, ``row.macs``), used only when its total equals the
hand-derived figure. Each tool's side comes from the tool itself: FlopCounterMode's
``get_flop_counts()``, ptflops' aten mapping and per-layer print, thop's layer tree,
torchinfo's summary list and fvcore's ``by_operator()``. Also here: netbudget's figures
on cpu against meta, and the probe of one attention call's memory on both.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

import torch
from torch.utils.flop_counter import FlopCounterMode

from models import BenchModel
from report import human
from results import TOLERANCE, ModelResult, Outcome, deviation
from tools import Inputs, quiet

if TYPE_CHECKING:
    from pytest_netbudget import Profile


class NetbudgetProfiles:
    """netbudget's profiles of one model, one per device, each made once and shared by the notes."""

    def __init__(self, model: torch.nn.Module, inputs: Inputs) -> None:
        self._model = model
        self._inputs = inputs
        self._made: dict[str, Profile] = {}

    def on(self, device: str) -> Profile:
        if device not in self._made:
            from pytest_netbudget import profile

            self._made[device] = profile(self._model, inputs=self._inputs, device=device)
        return self._made[device]


# --------------------------------------------------------------------------------------
# Splits: by operator and by module type
# --------------------------------------------------------------------------------------


def _g(value: float) -> str:
    return human(value) if abs(value) >= 1 else "0"


def _op_label(name: str) -> str:
    """``aten.convolution`` -> ``convolution``; other namespaces and ``module:Type`` stay whole."""
    return name.removeprefix("aten.")


def netbudget_by_op(result: Profile) -> Counter[str]:
    """MACs per operator over the whole model, from netbudget's own per-op figures."""
    return Counter({name: stats.macs for name, stats in result.ops.items() if stats.macs})


def netbudget_by_type(result: Profile) -> Counter[str]:
    """MACs each module type does in its own forward (netbudget's rows)."""
    counted: Counter[str] = Counter()
    for row in result.layers:
        counted[row.type] += row.macs
    return counted


def flop_counter_ops(model: torch.nn.Module, inputs: Inputs) -> set[str]:
    """The operators FlopCounterMode counted (it records every op it has a formula for)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return {str(op) for op in counter.get_flop_counts().get("Global", {})}


def ptflops_aten_ops() -> set[str]:
    from ptflops.aten_ops import ATEN_OPS_MAPPING

    return {str(op) for op in ATEN_OPS_MAPPING}


def _by_type(model: torch.nn.Module, per_path: dict[str, float]) -> Counter[str]:
    types = {path: type(module).__name__ for path, module in model.named_modules()}
    counted: Counter[str] = Counter()
    for path, value in per_path.items():
        counted[types.get(path, "?")] += value
    return counted


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


def _is_matmul_like(name: str) -> bool:
    return any(key in name for key in ("attention", "rnn", "lstm", "gru", "conv", "mm", "linear", "einsum", "matmul"))


def _differences(tool: Counter[str], reference: Counter[str], total: int) -> str:
    """Categories where a tool counts more or less than the reference, largest first (ties by name)."""
    keys = set(tool) | set(reference)
    diffs = [(key, tool.get(key, 0) - reference.get(key, 0)) for key in keys]
    diffs = [(key, diff) for key, diff in diffs if abs(diff) > 0.001 * total]
    diffs.sort(key=lambda item: (-abs(item[1]), item[0]))
    return ", ".join(f"{key} {'+' if diff > 0 else '-'}{_g(abs(diff))}" for key, diff in diffs[:6]) or "spread thinly"


def _not_in(by_op: Counter[str], counted: set[str]) -> str:
    """netbudget's operators (largest first) that a tool's set of counted operators lacks."""
    return ", ".join(f"{_op_label(op)} ({_g(macs)})" for op, macs in by_op.most_common() if op not in counted) or "-"


# --------------------------------------------------------------------------------------
# Notes
# --------------------------------------------------------------------------------------


def error_notes(result: ModelResult) -> list[str]:
    return [
        f"{tool} raised {outcome.error}: {outcome.detail}"
        for tool, outcome in result.outcomes.items()
        if outcome.error and tool not in ("netbudget", "nb[meta]")
    ]


def diagnose(
    bench: BenchModel,
    model: torch.nn.Module,
    inputs: Inputs,
    result: ModelResult,
    profiles: NetbudgetProfiles,
    device: str,
) -> list[str]:
    """One line per tool figure that is more than 1% off, with what was measured about why.
    ``device`` is where the model and inputs live (the other tools ran there): netbudget's
    split by operator is taken on it, its split by module type on meta."""
    notes = error_notes(result)
    outcomes = result.outcomes
    expected_macs, expected_params = result.expected_macs, result.expected_params

    def pct(value: float) -> str:
        return f"{value * 100:+.1f}%"

    def off_tools(metric: str, expected: int) -> list[str]:
        found = []
        for tool, outcome in outcomes.items():
            off = deviation(getattr(outcome, metric), expected)
            if tool not in ("bare forward", "netbudget", "nb[meta]") and off is not None and abs(off) > TOLERANCE:
                found.append(tool)
        return found

    for tool in ("netbudget", "nb[meta]"):
        outcome = outcomes.get(tool)
        if outcome is None:
            continue
        for metric, expected in (("params", expected_params), ("macs", expected_macs)):
            off = deviation(getattr(outcome, metric), expected)
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
        notes.append(f"{tool} params {pct(deviation(outcomes[tool].params, expected_params))} ({extra:+,}){why}")

    macs_off = off_tools("macs", expected_macs)
    if not macs_off:
        return notes
    by_op = netbudget_by_op(profiles.on(device))
    by_type = netbudget_by_type(profiles.on("meta")) if reference_ok else Counter()
    if reference_ok:
        split = ", ".join(f"{_op_label(name)} {_g(macs)}" for name, macs in by_op.most_common(5))
        notes.append(f"expected MACs by aten op (netbudget's formulas; they sum to the hand figure): {split}")
    for tool in macs_off:
        outcome = outcomes[tool]
        head = f"{tool} MACs {pct(deviation(outcome.macs, expected_macs))} ({outcome.macs - expected_macs:+,})"
        try:
            if tool == "FlopCounterMode":
                notes.append(f"{head}: no formula for {_not_in(by_op, flop_counter_ops(model, inputs))}")
            elif tool == "ptflops[aten]":
                missing = _not_in(by_op, ptflops_aten_ops())
                notes.append(f"{head}: counts only mm/matmul/addmm/bmm/convolution; not {missing}")
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


def device_consistency(profiles: NetbudgetProfiles) -> list[str]:
    """netbudget's figures for the same model on cpu and on meta (the spec wants the counts equal)."""
    on_cpu = profiles.on("cpu")
    on_meta = profiles.on("meta")
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
    CPU runs a fused kernel; PyTorch alone would take the math path on meta, which materialises
    the score matrix, so the two agree only while netbudget routes meta to the fused kernel too."""
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
