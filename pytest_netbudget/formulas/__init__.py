"""Counting formulas: aten op (or module type) -> MACs and FLOPs, one module per family.

The engine sees every aten operator a forward runs and asks a :class:`FormulaSet` for
its formula. Linear algebra and convolutions reuse ``torch.utils.flop_counter``'s
formulas (so that ``2 * macs`` equals ``FlopCounterMode`` wherever it counts); the
other families add what it lacks: bias additions, the fused attention and RNN kernels
that eval-mode models take on CPU and CUDA, and a documented per-element cost for
everything else. An op that is neither counted nor known to be free is reported by
the engine as uncounted, never as a silent zero.
"""

from __future__ import annotations

# Each family registers its formulas when imported.
from . import (  # noqa: F401
    attention,
    backward,
    conv,
    free,
    indexing,
    linalg,
    losses,
    nested,
    optimizers,
    pooling,
    quantized,
    recurrent,
)
from .elementwise import ELEMENTWISE_COST, NORM_COST, REDUCTION_COST, SOFTMAX_COST
from .pooling import INTERPOLATION_COST
from .recurrent import RNN_CELL_COST
from .registry import Cost, FormulaError, FormulaSet, OpCall, Registered, apply, register_formula, registered

__all__ = [
    "ELEMENTWISE_COST",
    "INTERPOLATION_COST",
    "NORM_COST",
    "REDUCTION_COST",
    "RNN_CELL_COST",
    "SOFTMAX_COST",
    "Cost",
    "FormulaError",
    "FormulaSet",
    "OpCall",
    "Registered",
    "apply",
    "register_formula",
    "registered",
]
