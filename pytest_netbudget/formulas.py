"""One registry of counting formulas: aten op (or module type) -> MACs and FLOPs.

The engine sees every aten operator a forward runs and looks its formula up
here. Linear-algebra ops reuse ``torch.utils.flop_counter``'s formulas (so that
``2 * macs`` equals ``FlopCounterMode`` wherever it counts), and add what it
lacks: bias additions, the fused attention and RNN kernels that eval-mode models
take on CPU and CUDA, and a documented per-element cost for everything else.

An op that is neither counted here nor known to be free is reported by the
engine as uncounted, never as a silent zero.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import flop_counter


@dataclass(frozen=True)
class Cost:
    """What one op call costs. ``flops`` defaults to ``2 * macs``."""

    macs: int = 0
    flops: int | None = None

    @property
    def total_flops(self) -> int:
        return 2 * self.macs if self.flops is None else self.flops


class OpCall:
    """An operator call as a formula sees it: arguments bound by schema name, and the result."""

    def __init__(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.out = out
        self._bound: dict[str, Any] | None = None

    def __getitem__(self, name: str) -> Any:
        if self._bound is None:
            self._bound = _bind(self.func, self.args, self.kwargs)
        return self._bound[name]

    @property
    def first_out(self) -> torch.Tensor:
        """The first tensor the op returned."""
        return self.out[0] if isinstance(self.out, (tuple, list)) else self.out


OpFormula = Callable[[OpCall], Cost]
ModuleFormula = Callable[[torch.nn.Module, tuple, Any], Cost]

_FREE = object()  # marker: the op moves or creates data and does no arithmetic

_op_formulas: dict[str, OpFormula | object] = {}
_module_formulas: dict[type, ModuleFormula] = {}
_lookup_cache: dict[Any, OpFormula | object | None] = {}


def _bind(func: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    bound: dict[str, Any] = {}
    for index, argument in enumerate(func._schema.arguments):
        if index < len(args) and not argument.kwarg_only:
            bound[argument.name] = args[index]
        elif argument.name in kwargs:
            bound[argument.name] = kwargs[argument.name]
        else:
            bound[argument.name] = argument.default_value if argument.has_default_value() else None
    return bound


def _op_name(target: Any) -> str:
    """The qualified name ('aten::mm') of an op packet, an overload, or a string."""
    if isinstance(target, str):
        if "::" not in target:
            raise ValueError(f"an op name needs its namespace, like 'aten::{target}' or 'mylib::{target}'")
        return target.split(".")[0]
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name
    raise TypeError(
        f"cannot register a formula for {target!r}: expected an op (torch.ops.ns.op), 'ns::op' or an nn.Module subclass"
    )


def register_formula(target: Any, *, replace: bool = False) -> Callable[[Callable], Callable]:
    """Register how to count an op or a module type; use as a decorator.

    For an op (``torch.ops.mylib.fused_mlp``, one of its overloads, or the string
    ``"mylib::fused_mlp"``) the function takes an :class:`OpCall` and returns a
    :class:`Cost`. For an ``nn.Module`` subclass it takes ``(module, inputs, output)``
    and returns a :class:`Cost`; the ops that run inside such a module are then not
    counted again. ``replace=True`` overrides a built-in formula.
    """
    targets = target if isinstance(target, (list, tuple)) else [target]

    def decorator(function: Callable) -> Callable:
        for one in targets:
            if isinstance(one, type) and issubclass(one, torch.nn.Module):
                if one in _module_formulas and not replace:
                    raise ValueError(f"a formula for {one.__name__} is already registered; pass replace=True")
                _module_formulas[one] = function
                continue
            name = _op_name(one)
            if name in _op_formulas and not replace:
                raise ValueError(f"a formula for {name} is already registered; pass replace=True")
            _op_formulas[name] = function
        _lookup_cache.clear()
        return function

    return decorator


def _register_free(*names: str) -> None:
    for name in names:
        _op_formulas[f"aten::{name}"] = _FREE


def lookup(func: Any) -> OpFormula | object | None:
    """The formula for an aten overload, ``FREE`` for data movement, None when uncounted.

    In-place variants (``add_``) share the formula of their functional op (``add``).
    """
    try:
        return _lookup_cache[func]
    except KeyError:
        pass
    name = func._schema.name
    found = _op_formulas.get(name)
    if found is None and name.endswith("_"):
        found = _op_formulas.get(name[:-1])
    if found is None and func.is_view:
        found = _FREE
    _lookup_cache[func] = found
    return found


def is_free(formula: object) -> bool:
    return formula is _FREE


def module_formula(module: torch.nn.Module) -> ModuleFormula | None:
    """The user formula registered for this module's type (or a base type), if any."""
    if not _module_formulas:
        return None
    for klass in type(module).__mro__:
        if klass in _module_formulas:
            return _module_formulas[klass]
    return None


