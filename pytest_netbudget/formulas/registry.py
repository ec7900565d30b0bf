"""The one registry of counting formulas, and the per-call view of it that a profile uses.

A formula maps an aten op (by qualified name, ``aten::mm``) or an ``nn.Module`` type to a
:class:`Cost`. Every formula, built-in or user's, enters through :func:`register`, which
refuses a second registration of one target unless asked to replace it, and records the
one-line rule that ``netbudget formulas`` shows. A profile reads the registry through a
:class:`FormulaSet`, which adds that call's own overrides without ever writing them back.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .schema import schema_of


@dataclass(frozen=True)
class Cost:
    """What one op call costs. ``flops`` defaults to ``2 * macs``.

    ``upper_bound`` says, in words, why the exact cost could not be had on this device and what
    was counted instead, the most the op could do (a grouped product on meta, whose group
    offsets have no values there, counts every row); None where the cost is exact. The profile
    then marks its figures as upper bounds, with this reason.
    """

    macs: int = 0
    flops: int | None = None
    upper_bound: str | None = None

    @property
    def total_flops(self) -> int:
        return 2 * self.macs if self.flops is None else self.flops

    def __repr__(self) -> str:
        """As a formula's author wrote it, ``upper_bound`` only where there is one (the errors that
        name a bad cost quote this)."""
        bound = f", upper_bound={self.upper_bound!r}" if self.upper_bound is not None else ""
        return f"Cost(macs={self.macs!r}, flops={self.flops!r}{bound})"


class FormulaError(Exception):
    """A counting formula raised, or returned something other than a finite, non-negative ``Cost``;
    the message names the formula and what it was counting."""


def apply(formula: Callable[..., Any], target: str, *args: Any) -> Cost:
    """Call ``formula`` for ``target`` (an op's or a module type's name) and check what it returns."""
    try:
        cost = formula(*args)
    except Exception as error:
        raise FormulaError(f"formula {_name(formula)} for {target} raised {type(error).__name__}: {error}") from error
    if not isinstance(cost, Cost):
        raise FormulaError(f"formula {_name(formula)} for {target} returned {cost!r}, not a Cost")
    bound = cost.upper_bound
    if bound is not None and not (isinstance(bound, str) and bound.strip()):
        raise FormulaError(
            f"formula {_name(formula)} for {target} returned {cost!r}: upper_bound says in words why the cost is "
            "one (or is None)"
        )
    macs, flops = cost.macs, cost.flops
    # The usual answer, checked first (bool is not int): whole, not negative (and ints are finite).
    if type(macs) is int and macs >= 0 and (flops is None or (type(flops) is int and flops >= 0)):
        return cost
    plain = Cost(_plain_number(macs), None if flops is None else _plain_number(flops), bound)
    if (
        plain.macs is None
        or (flops is not None and plain.flops is None)
        or not all(0 <= figure < math.inf for figure in (plain.macs, plain.total_flops))
    ):
        raise FormulaError(
            f"formula {_name(formula)} for {target} returned {cost!r}: costs are finite and not negative"
        )
    return plain


def _plain_number(value: Any) -> Any:
    """A formula's figure as a Python int or float (NumPy's int64 and float64 are numbers too, and
    must not reach the totals as NumPy types); None for what is not a number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _name(formula: Callable[..., Any]) -> str:
    """How an error names a formula; built only when one is reported."""
    return f"{getattr(formula, '__module__', '?')}.{getattr(formula, '__qualname__', repr(formula))}"


class OpCall:
    """An operator call as a formula sees it: arguments bound by schema name, and the result."""

    def __init__(
        self, func: Any, args: tuple, kwargs: dict, out: Any, grad_needed: tuple[bool, ...] | None = None
    ) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.out = out
        #: In a backward: for each input of the forward op, whether autograd wants its gradient
        #: (a fused kernel computes them all; its unfused form only those). None elsewhere.
        self.grad_needed = grad_needed

    def __getitem__(self, name: str) -> Any:
        index, kwarg_only, default = schema_of(self.func).by_name[name]
        if index < len(self.args) and not kwarg_only:
            return self.args[index]
        return self.kwargs.get(name, default)

    def __contains__(self, name: str) -> bool:
        """Whether the op's schema has an argument of this name."""
        return name in schema_of(self.func).by_name

    def get(self, name: str, default: Any = None) -> Any:
        """An argument that only some overloads or torch versions have."""
        return self[name] if name in schema_of(self.func).by_name else default

    @property
    def first_out(self) -> torch.Tensor:
        """The first tensor the op returned."""
        return self.out[0] if isinstance(self.out, (tuple, list)) else self.out


