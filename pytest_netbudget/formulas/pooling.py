"""Pooling and interpolation: work per output element over a window or the neighbours sampled.

Nearest-neighbour upsampling computes nothing and is among the free ops.
"""

from __future__ import annotations

import math
import re

from .elementwise import REDUCTION_COST, per_input_element, per_output_element
from .registry import Cost, OpCall, aten, numel, register

#: FLOPs per output element of interpolation: one per neighbour sampled.
INTERPOLATION_COST = {
    "upsample_linear1d": 2,
    "upsample_bilinear2d": 4,
    "_upsample_bilinear2d_aa": 4,
    "upsample_trilinear3d": 8,
    "upsample_bicubic2d": 16,
    "_upsample_bicubic2d_aa": 16,
    "grid_sampler_2d": 4,
    "grid_sampler_3d": 8,
}


_SPATIAL_DIMS = re.compile(r"pool(\d)d")  # compiled once: re's own cache lookup costs more than the search


def window_elements(call: OpCall) -> int:
    """Elements of a pooling window (``kernel_size`` may give one size for every dimension)."""
    found = _SPATIAL_DIMS.search(call.func.name())
    if found is None:
        raise ValueError(f"{call.func.name()}: no 1d, 2d or 3d in the pooling op's name")
    spatial = int(found.group(1))
    kernel = list(call["kernel_size"])
    return math.prod(kernel) if len(kernel) == spatial else kernel[0] ** spatial


def _window_formula(call: OpCall) -> Cost:
    """Pooling over windows: one FLOP per window element per output element."""
    return Cost(0, numel(call.first_out) * window_elements(call))


register(
    aten(
        """
        max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices max_pool3d_with_indices
        avg_pool1d avg_pool2d avg_pool3d mkldnn_max_pool2d mkldnn_max_pool3d quantized_max_pool2d
        """
    ),
    _window_formula,
    family="pooling",
    rule="1 FLOP per window element per output element",
)
register(
    aten(
        """
        _adaptive_avg_pool1d _adaptive_avg_pool2d _adaptive_avg_pool3d
        adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
        """
    ),
    per_input_element(REDUCTION_COST),
    family="pooling",
    rule=f"{REDUCTION_COST} FLOP per input element (adaptive pooling reduces every input once)",
)
for _name, _cost in INTERPOLATION_COST.items():
    register(
        f"aten::{_name}",
        per_output_element(_cost),
        family="pooling",
        rule=f"{_cost} FLOPs per output element (one per neighbour sampled)",
    )