# --- helpers ---------------------------------------------------------------------------


def numel(value: Any) -> int:
    return value.numel() if isinstance(value, torch.Tensor) else 0


def _torch_macs(packet: Any, call: OpCall) -> int:
    """MACs from FlopCounterMode's own formula, which counts 2 FLOPs per MAC."""
    return flop_counter.flop_registry[packet](*call.args, **call.kwargs, out_val=call.out) // 2


# Formulas are registered by name, so that an op a torch version lacks costs nothing.

# Formulas are registered by op name: an op that this torch version lacks costs nothing.

# --- linear algebra: MACs from torch's formulas, bias additions as extra FLOPs ----------


def _shapes(values: tuple) -> list[Any]:
    return [value.shape if isinstance(value, torch.Tensor) else value for value in values]


def _matmul_formula(torch_formula: Callable[..., int], operands: int, has_bias: bool) -> OpFormula:
    """MACs from FlopCounterMode's formula (2 FLOPs per MAC), called on the operand shapes
    directly; the bias (``self`` of addmm/baddbmm) adds one FLOP per output element."""
    raw = torch_formula.__wrapped__  # the formula without its pytree pass over every argument

    def formula(call: OpCall) -> Cost:
        if call.kwargs:
            return _generic_torch_formula(call)
        macs = raw(*_shapes(call.args[:operands])) // 2
        extra = numel(call.out) if has_bias else 0
        return Cost(macs, 2 * macs + extra)

    return formula


def _convolution_formula(call: OpCall) -> Cost:
    """aten.convolution(input, weight, bias, stride, padding, dilation, transposed, ...)."""
    if call.kwargs:
        return _generic_torch_formula(call)
    x, weight, bias, transposed = call.args[0], call.args[1], call.args[2], call.args[6]
    macs = flop_counter.conv_flop_count(x.shape, weight.shape, call.out.shape, transposed) // 2
    return Cost(macs, 2 * macs + (numel(call.out) if bias is not None else 0))


def _generic_torch_formula(call: OpCall) -> Cost:
    """Any op in FlopCounterMode's registry, through its registered (pytree-wrapped) formula."""
    macs = _torch_macs(call.func.overloadpacket, call)
    bias = next((call[name] for name in ("bias", "self") if name in _argument_names(call.func)), None)
    return Cost(macs, 2 * macs + (numel(call.first_out) if bias is not None else 0))


def _argument_names(func: Any) -> set[str]:
    return {argument.name for argument in func._schema.arguments}


register_formula("aten::mm")(_matmul_formula(flop_counter.mm_flop, 2, has_bias=False))
register_formula("aten::bmm")(_matmul_formula(flop_counter.bmm_flop, 2, has_bias=False))
register_formula("aten::addmm")(_matmul_formula(flop_counter.addmm_flop, 3, has_bias=True))
register_formula("aten::baddbmm")(_matmul_formula(flop_counter.baddbmm_flop, 3, has_bias=True))
register_formula(["aten::convolution", "aten::_convolution"])(_convolution_formula)
register_formula(["aten::cudnn_convolution", "aten::cudnn_convolution_transpose"])(_generic_torch_formula)