OpFormula = Callable[[OpCall], Cost]
ModuleFormula = Callable[[torch.nn.Module, tuple, Any], Cost]

FREE = object()  # marker: the op moves or creates data and does no arithmetic


@dataclass(frozen=True)
class Registered:
    """One registered formula as users see it: what it counts, its family and its rule."""

    name: str  # 'aten::mm', or the module type's qualified name
    family: str  # the module of formulas it belongs to ('linalg', 'conv', ...), or 'user'
    rule: str  # one line: how it counts


_op_formulas: dict[str, OpFormula | object] = {}
_module_formulas: dict[type, ModuleFormula] = {}
_registered: dict[str | type, Registered] = {}
# What sets without overrides have worked out: formulas per overload, per module type, and
# the engine's per-overload plans. Emptied by every registration.
_shared_answers: tuple[dict[Any, Any], dict[type, Any], dict[Any, Any]] = ({}, {}, {})


def numel(value: Any) -> int:
    """Elements of a tensor, or of every tensor in a list (a ``_foreach_*`` op's operand);
    0 for anything else (an absent optional tensor)."""
    if isinstance(value, (list, tuple)):
        return sum(numel(item) for item in value)
    return value.numel() if isinstance(value, torch.Tensor) else 0


def aten(names: str) -> list[str]:
    """'mm bmm' -> ['aten::mm', 'aten::bmm']. Built-ins are registered by name, not by
    ``torch.ops.aten.X``, so that an op this torch version lacks costs nothing."""
    return [f"aten::{name}" for name in names.split()]


def _key(target: Any) -> str | type:
    """An op's qualified name ('aten::mm', from an op packet, an overload or a string), or a module type."""
    if isinstance(target, type) and issubclass(target, torch.nn.Module):
        return target
    if isinstance(target, str):
        if "::" not in target:
            raise ValueError(f"an op name needs its namespace, like 'aten::{target}' or 'mylib::{target}'")
        return target.split(".")[0]
    # torch._ops holds the only definitions of these classes; no public alias exists.
    if isinstance(target, torch._ops.OpOverload):
        return target.name().split(".")[0]
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name  # a packet has no public accessor for 'ns::op'
    raise TypeError(
        f"cannot register a formula for {target!r}: expected an op (torch.ops.ns.op), 'ns::op' or an nn.Module subclass"
    )


def _display(key: str | type) -> str:
    return key if isinstance(key, str) else f"{key.__module__}.{key.__qualname__}"


def register(
    targets: Any, formula: OpFormula | ModuleFormula | object, *, family: str, rule: str, replace: bool = False
) -> None:
    """Add ``formula`` for one target or a list of them: ops, or ``nn.Module`` types.

    The only way into the registry. A target registered twice is a ValueError naming it
    unless ``replace=True``, so that no family silently overrides another; ``rule`` is the
    one line that tells a user how the formula counts.
    """
    if not rule.strip():
        raise ValueError(f"a formula for {targets!r} needs a rule: one line on how it counts")
    keys = [_key(one) for one in (targets if isinstance(targets, (list, tuple)) else [targets])]
    seen: set[str | type] = set()
    for key in keys:
        if key in seen or (key in _registered and not replace):
            raise ValueError(f"a formula for {_display(key)} is already registered; pass replace=True")
        seen.add(key)
    for key in keys:
        if isinstance(key, type):
            _module_formulas[key] = formula  # type: ignore[assignment]
        else:
            _op_formulas[key] = formula
        _registered[key] = Registered(_display(key), family, rule.strip())
    for answers in _shared_answers:
        answers.clear()


