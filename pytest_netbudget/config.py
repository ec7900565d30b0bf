"""``[tool.netbudget]`` read from pyproject.toml, validated, turned into ``ModelSpec``s.

Every error names the file, the table and the key, and suggests the right key for
a misspelt one; the plugin turns it into a pytest usage error, never a traceback.
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import devices, metrics, targets, units
from .loading import is_factory_path, is_module_name
from .results import ServeSpec, StepError, StepSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

TOP_KEYS = ("device", "dtype", "baseline", "max_increase", "strict", "formulas", "target", "targets", "models")
MODEL_KEYS = (
    "factory",
    "kwargs",
    "input_shape",
    "inputs",
    "input_factory",
    "device",
    "dtype",
    "max_increase",
    "strict",
    "train",
    "serve",
    "target",
    *metrics.LIMIT_KEYS,
)
INPUT_KEYS = ("shape", "dtype", "low", "high")
TRAIN_KEYS = ("optimizer", "batch", "loss_factory", "autocast")
SERVE_KEYS = ("context", "batch", "kv_dtype", "weights", "group_size", "keep", "fits")
TARGET_KEYS = ("title", "peak_tflops", "bandwidth_gbs", "op_overhead_us", "efficiency", "source")
DEFAULT_BASELINE = "netbudget-baseline.json"


class ConfigError(Exception):
    """A configuration mistake; the message says where and what."""


@dataclass(frozen=True)
class Increase:
    """How much a metric may grow over its baseline: a fraction (``"2%"``) or an amount (``"1k"``)."""

    fraction: float | None = None
    amount: float | None = None

    def allows(self, old: float, new: float) -> bool:
        if self.fraction is not None:
            return new - old <= abs(old) * self.fraction + 1e-12
        return new - old <= (self.amount or 0)

    def describe(self) -> str:
        return f"{self.fraction * 100:g}%" if self.fraction is not None else units.format_count(self.amount or 0)

    def to_dict(self) -> dict[str, float]:
        """``{"fraction": 0.02}`` or ``{"amount": 1000}``: exact, where ``describe`` rounds."""
        return {"fraction": self.fraction} if self.fraction is not None else {"amount": self.amount or 0}

    @classmethod
    def from_dict(cls, data: Mapping[str, float | None]) -> Increase:
        return cls(fraction=data.get("fraction"), amount=data.get("amount"))


@dataclass(frozen=True)
class InputSpec:
    """One positional input tensor to make: shape, dtype and, for integers, the value range."""

    shape: list[int]
    dtype: str = "float32"
    low: float = 0
    high: float | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: how to build it, what to feed it, and its limits."""

    name: str
    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: list[int] | None = None
    inputs: list[InputSpec] | None = None
    input_factory: str | None = None
    device: str = "auto"
    dtype: str | None = None
    limits: dict[str, float] = field(default_factory=dict)
    max_increase: dict[str, Increase] = field(default_factory=dict)
    strict: bool = False
    train: StepSpec | None = None
    serve: ServeSpec | None = None
    target: targets.Target | None = None  # estimated latency on this accelerator


@dataclass(frozen=True)
class Settings:
    """The whole ``[tool.netbudget]`` table."""

    path: Path
    baseline: Path
    models: list[ModelSpec]
    device: str = "auto"
    strict: bool = False
    max_increase: dict[str, Increase] = field(default_factory=dict)
    formulas: tuple[str, ...] = ()  # modules that register the project's own formulas
    target: targets.Target | None = None  # ``target`` under [tool.netbudget]: every model's and check's default
    targets: dict[str, targets.Target] = field(default_factory=dict)  # the project's own, by name


class Place:
    """Where a value was written, for error messages: ``pyproject.toml: [tool.netbudget]``
    and the key, or any label a caller gives (``budget()``, a test's node id)."""

    def __init__(self, label: str) -> None:
        self.label = label

    @classmethod
    def table(cls, path: Path | str, table: str) -> Place:
        return cls(f"{path}: [{table}]")

    def within(self, table: str) -> Place:
        """A nested table: ``[tool.netbudget.models.m]`` -> ``[tool.netbudget.models.m.max_increase]``."""
        if self.label.endswith("]"):
            return Place(f"{self.label[:-1]}.{table}]")
        return Place(f"{self.label} {table}")

    def key(self, key: str) -> str:
        return f"{self.label} {key}"

    def error(self, key: str | None, problem: str) -> ConfigError:
        return ConfigError(f"{self.key(key)}: {problem}" if key else f"{self.label}: {problem}")

    def unknown_keys(self, table: dict[str, Any], allowed: tuple[str, ...], prefix: str = "") -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(allowed)}"
                raise self.error(prefix + key, f"unknown key{hint}")