# --- per-element costs -----------------------------------------------------------------

#: FLOPs per output element of elementwise arithmetic and activations.
ELEMENTWISE_COST = 1
#: FLOPs per element of softmax / log_softmax (exponent, sum, divide).
SOFTMAX_COST = 3
#: FLOPs per element of a normalisation (mean, variance, normalise, scale, shift).
NORM_COST = 5
#: FLOPs per input element of a reduction (sum, mean, max, ...).
REDUCTION_COST = 1

_ELEMENTWISE = (
    "add",
    "sub",
    "rsub",
    "mul",
    "div",
    "neg",
    "reciprocal",
    "abs",
    "pow",
    "sqrt",
    "rsqrt",
    "exp",
    "exp2",
    "log",
    "log2",
    "log10",
    "log1p",
    "expm1",
    "sin",
    "cos",
    "tan",
    "tanh",
    "sigmoid",
    "relu",
    "relu6",
    "gelu",
    "silu",
    "elu",
    "selu",
    "celu",
    "leaky_relu",
    "hardtanh",
    "hardsigmoid",
    "hardswish",
    "softplus",
    "softshrink",
    "hardshrink",
    "mish",
    "erf",
    "erfc",
    "erfinv",
    "clamp",
    "clamp_min",
    "clamp_max",
    "minimum",
    "maximum",
    "fmin",
    "fmax",
    "eq",
    "ne",
    "lt",
    "gt",
    "le",
    "ge",
    "floor",
    "ceil",
    "round",
    "trunc",
    "frac",
    "sign",
    "sgn",
    "remainder",
    "fmod",
    "floor_divide",
    "square",
    "prelu",
    "_prelu_kernel",
    "threshold",
    "logical_and",
    "logical_or",
    "logical_not",
    "logical_xor",
    "bitwise_and",
    "bitwise_or",
    "bitwise_not",
    "bitwise_xor",
    "atan",
    "atan2",
    "asin",
    "acos",
    "sinh",
    "cosh",
    "asinh",
    "acosh",
    "atanh",
    "glu",
    "xlogy",
    "nan_to_num",
    "logit",
    "isnan",
    "isinf",
    "native_dropout",
    "bernoulli",
    "silu_backward",
    "_log_softmax_backward_data",
)
_ELEMENTWISE_WEIGHTED = {"addcmul": 2, "addcdiv": 2, "lerp": 2, "hypot": 3}
_REDUCTIONS = (
    "sum",
    "mean",
    "amax",
    "amin",
    "max",
    "min",
    "argmax",
    "argmin",
    "prod",
    "var",
    "std",
    "var_mean",
    "std_mean",
    "norm",
    "linalg_vector_norm",
    "logsumexp",
    "cumsum",
    "cumprod",
    "all",
    "any",
    "aminmax",
    "_adaptive_avg_pool2d",
    "_adaptive_avg_pool3d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "_adaptive_avg_pool1d",
    "adaptive_max_pool1d",
    "median",
    "nanmedian",
    "mode",
    "kthvalue",
    "topk",
    "sort",
    "cummax",
    "cummin",
)


def _per_output_element(cost: int) -> OpFormula:
    return lambda call: Cost(0, cost * numel(call.first_out))


def _per_input_element(cost: int) -> OpFormula:
    return lambda call: Cost(0, cost * numel(call.args[0]))


for _name in _ELEMENTWISE:
    _op_formulas[f"aten::{_name}"] = _per_output_element(ELEMENTWISE_COST)
for _name, _cost in _ELEMENTWISE_WEIGHTED.items():
    _op_formulas[f"aten::{_name}"] = _per_output_element(_cost)
for _name in _REDUCTIONS:
    _op_formulas[f"aten::{_name}"] = _per_input_element(REDUCTION_COST)