def register_formula(target: Any, *, replace: bool = False) -> Callable[[Callable], Callable]:
    """Register how to count an op or a module type; use as a decorator.

    For an op (``torch.ops.mylib.fused_mlp``, one of its overloads, or the string
    ``"mylib::fused_mlp"``) the function takes an :class:`OpCall` and returns a
    :class:`Cost`. For an ``nn.Module`` subclass it takes ``(module, inputs, output)``
    and returns a :class:`Cost`; the ops that run inside such a module are then not
    counted again. ``replace=True`` overrides a built-in formula. The first line of the
    function's docstring is the rule that ``netbudget formulas`` lists.
    """

    def decorator(function: Callable) -> Callable:
        summary = (inspect.getdoc(function) or "").strip().splitlines()
        rule = summary[0] if summary else f"user formula {function.__module__}.{function.__qualname__}"
        register(target, function, family="user", rule=rule, replace=replace)
        return function

    return decorator


def registered() -> list[Registered]:
    """Every registered op and module formula, sorted by name."""
    return sorted(_registered.values(), key=lambda record: record.name)


def _is_view_op(namespace: str, qualified: str) -> bool:
    """Whether the op named ``ns::name`` returns views of its input (its first overload's schema says)."""
    packet = getattr(getattr(torch.ops, namespace), qualified.split("::")[-1], None)
    overloads = packet.overloads() if packet is not None else []
    return bool(overloads) and getattr(packet, overloads[0]).is_view


class FormulaSet:
    """The formulas one profile uses: the global registry plus that call's overrides.

    ``overrides`` maps ops (as :func:`register_formula` takes them) or ``nn.Module`` types
    to formulas, as ``FlopCounterMode``'s ``custom_mapping`` does. A set with overrides
    copies the registry, so an override never leaks into it; sets without overrides read
    the registry itself and share their answers, per op overload and module type, from
    one profile to the next (until the next registration empties them).
    """

    def __init__(self, overrides: Mapping[Any, Callable[..., Cost]] | None = None) -> None:
        if not overrides:
            self._ops, self._modules = _op_formulas, _module_formulas
            self._cache, self._module_cache, self.plans = _shared_answers
            return
        self._ops = dict(_op_formulas)
        self._modules = dict(_module_formulas)
        for target, formula in overrides.items():
            if not callable(formula):
                raise TypeError(f"the formula for {target!r} must be callable, got {formula!r}")
            key = _key(target)
            if isinstance(key, type):
                self._modules[key] = formula
            else:
                self._ops[key] = formula
        self._cache = {}
        self._module_cache = {}
        #: Per op overload, what the engine derived from this set's answers (its own memo).
        self.plans = {}

    def for_op(self, func: Any) -> OpFormula | object | None:
        """The formula for an aten overload, ``FREE`` for data movement, None when uncounted.

        In-place variants (``add_``) share the formula of their functional op (``add``);
        views are free by their schema, and so are in-place views (``transpose_``,
        ``as_strided_``), which change only a tensor's metadata. Answers are cached per overload.
        """
        try:
            return self._cache[func]
        except KeyError:
            pass
        name = func.name().split(".")[0]  # 'aten::add_.Tensor' -> 'aten::add_'
        found = self._ops.get(name)
        if found is None and name.endswith("_"):
            found = self._ops.get(name[:-1])
        if found is None and (func.is_view or (name.endswith("_") and _is_view_op(func.namespace, name[:-1]))):
            found = FREE
        self._cache[func] = found
        return found

    def for_module(self, module: torch.nn.Module) -> ModuleFormula | None:
        """The formula for this module's type (or its nearest base type that has one), if any."""
        kind = type(module)
        try:
            return self._module_cache[kind]
        except KeyError:
            pass
        found = next((self._modules[klass] for klass in kind.__mro__ if klass in self._modules), None)
        self._module_cache[kind] = found
        return found

    def family_of(self, func: Any) -> str | None:
        """The family of the registered formula an aten overload takes (``'conv'``), as
        :meth:`for_op` finds it; None for views and ops without one."""
        name = func.name().split(".")[0]
        record = _registered.get(name) or (_registered.get(name[:-1]) if name.endswith("_") else None)
        return record.family if record is not None else None

    @staticmethod
    def is_free(formula: object) -> bool:
        """Whether ``for_op`` answered that the op does no arithmetic."""
        return formula is FREE
