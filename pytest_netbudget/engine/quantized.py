"""Quantized weights: packed into TorchScript objects, or held by a tensor subclass.

``torch.ao`` quantized ``Linear`` and convolution modules keep weight and bias in an opaque
packed object (``_packed_params``), so ``parameters()`` sees none of them. The inventory
unpacks them: the weight's int8 values with their scales and zero points, and the bias,
count as the module's parameters (not trainable), at the bytes ``state_dict`` saves.

torchao's quantized weights are parameters of a tensor subclass that reports the float dtype
and shape of the weight it stands for, and holds the packed values and their scales as inner
tensors (PyTorch's ``__tensor_flatten__`` protocol names them): their parameters are the
weight's elements, their bytes those of the inner tensors.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

_PLAIN = (torch.Tensor, torch.nn.Parameter)


def is_packed(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a subclass holding its values in inner tensors (torchao's quantized
    weights); a jagged nested tensor is one too, but not a weight."""
    return type(tensor) not in _PLAIN and is_traceable_wrapper_subclass(tensor) and not tensor.is_nested


def inner_tensors(tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inner tensors of a packed tensor, by name."""
    names, _ = cast(Any, tensor).__tensor_flatten__()  # a tensor subclass's protocol, not Tensor's
    return {name: getattr(tensor, name) for name in names}


def packed_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """Weight and bias held in ``module``'s own packed object; none for any other module."""
    # A ScriptObject is held in the instance's __dict__ (or by its class), never in _parameters,
    # _buffers or _modules: asking those first spares Module.__getattr__'s AttributeError.
    if "_packed_params" not in vars(module) and not hasattr(type(module), "_packed_params"):
        return []
    if not isinstance(getattr(module, "_packed_params", None), torch.ScriptObject):
        return []
    weight, bias = cast(Any, module)._weight_bias()  # the quantized module's own method
    return [tensor for tensor in (weight, bias) if tensor is not None]


def stored_bytes(tensor: torch.Tensor) -> int:
    """Bytes of a tensor's values, and for a quantized one its scales and zero points
    (float64 and int64, one pair per tensor or per channel); a packed one's inner tensors."""
    if is_packed(tensor):
        return sum(stored_bytes(inner) for inner in inner_tensors(tensor).values())
    values = tensor.numel() * tensor.element_size()
    if not tensor.is_quantized:
        return values
    if tensor.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return values + 8 + 8
    return values + 16 * tensor.q_per_channel_scales().numel()