for _name in ("_softmax", "_log_softmax", "_safe_softmax", "softmax", "log_softmax"):
    _op_formulas[f"aten::{_name}"] = _per_output_element(SOFTMAX_COST)
for _name in (
    "native_batch_norm",
    "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training",
    "native_layer_norm",
    "native_group_norm",
    "instance_norm",
    "_fused_rms_norm",
    "cudnn_batch_norm",
    "miopen_batch_norm",
    "_batch_norm_with_update",
    "_batch_norm_no_update",
):
    _op_formulas[f"aten::{_name}"] = _per_output_element(NORM_COST)


def _window_formula(call: OpCall) -> Cost:
    """Pooling over windows: one FLOP per window element per output element."""
    spatial = int(re.search(r"pool(\d)d", call.func._schema.name).group(1))
    kernel = list(call["kernel_size"])
    window = math.prod(kernel) if len(kernel) == spatial else kernel[0] ** spatial
    return Cost(0, numel(call.first_out) * window)


for _name in (
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "mkldnn_max_pool2d",
    "mkldnn_max_pool3d",
    "quantized_max_pool2d",
):
    _op_formulas[f"aten::{_name}"] = _window_formula

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
for _name, _cost in INTERPOLATION_COST.items():
    _op_formulas[f"aten::{_name}"] = _per_output_element(_cost)

# Ops that move, select, create or reshape data and do no arithmetic. Views are
# recognised from their schema and need no entry.
_register_free(
    "clone",
    "copy",
    "_to_copy",
    "contiguous",
    "cat",
    "stack",
    "hstack",
    "vstack",
    "zeros",
    "ones",
    "empty",
    "empty_strided",
    "full",
    "fill",
    "zero",
    "arange",
    "linspace",
    "new_zeros",
    "new_ones",
    "new_empty",
    "new_full",
    "new_empty_strided",
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
    "rand",
    "randn",
    "randint",
    "rand_like",
    "randn_like",
    "randint_like",
    "normal",
    "uniform",
    "random",
    "scalar_tensor",
    "lift_fresh",
    "lift_fresh_copy",
    "_local_scalar_dense",
    "embedding",
    "index_select",
    "gather",
    "scatter",
    "index",
    "index_put",
    "index_copy",
    "index_fill",
    "masked_fill",
    "masked_select",
    "masked_scatter",
    "where",
    "slice_scatter",
    "select_scatter",
    "diagonal_scatter",
    "as_strided_scatter",
    "repeat",
    "repeat_interleave",
    "tile",
    "tril",
    "triu",
    "flip",
    "roll",
    "constant_pad_nd",
    "reflection_pad1d",
    "reflection_pad2d",
    "reflection_pad3d",
    "replication_pad1d",
    "replication_pad2d",
    "replication_pad3d",
    "_unsafe_view",
    "unsafe_split",
    "unsafe_split_with_sizes",
    "unsafe_chunk",
    "upsample_nearest1d",
    "upsample_nearest2d",
    "upsample_nearest3d",
    "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d",
    "_upsample_nearest_exact3d",
    "pixel_shuffle",
    "pixel_unshuffle",
    "channel_shuffle",
    "native_channel_shuffle",
    "im2col",
    "resize",
    "set",
    "one_hot",
    "bucketize",
    "searchsorted",
    "nonzero",
    "unique",
    "_unique2",
    "detach",
    "lift",
    "alias",
    "_reshape_alias",
    "bincount",
    "eye",
    "tril_indices",
    "triu_indices",
    "_pin_memory",
    "_assert_async",
    "_assert_tensor_metadata",
    "_has_compatible_shallow_copy_type",
    "isin",
    "item",
    "dropout",
    "feature_dropout",
    "alpha_dropout",
    "_efficientzerotensor",
    "_make_dep_token",
    "sym_constrain_range_for_size",
)


@register_formula("aten::_cdist_forward")
def _cdist_formula(call: OpCall) -> Cost:
    """Pairwise distances: a difference, a square and an add per feature of each pair."""
    features = call["x1"].shape[-1]
    return Cost(0, 3 * features * numel(call.first_out))