def read_pyproject(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def load_settings(path: Path) -> Settings | None:
    """Read ``[tool.netbudget]`` from ``path``; None when the file has no such table."""
    return settings_from(read_pyproject(path), path)


def settings_from(data: dict[str, Any], path: Path) -> Settings | None:
    """``[tool.netbudget]`` of a parsed pyproject.toml (read from ``path``), validated."""
    table = data.get("tool", {}).get("netbudget")
    if table is None:
        return None
    where = Place.table(path, "tool.netbudget")
    if not isinstance(table, dict):
        raise where.error(None, "must be a table")
    where.unknown_keys(table, TOP_KEYS)
    device = _device(table.get("device", "auto"), where, "device")
    dtype = _dtype(table.get("dtype"), where, "dtype")
    strict = _bool(table.get("strict", False), where, "strict")
    increase = _max_increase(table.get("max_increase"), where)
    baseline = table.get("baseline", DEFAULT_BASELINE)
    if not isinstance(baseline, str) or not baseline.strip():
        raise where.error("baseline", f"must be a file name like {DEFAULT_BASELINE!r}, got {baseline!r}")
    own_targets, target = _project_targets(table, path, where)
    models_table = table.get("models", {})
    if not isinstance(models_table, dict):
        raise where.error("models", "must be a table of [tool.netbudget.models.NAME] tables")
    models = []
    for name, model_table in models_table.items():
        model_where = Place.table(path, f"tool.netbudget.models.{name}")
        if not isinstance(model_table, dict):
            raise model_where.error(None, "must be a table with at least 'factory' and an input")
        models.append(_model(name, model_table, model_where, device, dtype, increase, strict, target, own_targets))
    return Settings(
        path=path,
        baseline=path.parent / baseline,
        models=models,
        device=device,
        strict=strict,
        max_increase=increase,
        targets=own_targets,
        target=target,
        formulas=_formulas(table.get("formulas", []), where),
    )


def formula_modules(data: dict[str, Any], path: Path) -> tuple[str, ...]:
    """Only ``[tool.netbudget] formulas`` of a parsed pyproject.toml: what ``netbudget formulas``
    and a factory path given to ``netbudget show`` need of the project."""
    table = data.get("tool", {}).get("netbudget")
    if not isinstance(table, dict):
        return ()
    return _formulas(table.get("formulas", []), Place.table(path, "tool.netbudget"))


def project_targets(data: dict[str, Any], path: Path) -> tuple[dict[str, targets.Target], targets.Target | None]:
    """Only ``[tool.netbudget] targets`` and ``target`` of a parsed pyproject.toml: what a check
    from a test needs of the project in a run that reads nothing else of it."""
    table = data.get("tool", {}).get("netbudget")
    if not isinstance(table, dict):
        return {}, None
    return _project_targets(table, path, Place.table(path, "tool.netbudget"))


def _project_targets(
    table: dict[str, Any], path: Path, where: Place
) -> tuple[dict[str, targets.Target], targets.Target | None]:
    """The project's own targets by name, and its default ``target``."""
    own = _targets(table.get("targets", {}), path, where)
    return own, _target(table.get("target"), where, own)


def _formulas(value: Any, where: Place) -> tuple[str, ...]:
    """``formulas = ["my_package.netbudget_formulas"]``: modules imported before any model is
    profiled, so that the formulas they register count in every run, worker and command."""
    if not isinstance(value, list) or not all(is_module_name(item) for item in value):
        raise where.error(
            "formulas", f'must be a list of module names like ["my_package.netbudget_formulas"], got {value!r}'
        )
    return tuple(value)


def _targets(value: Any, path: Path, where: Place) -> dict[str, targets.Target]:
    """``[tool.netbudget.targets.NAME]`` tables: the project's own accelerators."""
    if not isinstance(value, dict):
        raise where.error("targets", "must be a table of [tool.netbudget.targets.NAME] tables")
    return {
        name: _user_target(name, table, Place.table(path, f"tool.netbudget.targets.{name}"))
        for name, table in value.items()
    }


def _user_target(name: str, table: Any, where: Place) -> targets.Target:
    example = "peak_tflops = { fp32 = 19.5, fp16 = 312 } and bandwidth_gbs = 2039"
    if not isinstance(table, dict):
        raise where.error(None, f"must be a table with {example}")
    if name in targets.BUILT_IN:
        raise where.error(None, f"{name!r} is a built-in target: give yours another name")
    where.unknown_keys(table, TARGET_KEYS)
    peaks = table.get("peak_tflops")
    if not isinstance(peaks, dict) or not peaks:
        raise where.error("peak_tflops", f"missing or not a table: give dense peaks per precision, {example}")
    inner = where.within("peak_tflops")
    inner.unknown_keys(peaks, targets.PRECISIONS)
    peak_tflops = {precision: _positive(figure, inner, precision) for precision, figure in peaks.items()}
    if "fp32" not in peak_tflops:
        raise inner.error("fp32", "missing: every target needs its fp32 peak (other precisions fall back to it)")
    if "bandwidth_gbs" not in table:
        raise where.error("bandwidth_gbs", "missing: the memory bandwidth in GB/s (10**9 bytes per second)")
    overhead = table.get("op_overhead_us", 0)
    if isinstance(overhead, bool) or not isinstance(overhead, (int, float)) or not 0 <= overhead < math.inf:
        raise where.error("op_overhead_us", f"must be a number of microseconds, 0 or more, got {overhead!r}")
    efficiency = table.get("efficiency", {})
    if not isinstance(efficiency, dict):
        raise where.error("efficiency", f"must be a table of op families like {{ conv = 0.5 }}, got {efficiency!r}")
    shares = where.within("efficiency")
    shares.unknown_keys(efficiency, targets.FAMILIES)
    for family, share in efficiency.items():
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < math.inf:
            raise shares.error(family, f"must be the positive share of the roofline its ops attain, got {share!r}")
    text = {key: table.get(key, "") for key in ("title", "source")}
    for key, item in text.items():
        if not isinstance(item, str):
            raise where.error(key, f"must be a string, got {item!r}")
    return targets.user_target(
        name,
        text["title"],
        peak_tflops,
        _positive(table["bandwidth_gbs"], where, "bandwidth_gbs"),
        overhead,
        text["source"] or f"{where.label} (the project's own figures)",
        efficiency,
    )


def _positive(value: Any, where: Place, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise where.error(key, f"must be a positive number, got {value!r}")
    return value


def _target(value: Any, where: Place, own: dict[str, targets.Target]) -> targets.Target | None:
    """``target = "a100"``: a built-in accelerator or one of the project's own."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise where.error("target", f"must be a target's name like 'a100', got {value!r}")
    try:
        return targets.resolve(value, own)
    except targets.TargetError as error:
        raise where.error("target", str(error)) from None


def model_spec(
    name: str, table: dict[str, Any], place: Place, own_targets: dict[str, targets.Target] | None = None
) -> ModelSpec:
    """One model table validated on its own, its ``target`` looked up among the built-in and
    ``own_targets`` (the project's); ``netbudget show`` builds one from its arguments."""
    return _model(name, table, place, "auto", None, {}, False, None, own_targets or {})


def _model(
    name: str,
    table: dict[str, Any],
    where: Place,
    device: str,
    dtype: str | None,
    increase: dict[str, Increase],
    strict: bool,
    target: targets.Target | None,
    own_targets: dict[str, targets.Target],
) -> ModelSpec:
    where.unknown_keys(table, MODEL_KEYS)
    if "factory" not in table:
        raise where.error("factory", "missing: say which callable builds the model, e.g. 'my_package.models:Net'")
    factory = table["factory"]
    if not is_factory_path(factory):
        raise where.error("factory", f"{factory!r} is not of the form 'package.module:callable'")
    kwargs = table.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise where.error("kwargs", f"must be a table of keyword arguments, got {kwargs!r}")
    given = [key for key in ("input_shape", "inputs", "input_factory") if key in table]
    if len(given) != 1:
        problem = "give exactly one of input_shape, inputs or input_factory"
        raise where.error(None, f"{problem} (found {', '.join(given)})" if given else f"{problem} (found none)")
    input_factory = table.get("input_factory")
    if input_factory is not None and not is_factory_path(input_factory):
        raise where.error("input_factory", f"{input_factory!r} is not of the form 'package.module:callable'")
    inputs = None
    if "inputs" in table:
        raw = table["inputs"]
        if not isinstance(raw, list) or not raw:
            raise where.error(
                "inputs", 'must be a list of tables like { shape = [1, 128], dtype = "int64", high = 50257 }'
            )
        inputs = [_input_spec(item, where, index) for index, item in enumerate(raw)]
    own_increase = _max_increase(table["max_increase"], where) if "max_increase" in table else increase
    train = train_step(table["train"], where) if "train" in table else None
    serve = serve_step(table["serve"], where) if "serve" in table else None
    limits = parse_limits({key: table[key] for key in metrics.LIMIT_KEYS if key in table}, where)
    _step_for_limits(limits, train, where, 'add train = { optimizer = "adamw" }')
    _serve_for_limits(limits, serve, where, "add serve = { context = 2048 }")
    model_target = _target(table["target"], where, own_targets) if "target" in table else target
    _target_for_limits(limits, model_target, where, 'add target = "a100" here or under [tool.netbudget]')
    model_device = _device(table.get("device", device), where, "device")
    autocast_problem = train.problem_on(model_device) if train is not None else None
    if autocast_problem:
        raise where.error("train.autocast", autocast_problem)
    return ModelSpec(
        name=name,
        factory=factory,
        kwargs=kwargs,
        input_shape=_shape(table["input_shape"], where, "input_shape") if "input_shape" in table else None,
        inputs=inputs,
        input_factory=input_factory,
        device=model_device,
        dtype=_dtype(table.get("dtype", dtype), where, "dtype"),
        limits=limits,
        max_increase=own_increase,
        strict=_bool(table.get("strict", strict), where, "strict"),
        train=train,
        serve=serve,
        target=model_target,
    )


def train_step(value: Any, where: Place) -> StepSpec:
    """``train = true`` or ``train = { optimizer = "adamw", batch = 32, loss_factory = "pkg.losses:loss",
    autocast = "bfloat16" }`` (or a ``StepSpec``, from a test) as the step it describes."""
    if isinstance(value, StepSpec):
        return value
    if value is True:
        return StepSpec()
    if not isinstance(value, dict):
        raise where.error(
            "train", f'must be a table like {{ optimizer = "adamw", batch = 32 }} (or true), got {value!r}'
        )
    where.unknown_keys(value, TRAIN_KEYS, prefix="train.")
    try:
        return StepSpec(**value)
    except StepError as error:
        raise where.error(f"train.{error.key}", error.problem) from None


def _step_for_limits(limits: dict[str, float], train: StepSpec | None, where: Place, remedy: str) -> None:
    """A budget on a training step's figure needs a step, or it would pass unmeasured."""
    step_limits = [metrics.get(name).limit_key for name in limits if metrics.get(name).train]
    if step_limits and train is None:
        raise where.error(step_limits[0], f"budgets a training step, but the model has none: {remedy}")


def _serve_for_limits(limits: dict[str, float], serve: ServeSpec | None, where: Place, remedy: str) -> None:
    """A budget on a serving step's figure needs a step, or it would pass unmeasured."""
    serve_limits = [metrics.get(name).limit_key for name in limits if metrics.get(name).serve]
    if serve_limits and serve is None:
        raise where.error(serve_limits[0], f"budgets a serving step, but the model has none: {remedy}")


def _target_for_limits(limits: dict[str, float], target: targets.Target | None, where: Place, remedy: str) -> None:
    """A budget on an estimated latency needs a target, or it would pass unestimated."""
    estimates = [metrics.get(name).limit_key for name in limits if metrics.get(name).needs_target]
    if estimates and target is None:
        raise where.error(
            estimates[0],
            f"budgets an estimated latency, but the model has no target: {remedy} (`netbudget targets` lists them)",
        )


def serve_step(value: Any, where: Place) -> ServeSpec:
    """``serve = { context = 8192, batch = 4, kv_dtype = "float16", weights = "int4", group_size = 128,
    keep = ["lm_head"], fits = "24GiB" }`` (or a ``ServeSpec``, from a test) as the serving step it describes."""
    if isinstance(value, ServeSpec):
        return value
    if not isinstance(value, dict):
        raise where.error("serve", f"must be a table like {{ context = 8192, batch = 4 }}, got {value!r}")
    where.unknown_keys(value, SERVE_KEYS, prefix="serve.")
    if "context" not in value:
        raise where.error("serve.context", "missing: the tokens already in the cache, e.g. context = 8192")
    keep = value.get("keep", [])
    if not isinstance(keep, list):
        raise where.error("serve.keep", f'must be a list of module names like ["lm_head"], got {keep!r}')
    try:
        return ServeSpec(**{**value, "keep": tuple(keep)})
    except StepError as error:
        raise where.error(error.key, error.problem) from None


def _input_spec(item: Any, where: Place, index: int) -> InputSpec:
    key = f"inputs[{index}]"
    if not isinstance(item, dict):
        raise where.error(key, 'must be a table like { shape = [1, 128], dtype = "int64", high = 50257 }')
    where.unknown_keys(item, INPUT_KEYS, prefix=f"{key}.")
    if "shape" not in item:
        raise where.error(f"{key}.shape", "missing")
    try:
        dtype = devices.check_dtype(item.get("dtype", "float32"), where.key(f"{key}.dtype"), devices.INPUT_DTYPES)
    except devices.ChoiceError as error:
        raise ConfigError(str(error)) from None
    low, high = item.get("low", 0), item.get("high")
    for bound_name, bound in (("low", low), ("high", high)):
        if bound is None:
            continue
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise where.error(f"{key}.{bound_name}", f"must be a number, got {bound!r}")
        if not math.isfinite(bound):
            raise where.error(f"{key}.{bound_name}", f"must be a finite number, got {bound!r}")
    if devices.is_integer_dtype(dtype):
        smallest, past_largest = devices.integer_range(dtype)
        if not smallest <= low < past_largest:
            raise where.error(f"{key}.low", f"must be within {dtype}'s range [{smallest}, {past_largest}), got {low!r}")
        if high is not None and not smallest < high <= past_largest:
            raise where.error(
                f"{key}.high", f"must be within {dtype}'s range ({smallest}, {past_largest}] (exclusive), got {high!r}"
            )
    if devices.is_integer_dtype(dtype) and high is None:
        raise where.error(
            f"{key}.high",
            f"an integer input needs 'high' (exclusive upper bound, e.g. the vocabulary size), dtype {dtype}",
        )
    if high is not None and high <= low:
        raise where.error(f"{key}.high", f"must be greater than low ({low}), got {high}")
    return InputSpec(shape=_shape(item["shape"], where, f"{key}.shape"), dtype=dtype, low=low, high=high)


def parse_limits(table: dict[str, Any], where: Place) -> dict[str, float]:
    """``{"max_params": "30k", ...}`` -> ``{"params": 30000, ...}``; rejects unknown keys and bad values."""
    where.unknown_keys(table, metrics.LIMIT_KEYS)
    limits = {}
    for key, value in table.items():
        try:
            number = units.parse_quantity(value)
        except units.QuantityError as error:
            raise where.error(key, str(error)) from None
        if number <= 0:
            raise where.error(key, f"must be a positive budget, got {value!r}")
        limits[key[len("max_") :]] = number
    return limits


#: What a check from a test takes besides its limits (marker or ``check()`` keywords), as a
#: registered model's table does.
CHECK_RULES = ("max_increase", "strict", "train", "serve", "target")


@dataclass(frozen=True)
class CheckSpec:
    """A check's limits and rules, from its marker and ``check()`` keywords."""

    limits: dict[str, float] = field(default_factory=dict)
    max_increase: dict[str, Increase] = field(default_factory=dict)
    strict: bool = False
    train: StepSpec | None = None
    serve: ServeSpec | None = None
    target: targets.Target | None = None


def parse_check(
    table: dict[str, Any],
    where: Place,
    increase: dict[str, Increase] | None = None,
    strict: bool = False,
    target: targets.Target | None = None,
    own_targets: dict[str, targets.Target] | None = None,
) -> CheckSpec:
    """A check's keywords (``max_params=...``, ``max_increase=...``, ``strict=...``, ``train=...``,
    ``serve=...``, ``target=...``) validated as a registered model's table is; ``max_increase``,
    ``strict`` and ``target`` default to ``[tool.netbudget]``'s ``increase``, ``strict`` and
    ``target``, as a registered model's do, and a budget on a training or serving step's figure
    needs ``train`` or ``serve``, one on an estimated latency a target. ``target`` is a target's
    name (built in or in ``own_targets``, the project's) or a ``targets.Target``. Without
    ``own_targets`` (``budget()``, at import, before the project is read) a name is not looked
    up and a latency budget may still get the project's target: both are checked when it runs."""
    where.unknown_keys(table, metrics.LIMIT_KEYS + CHECK_RULES)
    limits = parse_limits({key: value for key, value in table.items() if key not in CHECK_RULES}, where)
    own_increase = _max_increase(table["max_increase"], where) if "max_increase" in table else dict(increase or {})
    train = train_step(table["train"], where) if table.get("train") not in (None, False) else None
    _step_for_limits(limits, train, where, 'pass train=True, or the settings: train={"optimizer": "sgd", "batch": 8}')
    serve = serve_step(table["serve"], where) if table.get("serve") is not None else None
    _serve_for_limits(limits, serve, where, 'pass serve={"context": 2048}, or a ServeSpec')
    chosen = table.get("target")
    if isinstance(chosen, targets.Target):
        target = chosen
    elif own_targets is not None:
        target = _target(chosen, where, own_targets) if chosen is not None else target
    elif chosen is not None and not isinstance(chosen, str):
        raise where.error("target", f"must be a target's name like 'a100' or a targets.Target, got {chosen!r}")
    if own_targets is not None:
        _target_for_limits(limits, target, where, 'pass target="a100", or set target under [tool.netbudget]')
    strict = _bool(table.get("strict", strict), where, "strict")
    return CheckSpec(limits, own_increase, strict, train, serve, target)


def _max_increase(value: Any, where: Place) -> dict[str, Increase]:
    """``"2%"`` for every metric, or ``{ params = "1%", macs = "0" }`` per metric."""
    if value is None:
        return {}
    if isinstance(value, dict):
        inner = where.within("max_increase")
        inner.unknown_keys(value, metrics.NAMES)
        return {metric: _increase(amount, inner, metric) for metric, amount in value.items()}
    return dict.fromkeys(metrics.GROWTH, _increase(value, where, "max_increase"))


def _increase(value: Any, where: Place, key: str) -> Increase:
    try:
        fraction = units.parse_percent(value)
    except units.QuantityError as error:
        raise where.error(key, str(error)) from None
    if fraction is not None:
        if fraction < 0:
            raise where.error(key, f"must not be negative, got {value!r}")
        return Increase(fraction=fraction)
    try:
        amount = units.parse_quantity(value)
    except units.QuantityOverflow as error:
        raise where.error(key, str(error)) from None
    except units.QuantityError:
        raise where.error(key, f"{value!r} is neither a percentage like '2%' nor a quantity like '1k'") from None
    if amount < 0:
        raise where.error(key, f"must not be negative, got {value!r}")
    return Increase(amount=amount)


def _shape(value: Any, where: Place, key: str) -> list[int]:
    problem = devices.shape_problem(value if isinstance(value, list) else None)
    if problem:
        raise where.error(key, f"{problem}, got {value!r}" if problem.startswith("must") else problem)
    return list(value)


def _device(value: Any, where: Place, key: str) -> str:
    try:
        return devices.check_device(value, where.key(key))
    except devices.ChoiceError as error:
        raise ConfigError(str(error)) from None


def _dtype(value: Any, where: Place, key: str, allowed: tuple[str, ...] = devices.MODEL_DTYPES) -> str | None:
    if value is None:
        return None
    try:
        return devices.check_dtype(value, where.key(key), allowed)
    except devices.ChoiceError as error:
        raise ConfigError(str(error)) from None


def _bool(value: Any, where: Place, key: str) -> bool:
    if not isinstance(value, bool):
        raise where.error(key, f"must be true or false, got {value!r}")
    return value


def check_cuda(settings: Settings, cuda_available: bool, device_override: str | None = None) -> None:
    """CUDA asked for where none exists is a configuration error, not a failing model."""
    if cuda_available:
        return
    if device_override and device_override.startswith("cuda"):
        raise ConfigError(f"--netbudget-device={device_override}: CUDA is not available on this machine")
    if device_override:
        return
    for spec in settings.models:
        if spec.device.startswith("cuda"):
            raise Place.table(settings.path, f"tool.netbudget.models.{spec.name}").error(
                "device",
                f"{spec.device!r} asked for, but CUDA is not available on this machine (use 'auto' to fall back to CPU)",
            )
