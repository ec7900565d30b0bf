"""Higher-order ops (``torch.cond``, ``torch.while_loop``, ``flex_attention``, ...) under the tracer.

A higher-order op takes functions as arguments; the tracer receives it whole and runs it
here, with its dispatch mode active, so that the ops inside are counted as any other:

- ``cond`` runs both branches and keeps the count of the more expensive one (by FLOPs),
  as ``FlopCounterMode`` counts the larger branch; the output is the branch the predicate
  takes (on meta, where the predicate has no value, the counted branch's).
- ``while_loop`` runs its body as many times as the condition says; on meta the condition
  has no value, which is an error that says so.
- anything else runs its dense (CompositeExplicitAutograd) implementation, the one eager
  PyTorch runs on CPU: ``flex_attention``'s forms the scores, applies ``score_mod`` and the
  softmax and multiplies by V, every part counted.
"""

from __future__ import annotations

import copy
import sys
import threading
from collections.abc import Callable
from typing import Any

import torch

Traced = Callable[..., Any]  # runs a function with the tracer's dispatch mode active


def run_higher_order(tracer: Any, func: Any, args: tuple, kwargs: dict, traced: Traced) -> Any:
    """The op's output, its inner ops counted by ``tracer`` (run through ``traced``)."""
    if func is torch.ops.higher_order.cond:
        return _cond(tracer, *args, traced=traced)
    if func is torch.ops.higher_order.while_loop:
        return _while_loop(*args, traced=traced, **kwargs)
    dense = func.py_kernels.get(torch._C.DispatchKey.CompositeExplicitAutograd)
    if dense is None:
        raise NotImplementedError(f"the higher-order op {func.name()} has no eager implementation to count")
    return traced(dense, *args, **kwargs)


def _cond(tracer: Any, pred: Any, true_fn: Callable, false_fn: Callable, operands: tuple, *, traced: Traced) -> Any:
    before = (copy.deepcopy(tracer.tallies), copy.copy(tracer.uncounted))
    true_out = traced(true_fn, *operands)
    after_true = (tracer.tallies, tracer.uncounted)
    tracer.tallies, tracer.uncounted = before
    false_out = traced(false_fn, *operands)
    if _flops(after_true[0]) >= _flops(tracer.tallies):
        tracer.tallies, tracer.uncounted = after_true
        counted = true_out
    else:
        counted = false_out
    if isinstance(pred, torch.Tensor) and pred.is_meta:
        return counted
    return true_out if bool(pred) else false_out


def _flops(tallies: list) -> int:
    return sum(tally.flops for tally in tallies)


def _while_loop(
    cond_fn: Callable, body_fn: Callable, carried: tuple, additional: tuple = (), *, traced: Traced, **_: Any
) -> Any:
    carried = tuple(carried)
    while True:
        go = traced(cond_fn, *carried, *additional)
        if isinstance(go, torch.Tensor) and go.is_meta:
            raise ValueError(
                "torch.while_loop runs as many times as its condition says, which has no value on meta: "
                "profile this model on cpu or cuda"
            )
        if not bool(go):
            return carried
        carried = tuple(traced(body_fn, *carried, *additional))


class EagerFlexAttention:
    """While a tracer runs, ``flex_attention`` calls its higher-order op directly instead of
    compiling it first: dynamo compiles no frame while a dispatch mode is active, and the
    ``fullgraph=True`` of flex_attention's eager path makes that an error. PyTorch's own
    switch for this (``_FLEX_ATTENTION_DISABLE_COMPILE_DEBUG``) is a module global: tracers
    in several threads share it, and the last one out puts it back. ``remove()`` ends it, as
    a hook handle's does."""

    _lock = threading.Lock()
    _active = 0
    _saved = False

    def __init__(self) -> None:
        module: Any = sys.modules.get("torch.nn.attention.flex_attention")  # never imported for this
        self._module = module
        if module is None:
            return
        with EagerFlexAttention._lock:
            if EagerFlexAttention._active == 0:
                EagerFlexAttention._saved = module._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG
                module._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True
            EagerFlexAttention._active += 1

    def remove(self) -> None:
        if self._module is None:
            return
        with EagerFlexAttention._lock:
            EagerFlexAttention._active -= 1
            if EagerFlexAttention._active == 0:
                self._module._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = EagerFlexAttention._saved
        self._module = None