@register_formula("aten::embedding_bag")
def _embedding_bag_formula(call: OpCall) -> Cost:
    """Bags of embeddings: one add per gathered element."""
    gathered = numel(call["indices"]) * call["weight"].shape[-1]
    return Cost(0, gathered)


@register_formula("aten::_embedding_bag")
def _embedding_bag_internal_formula(call: OpCall) -> Cost:
    return _embedding_bag_formula(call)


# --- attention ---------------------------------------------------------------------------


def _attention_extra(batch_heads: int, q_len: int, k_len: int, head_dim: int, masked: bool) -> int:
    """Elementwise FLOPs of attention as PyTorch's math path runs it (the path taken on meta):
    q and k scaled, softmax over the scores, and the mask added when there is one."""
    scores = batch_heads * q_len * k_len
    return batch_heads * (q_len + k_len) * head_dim + SOFTMAX_COST * scores + (scores if masked else 0)


def _sdpa_macs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> int:
    batch_heads = math.prod(query.shape[:-2])
    q_len, k_len = query.shape[-2], key.shape[-2]
    return batch_heads * q_len * k_len * (query.shape[-1] + value.shape[-1])


def _sdpa_formula(call: OpCall) -> Cost:
    query, key, value = call["query"], call["key"], call["value"]
    macs = _sdpa_macs(query, key, value)
    masked = (
        bool(call["is_causal"])
        or _bound_or_none(call, "attn_mask") is not None
        or _bound_or_none(call, "attn_bias") is not None
    )
    extra = _attention_extra(math.prod(query.shape[:-2]), query.shape[-2], key.shape[-2], query.shape[-1], masked)
    return Cost(macs, 2 * macs + extra)


def _bound_or_none(call: OpCall, name: str) -> Any:
    try:
        return call[name]
    except KeyError:
        return None


register_formula(
    [
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention",
        "aten::_scaled_dot_product_efficient_attention",
        "aten::_scaled_dot_product_cudnn_attention",
        "aten::_scaled_dot_product_fused_attention_overrideable",
    ]
)(_sdpa_formula)


@register_formula("aten::_native_multi_head_attention")
def _native_mha_formula(call: OpCall) -> Cost:
    """The ``nn.MultiheadAttention`` fast path: in-projection, QK^T, AV, out-projection in one kernel.

    Counted as the unfused path counts it (PyTorch's slow path, taken on meta): with
    ``need_weights`` the scores are formed explicitly, q alone is scaled and the weights
    are averaged over heads; without it, the attention runs as SDPA.
    """
    query, key = call["query"], call["key"]
    embed, heads = call["embed_dim"], call["num_head"]
    batch, q_len, k_len = query.shape[0], query.shape[1], key.shape[1]
    head_dim = embed // heads
    projections = (batch * q_len + 2 * batch * k_len) * embed * embed + batch * q_len * embed * embed
    scores = batch * heads * q_len * k_len
    macs = projections + 2 * scores * head_dim
    biases = batch * (q_len + 2 * k_len) * embed + batch * q_len * embed
    masked = call["mask"] is not None
    if call["need_weights"]:
        extra = batch * q_len * embed + SOFTMAX_COST * scores + (scores if masked else 0)
        if call["average_attn_weights"]:
            extra += REDUCTION_COST * scores
    else:
        extra = _attention_extra(batch * heads, q_len, k_len, head_dim, masked)
    return Cost(macs, 2 * macs + biases + extra)


