"""The bytes of a model's weights at the precision it is planned to be served in.

A plan names a precision (``float16``, ``bfloat16``, ``float32``, ``fp8``, ``int8``,
``int4``), a group size, and modules kept at their own precision. Counted per unique
tensor (a tied embedding and LM head once), charged to the first module that holds it,
as the inventory charges its parameters:

- a float plan casts every floating parameter;
- ``int8``, ``int4`` and ``fp8`` store every parameter with two or more dimensions (weight
  matrices, embedding tables, experts, convolution kernels) in that many bits an element,
  rounded up to whole bytes per tensor, plus a 16-bit scale per group (``int4`` also a
  16-bit zero point: asymmetric, as torchao's and GPTQ's int4; ``int8`` and ``fp8`` are
  symmetric). A group is ``group_size`` consecutive elements along the last dimension (a
  linear layer's input features), or the whole of it when no group size is given
  (per output channel). So int4 with group 128 costs 4 + 2 * 16 / 128 = 4.25 bits a weight;
- everything else (biases, norm scales: one-dimensional parameters), every buffer, the
  modules named in ``keep`` (and all below them) and weights quantized already (torch.ao's
  packed ones, torchao's tensor subclasses) stay as they are (at the profiled dtype where one
  was given).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence

import torch

from ..devices import GROUPED_PRECISIONS, WEIGHT_BITS
from .quantized import is_packed, packed_tensors, stored_bytes

SCALE_BYTES = 2  # a 16-bit (float16 / bfloat16) scale, and zero point, per group


def quantized_bytes(shape: Sequence[int], precision: str, group_size: int | None) -> int:
    """Bytes of one tensor stored at an integer or fp8 ``precision``: its elements rounded up
    to whole bytes, and the scales (and zero points) of its groups along the last dimension."""
    numel = 1
    for size in shape:
        numel *= size
    row = shape[-1] if shape else 1
    rows = numel // row if row else 0
    groups = rows * (-(-row // group_size) if group_size else 1)
    per_group = SCALE_BYTES * (2 if GROUPED_PRECISIONS[precision] else 1)
    return -(-numel * WEIGHT_BITS[precision] // 8) + groups * per_group


def kept_paths(modules: list[tuple[str, torch.nn.Module]], keep: Sequence[str]) -> set[str]:
    """Paths of the modules ``keep`` names: an entry is a module's path or its trailing part
    (``embed_tokens`` names ``model.embed_tokens``); a module below a kept one is kept.
    An entry that names no module is an error, with the closest paths."""
    paths = [path for path, _ in modules if path]
    kept: set[str] = set()
    for entry in keep:
        named = [path for path in paths if path == entry or path.endswith("." + entry)]
        if not named:
            raise ValueError(f"serve keep: {entry!r} names no module of the model{_closest(entry, paths)}")
        kept.update(named)
    return {path for path in paths if any(path == top or path.startswith(top + ".") for top in kept)}


def _closest(entry: str, paths: list[str]) -> str:
    names = sorted({path.rsplit(".", 1)[-1] for path in paths} | set(paths))
    close = difflib.get_close_matches(entry, names, n=3)
    return f"; did you mean {', '.join(repr(name) for name in close)}?" if close else ""


def planned_bytes(
    modules: list[tuple[str, torch.nn.Module]],
    precision: str | None,
    group_size: int | None,
    keep: Sequence[str],
    dtype: torch.dtype | None,
) -> list[int]:
    """Bytes at ``precision`` (None: as they are), per module (in ``modules`` order): each unique
    parameter and buffer charged to the first module that holds it."""
    charged = [0] * len(modules)
    for index, _, _, planned in _planned(modules, precision, group_size, keep, dtype):
        charged[index] += planned
    for index, (_, module) in enumerate(modules):
        charged[index] += sum(stored_bytes(tensor) for tensor in packed_tensors(module))
    return charged


def planned_shares(
    modules: list[tuple[str, torch.nn.Module]],
    precision: str | None,
    group_size: int | None,
    keep: Sequence[str],
    dtype: torch.dtype | None,
) -> dict[str, float]:
    """For each parameter the plan stores at another precision, by its name (``layers.0.q.weight``):
    its bytes at the plan over its bytes as profiled, the share of a whole read of it that a
    server holding the plan moves."""
    shares = {}
    for _, name, tensor, planned in _planned(modules, precision, group_size, keep, dtype):
        own = _tensor_bytes(tensor, None, group_size, dtype)
        if own and planned != own:
            shares[name] = planned / own
    return shares


def _planned(
    modules: list[tuple[str, torch.nn.Module]],
    precision: str | None,
    group_size: int | None,
    keep: Sequence[str],
    dtype: torch.dtype | None,
) -> Iterator[tuple[int, str, torch.Tensor, int]]:
    """(index of the first module that holds it, its name, the tensor, its bytes at ``precision``)
    of each unique parameter and buffer."""
    kept = kept_paths(modules, keep)
    holders: dict[int, list[str]] = {}
    for path, module in modules:
        for table in (module._parameters, module._buffers):
            for tensor in table.values():
                if tensor is not None:
                    holders.setdefault(id(tensor), []).append(path)
    seen: set[int] = set()
    for index, (path, module) in enumerate(modules):
        for table, is_param in ((module._parameters, True), (module._buffers, False)):
            for key, tensor in table.items():
                if tensor is None or id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                as_is = not is_param or any(holder in kept for holder in holders[id(tensor)])
                name = f"{path}.{key}" if path else key
                yield index, name, tensor, _tensor_bytes(tensor, None if as_is else precision, group_size, dtype)


def _tensor_bytes(
    tensor: torch.Tensor, precision: str | None, group_size: int | None, dtype: torch.dtype | None
) -> int:
    """One tensor's bytes at ``precision`` (None: as it is, a floating one at ``dtype`` if given); a
    weight quantized already (torchao's) is counted as it is stored."""
    if is_packed(tensor):
        return stored_bytes(tensor)
    if not tensor.is_floating_point():
        return tensor.numel() * tensor.element_size()
    own = tensor.numel() * (dtype.itemsize if dtype is not None else tensor.element_size())
    if precision is None:
        return own
    if precision in GROUPED_PRECISIONS:
        return quantized_bytes(tensor.shape, precision, group_size) if tensor.dim() >= 2 else own
    return tensor.numel() * WEIGHT_BITS[precision] // 8
