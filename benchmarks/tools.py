"""One adapter per counting tool: how to call it on a model and read its totals.

Every adapter takes ``(model, inputs)`` and returns ``(params or None, MACs)``; a tool
that fails raises (ptflops prints its exceptions instead, so its adapter re-raises them
by name). What each tool prints is swallowed. The per-op and per-module-type splits
that explain a disagreement live in ``diagnose.py``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from models import MODELS, BenchModel

Inputs = tuple
Tool = Callable[[torch.nn.Module, Inputs], tuple[Any, Any]]


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Swallow what the tools print (ptflops prints its exceptions instead of raising)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield buffer


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:260] if lines else ""


class ToolFailed(Exception):
    """Stands for the exception a tool caught and printed instead of raising."""


def run_bare(model: torch.nn.Module, inputs: Inputs) -> tuple[None, None]:
    """The reference every time is divided by: a plain eval-mode no_grad forward."""
    with torch.no_grad():
        model(*inputs)
    return None, None


def run_netbudget(device: str) -> Tool:
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


def run_ptflops(backend: str, bench: BenchModel) -> Tool:
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


def tools_for(bench: BenchModel, netbudget_device: str = "cpu") -> dict[str, Tool]:
    """The compared tools, in table order. ``netbudget`` profiles on ``netbudget_device``
    (the model's own device); ``nb[meta]`` always on meta."""
    return {
        "netbudget": run_netbudget(netbudget_device),
        "nb[meta]": run_netbudget("meta"),
        "FlopCounterMode": run_flop_counter,
        "thop": run_thop,
        "ptflops[pytorch]": run_ptflops("pytorch", bench),
        "ptflops[aten]": run_ptflops("aten", bench),
        "torchinfo": run_torchinfo,
        "fvcore": run_fvcore,
    }


TOOL_NAMES = list(tools_for(next(iter(MODELS.values()))))
