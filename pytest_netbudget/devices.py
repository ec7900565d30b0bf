"""Devices, dtypes and optimizers by the names users write, defined and checked in one place.

The config, the command line and the engine all accept exactly these names; each
caller passes the label that says where the value came from, so one message reads
right in every place (``pyproject.toml: [tool.netbudget] device: unknown device 'tpu'``).
"""

from __future__ import annotations

import difflib

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "meta")
MODEL_DTYPES = ("float32", "float16", "bfloat16", "float64")
INPUT_DTYPES = (*MODEL_DTYPES, "int64", "int32", "int16", "int8", "uint8", "bool")
#: Mixed precision for a training step (torch.autocast on CPU and CUDA).
AUTOCAST_DTYPES = ("bfloat16", "float16")
#: The optimizers a training step can take; "none" stops after the backward.
OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw", "none")
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
    if is_device(value):
        return value  # type: ignore[return-value]
    raise ChoiceError(f"{label}: unknown device {value!r}: use one of {', '.join(DEVICES)}{_close(value, DEVICES)}")


def check_dtype(value: object, label: str, allowed: tuple[str, ...] = MODEL_DTYPES) -> str:
    if isinstance(value, str) and value in allowed:
        return value
    raise ChoiceError(f"{label}: unknown dtype {value!r}: use one of {', '.join(allowed)}{_close(value, allowed)}")


def check_optimizer(value: object, label: str) -> str:
    if isinstance(value, str) and value in OPTIMIZERS:
        return value
    raise ChoiceError(
        f"{label}: unknown optimizer {value!r}: use one of {', '.join(OPTIMIZERS)}{_close(value, OPTIMIZERS)}"
    )


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
