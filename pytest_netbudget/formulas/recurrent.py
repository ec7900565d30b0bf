"""RNN, LSTM and GRU, whether they run as one whole-sequence kernel or as a whole op.

FlopCounterMode misses both forms; each is counted as the unfused cells would run:
per step, the input and recurrent projections, the biases and the cell's elementwise work.
"""

from __future__ import annotations

import torch

from .registry import Cost, OpCall, OpFormula, register

#: Elementwise FLOPs per hidden unit per step after the two projections, as the
#: unfused cells run them: LSTM gates, cell and hidden update; GRU gates and blend; plain RNN.
RNN_CELL_COST = {"lstm": 13, "gru": 10, "rnn": 2}
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
MKLDNN_MODES = {0: "rnn", 1: "rnn", 2: "lstm", 3: "gru"}


def rnn_layer_cost(
    kind: str, steps_x_batch: int, w_ih: torch.Tensor, w_hh: torch.Tensor, w_hr: torch.Tensor | None, has_bias: bool
) -> Cost:
    """One direction of one layer over a whole sequence: input and recurrent projections
    per step, the optional LSTM output projection, biases, and the cell's elementwise work."""
    gates, inputs = w_ih.shape
    hidden = gates // _GATES[kind]
    macs = steps_x_batch * (gates * inputs + gates * w_hh.shape[1])
    if w_hr is not None:
        macs += steps_x_batch * hidden * w_hr.shape[0]
    biases = 2 * steps_x_batch * gates if has_bias else 0
    return Cost(macs, 2 * macs + biases + RNN_CELL_COST[kind] * steps_x_batch * hidden)


def _mkldnn_rnn_layer_formula(call: OpCall) -> Cost:
    """oneDNN's whole-sequence RNN kernel, one layer and direction per call (LSTM on CPU)."""
    inp = call["input"]
    steps_x_batch = inp.shape[0] * inp.shape[1]
    kind = MKLDNN_MODES[call["mode"]]
    return rnn_layer_cost(kind, steps_x_batch, call["weight0"], call["weight1"], None, call["has_biases"])


def _whole_rnn_formula(kind: str) -> OpFormula:
    def formula(call: OpCall) -> Cost:
        """A whole multi-layer RNN in one op (``aten.lstm`` and friends when not decomposed)."""
        params = list(call["params"])
        data = call.args[0]
        packed = call.get("batch_sizes") is not None  # then data is [steps summed over rows, features]
        steps_x_batch = data.shape[0] if packed else data.shape[0] * data.shape[1]
        has_bias = call["has_biases"]
        per_layer = 2 + (2 if has_bias else 0)
        directions = 2 if call["bidirectional"] else 1
        total_chunk = len(params) // (call["num_layers"] * directions)
        with_projection = total_chunk == per_layer + 1
        macs = flops = 0
        for index in range(call["num_layers"] * directions):
            chunk = params[index * total_chunk : (index + 1) * total_chunk]
            w_hr = chunk[-1] if with_projection else None
            cost = rnn_layer_cost(kind, steps_x_batch, chunk[0], chunk[1], w_hr, has_bias)
            macs += cost.macs
            flops += cost.total_flops
        return Cost(macs, flops)

    return formula


_PER_ROW = "per layer, direction, step and batch row (I its input width, H hidden units):"
_BIASES = "(biases, when present)"

register(
    "aten::mkldnn_rnn_layer",
    _mkldnn_rnn_layer_formula,
    family="recurrent",
    rule=(
        "one layer and direction, per step and batch row: MACs = G*I + G*H with G = 4H (LSTM), 3H (GRU), H (RNN);"
        f" FLOPs = 2*MACs + 2*G {_BIASES} + {RNN_CELL_COST['lstm']}*H (LSTM), {RNN_CELL_COST['gru']}*H (GRU),"
        f" {RNN_CELL_COST['rnn']}*H (RNN)"
    ),
)
register(
    "aten::lstm",
    _whole_rnn_formula("lstm"),
    family="recurrent",
    rule=(
        f"{_PER_ROW} MACs = 4H*I + 4H*R (R = H, or P with a projection to P, which adds H*P);"
        f" FLOPs = 2*MACs + 2*4H {_BIASES} + {RNN_CELL_COST['lstm']}*H (gates, cell and hidden update)"
    ),
)
register(
    "aten::gru",
    _whole_rnn_formula("gru"),
    family="recurrent",
    rule=f"{_PER_ROW} MACs = 3H*I + 3H*H; FLOPs = 2*MACs + 2*3H {_BIASES} + {RNN_CELL_COST['gru']}*H (gates and blend)",
)
register(
    ["aten::rnn_tanh", "aten::rnn_relu"],
    _whole_rnn_formula("rnn"),
    family="recurrent",
    rule=f"{_PER_ROW} MACs = H*I + H*H; FLOPs = 2*MACs + 2*H {_BIASES} + {RNN_CELL_COST['rnn']}*H (activation)",
)
