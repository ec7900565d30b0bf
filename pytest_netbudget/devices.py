"""Devices, dtypes and optimizers by the names users write, defined and checked in one place.

The config, the command line and the engine all accept exactly these names; each
caller passes the label that says where the value came from, so one message reads
right in every place (``pyproject.toml: [tool.netbudget] device: unknown device 'tpu'``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "meta")
MODEL_DTYPES = ("float32", "float16", "bfloat16", "float64")
INPUT_DTYPES = (*MODEL_DTYPES, "int64", "int32", "int16", "int8", "uint8", "bool")
#: Mixed precision for a training step (torch.autocast on CPU and CUDA).
AUTOCAST_DTYPES = ("bfloat16", "float16")
#: The one table of the optimizers a training step can take: name -> the ``torch.optim`` class and
#: its keyword arguments; "none" stops after the backward. Config checks names against it, the
#: engine builds the optimizer from it.
OPTIMIZERS: dict[str, tuple[str, dict[str, float]] | None] = {
    "sgd": ("SGD", {"lr": 0.01}),
    "sgd-momentum": ("SGD", {"lr": 0.01, "momentum": 0.9}),
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {}),
    "none": None,
}
#: Bits of one weight at each precision a serving step can plan (fp8: float8_e4m3fn or e5m2).
WEIGHT_BITS = {"float32": 32, "float16": 16, "bfloat16": 16, "fp8": 8, "int8": 8, "int4": 4}
#: Precisions stored with per-group scales; True where a zero point is stored too (asymmetric).
GROUPED_PRECISIONS = {"int8": False, "fp8": False, "int4": True}
#: Bytes of one element of a key-value cache at each dtype it can be planned in.
KV_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "fp8": 1, "int8": 1}


class ChoiceError(ValueError):
    """A device or dtype that is not one of ours; the message says where and what."""


def is_device(value: object) -> bool:
    """auto, cpu, cuda, cuda:N or meta."""
    return isinstance(value, str) and (
        value in ("auto", "cpu", "cuda", "meta") or (value.startswith("cuda:") and value[5:].isdigit())
    )


def check_device(value: object, label: str) -> str:
    if isinstance(value, str) and is_device(value):
        return value
    raise ChoiceError(f"{label}: unknown device {value!r}: use one of {', '.join(DEVICES)}{_close(value, DEVICES)}")


def check_dtype(value: object, label: str, allowed: tuple[str, ...] = MODEL_DTYPES) -> str:
    problem = choice_problem(value, "dtype", allowed)
    if problem is None and isinstance(value, str):
        return value
    raise ChoiceError(f"{label}: {problem}")


def choice_problem(value: object, what: str, known: Iterable[str]) -> str | None:
    """Why ``value`` is not one of the ``known`` names of a ``what`` (None when it is), with the
    closest name when there is one: ``unknown optimizer 'adam-w': use one of ...; did you mean 'adamw'?``."""
    names = tuple(known)
    if isinstance(value, str) and value in names:
        return None
    return f"unknown {what} {value!r}: use one of {', '.join(names)}{_close(value, names)}"


#: torch keeps sizes and element counts in signed 64-bit integers.
LARGEST_SIZE = 2**63 - 1


def shape_problem(shape: object) -> str | None:
    """What is wrong with a tensor shape given by a user (None: nothing): sizes must be positive
    integers, each and their product within torch's 64-bit sizes (else torch fails in C++)."""
    if (
        not isinstance(shape, (list, tuple))
        or not shape
        or not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in shape)
    ):
        return "must be a list of positive integers like [1, 3, 224, 224]"
    for size in shape:
        if size > LARGEST_SIZE:
            return f"size {size} is past torch's largest size (2**63 - 1): every size must be below 2**63"
    elements = 1
    for size in shape:
        elements *= size
    if elements > LARGEST_SIZE:
        return f"{list(shape)} has {elements} elements, past torch's largest tensor (2**63 - 1 elements)"
    return None


def is_integer_dtype(name: str) -> bool:
    return name.startswith(("int", "uint"))


def integer_range(name: str) -> tuple[int, int]:
    """The values ``torch.randint`` can draw for an integer dtype: ``low`` from the first,
    the exclusive ``high`` up to the second (int64's ``high`` must itself fit in an int64)."""
    bits = int(name.removeprefix("u").removeprefix("int"))
    if name.startswith("uint"):
        return 0, 2**bits
    return -(2 ** (bits - 1)), min(2 ** (bits - 1), 2**63 - 1)


def _close(value: object, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(value).lower(), [name for name in known if name != "cuda:N"], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