@register_formula("aten::_transformer_encoder_layer_fwd")
def _transformer_encoder_layer_formula(call: OpCall) -> Cost:
    """The ``nn.TransformerEncoderLayer`` fast path: self-attention, two layer norms and the
    feed-forward block in one kernel, counted as the unfused layer counts them."""
    src = call["src"]
    embed, heads = call["embed_dim"], call["num_heads"]
    hidden = call["ffn_weight_1"].shape[0]
    tokens = numel(src) // embed
    batch = src.shape[0] if src.dim() == 3 else 1
    seq = tokens // batch
    scores = batch * heads * seq * seq
    macs = 4 * tokens * embed * embed + 2 * scores * (embed // heads) + 2 * tokens * embed * hidden
    extra = (
        tokens * 3 * embed  # in-projection bias
        + _attention_extra(batch * heads, seq, seq, embed // heads, call["mask"] is not None)
        + tokens * embed  # out-projection bias
        + 2 * tokens * embed  # two residual additions
        + 2 * NORM_COST * tokens * embed  # two layer norms
        + 2 * tokens * hidden  # first feed-forward bias and its activation
        + tokens * embed  # second feed-forward bias
    )
    return Cost(macs, 2 * macs + extra)


# --- recurrent layers ------------------------------------------------------------------------

#: Elementwise FLOPs per hidden unit per step after the two projections, as the
#: unfused cells run them: LSTM gates, cell and hidden update; GRU gates and blend; plain RNN.
RNN_CELL_COST = {"lstm": 13, "gru": 10, "rnn": 2}
_MKLDNN_MODES = {0: "rnn", 1: "rnn", 2: "lstm", 3: "gru"}


def _rnn_layer_cost(
    kind: str, steps_x_batch: int, w_ih: torch.Tensor, w_hh: torch.Tensor, w_hr: torch.Tensor | None, has_bias: bool
) -> Cost:
    """One direction of one layer over a whole sequence: input and recurrent projections
    per step, the optional LSTM output projection, biases, and the cell's elementwise work."""
    gates, inputs = w_ih.shape
    hidden = gates // {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    macs = steps_x_batch * (gates * inputs + gates * w_hh.shape[1])
    if w_hr is not None:
        macs += steps_x_batch * hidden * w_hr.shape[0]
    biases = 2 * steps_x_batch * gates if has_bias else 0
    return Cost(macs, 2 * macs + biases + RNN_CELL_COST[kind] * steps_x_batch * hidden)


@register_formula("aten::mkldnn_rnn_layer")
def _mkldnn_rnn_layer_formula(call: OpCall) -> Cost:
    """oneDNN's whole-sequence RNN kernel, one layer and direction per call (LSTM on CPU)."""
    inp = call["input"]
    steps_x_batch = inp.shape[0] * inp.shape[1]
    kind = _MKLDNN_MODES[call["mode"]]
    return _rnn_layer_cost(kind, steps_x_batch, call["weight0"], call["weight1"], None, call["has_biases"])


def _whole_rnn_formula(kind: str) -> OpFormula:
    def formula(call: OpCall) -> Cost:
        """A whole multi-layer RNN in one op (``aten.lstm`` and friends when not decomposed)."""
        params = list(call["params"])
        data = call.args[0]
        if _bound_or_none(call, "batch_sizes") is not None:
            steps_x_batch = data.shape[0]
        else:
            steps_x_batch = data.shape[0] * data.shape[1]
        has_bias = call["has_biases"]
        per_layer = 2 + (2 if has_bias else 0)
        directions = 2 if call["bidirectional"] else 1
        total_chunk = len(params) // (call["num_layers"] * directions)
        with_projection = total_chunk == per_layer + 1
        macs = flops = 0
        for index in range(call["num_layers"] * directions):
            chunk = params[index * total_chunk : (index + 1) * total_chunk]
            w_hr = chunk[-1] if with_projection else None
            cost = _rnn_layer_cost(kind, steps_x_batch, chunk[0], chunk[1], w_hr, has_bias)
            macs += cost.macs
            flops += cost.total_flops
        return Cost(macs, flops)

    return formula


register_formula("aten::lstm")(_whole_rnn_formula("lstm"))
register_formula("aten::gru")(_whole_rnn_formula("gru"))
register_formula(["aten::rnn_tanh", "aten::rnn_relu"])(_whole_rnn_formula("rnn"))
