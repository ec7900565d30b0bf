"""Printing the comparison: table 1 (counts), table 2 (time ratios), the 7B decoder's
subprocess runs, the speed targets judged on this run, and the notes."""

from __future__ import annotations

from typing import Any

from results import TOLERANCE, ModelResult, Outcome, deviation
from tools import TOOL_NAMES

MetaRows = list[tuple[str, dict[str, Outcome]]]  # "resnet50 [meta]" -> the tools timed on meta


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
    off = deviation(value, expected)
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


def ratio_cell(outcome: Outcome | None, reps: int) -> str:
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


def print_table2(results: list[ModelResult], reps: int, meta_rows: MetaRows) -> None:
    print(
        f"\nTable 2: time per call as a multiple of a bare no_grad forward (median of up to {reps} paired runs after a warm-up)"
    )
    header = ["model", "bare forward", *TOOL_NAMES]
    rows = []
    for result in results:
        bare = result.outcomes["bare forward"].median
        row = [result.name, f"{bare * 1000:.1f} ms" if bare else "-"]
        row += [ratio_cell(result.outcomes.get(tool), reps) for tool in TOOL_NAMES]
        rows.append(row)
    for label, outcomes in meta_rows:
        bare = outcomes["bare forward"].median
        row = [label, f"{bare * 1000:.1f} ms" if bare else "-"]
        row += [ratio_cell(outcomes.get(tool), reps) if tool in outcomes else "" for tool in TOOL_NAMES]
        rows.append(row)
    print_table(header, rows)
    print(
        "  nb[meta] = netbudget with device='meta' on the CPU-built model (stateless meta copies), vs the CPU forward"
    )


def print_llama_runs(llama_runs: dict[str, Any]) -> None:
    """The 7B decoder's per-tool subprocesses: cold and warm time, peak RSS."""
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


def target_lines(results: list[ModelResult], meta_rows: MetaRows, llama_runs: dict[str, Any] | None) -> list[str]:
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


def print_lines(title: str, lines: list[str], bullet: str = "") -> None:
    print(f"\n{title}")
    for line in lines:
        print(f"  {bullet}{line}")
