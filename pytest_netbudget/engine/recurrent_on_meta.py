"""On meta, LSTM, GRU and plain RNN layers run as CPU runs them, so that every figure agrees.

CPU runs ``nn.LSTM`` as oneDNN's whole-sequence kernel, ``mkldnn_rnn_layer``, one op per layer
and direction, wherever oneDNN takes it; every other recurrent layer (GRU, RNN, packed sequences,
LSTMs with projections, dtypes oneDNN refuses) runs aten's C++ loop, which projects the whole
sequence's input at once before stepping. On meta PyTorch takes neither: the loop projects each
step's input apart. That kept other tensors alive (an LSTM tagger's activations: 0.559 MiB on meta,
0.469 on CPU), added the per-step weight gradients in a training step (a 2-layer GRU(32, 64) over
16 steps of 4: FLOPs +1.7%), and made a long LSTM slow (thousands of ops where CPU runs a handful).

While a meta profile runs, a kernel at the ``AutogradMeta`` key of ``aten::lstm``, ``gru``,
``rnn_tanh`` and ``rnn_relu`` (both their padded and packed forms) takes CPU's path instead: the
same choice of kernel, the same ops in the same order, the same tensors kept alive, written here
from aten's ``RNN.cpp`` and ``mkldnn/RNN.cpp``. ``tests/test_recurrent_on_meta.py`` runs these
functions on CPU beside PyTorch's own kernels and checks that op for op they are the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .kernel_overrides import KernelOverride

Hidden = Any  # a tensor (GRU, RNN) or an (h, c) pair (LSTM)

#: ``ideep::rnn_kind::LSTM``, the mode oneDNN's kernel is called with.
_ONEDNN_LSTM = 2
#: Whether this torch has oneDNN's one-layer LSTM op (2.0 and later).
_ONEDNN_LAYER = hasattr(torch.ops.aten, "mkldnn_rnn_layer")


@dataclass(frozen=True)
class Flags:
    """What every recurrent aten op takes after its weights (the packed forms: no batch_first)."""

    has_biases: bool
    num_layers: int
    dropout: float
    train: bool
    bidirectional: bool
    batch_first: bool = False

    def dropout_after(self, layer: int) -> bool:
        """Whether dropout follows this layer: in training, between layers."""
        return self.dropout != 0 and self.train and layer < self.num_layers - 1


# --- CPU's choice -----------------------------------------------------------------------------


def cpu_takes_onednn(input: torch.Tensor, hx: Sequence[torch.Tensor]) -> bool:
    """Whether CPU runs this LSTM as oneDNN's kernel (aten's ``use_mkldnn`` and its projection
    check): oneDNN built in and enabled, float32, bfloat16 where this CPU has it, float16 without
    grad where this CPU has it, a non-empty input, no projection."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled and _ONEDNN_LAYER):
        return False
    dtype = input.dtype
    supported = (
        dtype == torch.float32
        or (dtype == torch.bfloat16 and _onednn_has("_is_mkldnn_bf16_supported"))
        or (dtype == torch.float16 and not torch.is_grad_enabled() and _onednn_has("_is_mkldnn_fp16_supported"))
    )
    return supported and input.numel() != 0 and hx[0].shape[2] == hx[1].shape[2]


def _onednn_has(check: str) -> bool:
    """This CPU's answer to one of oneDNN's dtype checks; False where this torch lacks the check."""
    return bool(getattr(torch.ops.mkldnn, check, lambda: False)())


# --- oneDNN's LSTM (aten/src/ATen/native/mkldnn/RNN.cpp: mkldnn_rnn) ----------------------------


def onednn_lstm(
    input: torch.Tensor, hx: Sequence[torch.Tensor], params: Sequence[torch.Tensor], flags: Flags
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The LSTM as ``mkldnn_rnn`` runs it: one ``mkldnn_rnn_layer`` per layer and direction."""
    stride = 4 if flags.has_biases else 2
    directions = 2 if flags.bidirectional else 1
    hidden_size = hx[0].shape[2]
    if flags.batch_first:
        input = input.transpose(0, 1)
    input = input.contiguous()
    layer_input = input  # the contiguous input lives on to the end, as C++'s local does
    h0, c0 = hx[0].contiguous(), hx[1].contiguous()
    hy: list[torch.Tensor] = []
    cy: list[torch.Tensor] = []
    layer_output: list[Any] = [None] * directions  # a layer's outputs live on until the next layer's replace them
    for layer in range(flags.num_layers):
        for direction in range(directions):
            index = layer * directions + direction
            weights = params[index * stride : (index + 1) * stride]
            w_ih, w_hh = weights[0], weights[1]
            h, c = h0[index], c0[index]
            b_ih = weights[2] if flags.has_biases else torch.zeros(w_ih.shape, dtype=w_ih.dtype, device=w_ih.device)
            b_hh = weights[3] if flags.has_biases else torch.zeros(w_hh.shape, dtype=w_hh.dtype, device=w_hh.device)
            outputs = torch.ops.aten.mkldnn_rnn_layer(
                layer_input, w_ih, w_hh, b_ih, b_hh, h, c, direction > 0, [], _ONEDNN_LSTM,
                hidden_size, flags.num_layers, flags.has_biases, flags.bidirectional, flags.batch_first, flags.train,
            )  # fmt: skip
            layer_output[direction] = outputs[0]
            hy.append(outputs[1])
            cy.append(outputs[2])
            del outputs, b_ih, b_hh  # the workspace goes with them unless autograd keeps it
        layer_input = layer_output[0] if directions == 1 else torch.cat(layer_output, -1)
        if flags.dropout_after(layer):
            layer_input = F.dropout(layer_input, flags.dropout, training=True)
    output = layer_input.transpose(0, 1) if flags.batch_first else layer_input
    return output, torch.stack(hy, 0), torch.stack(cy, 0)


def onednn_lstm_workspace_bytes(steps: int, batch: int, inputs: int, hidden: int, itemsize: int) -> int:
    """Bytes of the workspace that oneDNN's LSTM keeps for its backward, one layer and direction in
    training (oneDNN 3.x ``rnn_utils``: gates, hidden states, layer and cell states, their three
    gradients, each region page-aligned; leading dimensions padded to 64 bytes and kept off
    multiples of 256). PyTorch's meta kernel gives an empty one."""

    def good_ld(dim: int, size: int) -> int:
        step = 64 // size
        ld = -(-dim // step) * step
        return ld + step if ld % 256 == 0 else ld

    rows = steps * batch
    states = 2 * (steps + 1) * batch  # (layers + 1) x (steps + 1) rows, for one layer and direction
    widest = max(inputs, hidden)
    regions = (
        rows * good_ld(4 * hidden, itemsize) * itemsize,  # gates
        rows * good_ld(hidden, itemsize) * itemsize,  # hidden states
        states * good_ld(widest, itemsize) * itemsize,  # layer (and iteration) states
        states * hidden * itemsize,  # cell states
        states * good_ld(widest, 4) * 4,  # gradients of the layer states (float32)
        states * good_ld(widest, 4) * 4,  # gradients of the iteration states
        states * hidden * 4,  # gradients of the cell states
        0,  # the grid computation (linear-before-reset GRU only)
    )
    offset = 0
    for size in regions:
        offset = -(-offset // 4096) * 4096 + size
    return offset


def onednn_rnn_layer_on_meta(*args: Any, **kwargs: Any) -> tuple:
    """``mkldnn_rnn_layer`` on meta with the outputs CPU's kernel gives: its workspace, which
    PyTorch's meta kernel leaves empty, at the size oneDNN allocates in training, and none out of it."""
    output, hy, cy, _ = torch.ops.aten.mkldnn_rnn_layer.default(*args, **kwargs)
    input, hidden_size, train = args[0], args[10], args[15]  # every argument is positional in its schema
    if not train:
        return output, hy, cy, None
    steps, batch, inputs = input.shape
    size = onednn_lstm_workspace_bytes(steps, batch, inputs, hidden_size, input.element_size())
    return output, hy, cy, torch.empty(size, dtype=torch.uint8, device="meta")


def onednn_rnn_layer_backward_on_meta(*args: Any, **kwargs: Any) -> tuple:
    """``mkldnn_rnn_layer_backward`` on meta with CPU's outputs: two bias gradients, the second a
    copy of the first (PyTorch's meta kernel returns one tensor twice)."""
    grads = list(torch.ops.aten.mkldnn_rnn_layer_backward.default(*args, **kwargs))
    grads[4] = torch.empty_like(grads[3])
    return tuple(grads)


# --- aten's loop (aten/src/ATen/native/RNN.cpp), as CPU runs it ---------------------------------


class _CellParams:
    """One layer and direction's weights, and the products CPU's cells take of them."""

    def __init__(self, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: Any, b_hh: Any, w_hr: Any) -> None:
        self.w_ih, self.w_hh, self.b_ih, self.b_hh, self.w_hr = w_ih, w_hh, b_ih, b_hh, w_hr

    def linear_ih(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.w_ih, self.b_ih)

    def linear_hh(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.w_hh, self.b_hh)

    def matmul_hr(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.matmul(hidden, self.w_hr.t()) if self.w_hr is not None else hidden


def _gather_params(params: Sequence[torch.Tensor], has_biases: bool, has_projections: bool) -> list[_CellParams]:
    stride = 2 + 2 * has_biases + has_projections
    gathered = []
    for start in range(0, len(params), stride):
        chunk = params[start : start + stride]
        b_ih, b_hh = (chunk[2], chunk[3]) if has_biases else (None, None)
        gathered.append(_CellParams(chunk[0], chunk[1], b_ih, b_hh, chunk[-1] if has_projections else None))
    return gathered


def _tanh_cell(input: torch.Tensor, hidden: torch.Tensor, params: _CellParams) -> torch.Tensor:
    return torch.tanh(params.linear_hh(hidden).add_(input))


def _relu_cell(input: torch.Tensor, hidden: torch.Tensor, params: _CellParams) -> torch.Tensor:
    return torch.relu(params.linear_hh(hidden).add_(input))


def _lstm_cell(input: torch.Tensor, hidden: tuple, params: _CellParams) -> tuple[torch.Tensor, torch.Tensor]:
    hx, cx = hidden
    gates = params.linear_hh(hx).add_(input)
    chunked = gates.unsafe_chunk(4, 1)
    ingate = chunked[0].sigmoid_()
    forgetgate = chunked[1].sigmoid_()
    cellgate = chunked[2].tanh_()
    outgate = chunked[3].sigmoid_()
    cy = (forgetgate * cx).add_(ingate * cellgate)
    hy = outgate * cy.tanh()
    hy = params.matmul_hr(hy)
    return hy, cy


def _gru_cell(input: torch.Tensor, hidden: torch.Tensor, params: _CellParams) -> torch.Tensor:
    chunked_igates = input.unsafe_chunk(3, 1)
    chunked_hgates = params.linear_hh(hidden).unsafe_chunk(3, 1)
    reset_gate = chunked_hgates[0].add_(chunked_igates[0]).sigmoid_()
    input_gate = chunked_hgates[1].add_(chunked_igates[1]).sigmoid_()
    new_gate = chunked_igates[2].add(chunked_hgates[2].mul_(reset_gate)).tanh_()
    return (hidden - new_gate).mul_(input_gate).add_(new_gate)


Cell = Callable[[torch.Tensor, Hidden, _CellParams], Hidden]


def _output_of(hidden: Hidden) -> torch.Tensor:
    return hidden[0] if isinstance(hidden, tuple) else hidden


def _steps(cell: Cell, step_inputs: Sequence[torch.Tensor], hidden: Hidden, params: _CellParams) -> tuple[list, Hidden]:
    """FullLayer over inputs already projected (CPU's ``pre_compute_input``)."""
    outputs = []
    for step_input in step_inputs:
        hidden = cell(step_input, hidden, params)
        outputs.append(_output_of(hidden))
    return outputs, hidden


def _full_layer(cell: Cell, input: torch.Tensor, hidden: Hidden, params: _CellParams) -> tuple[torch.Tensor, Hidden]:
    inputs_w = params.linear_ih(input)
    outputs, final = _steps(cell, inputs_w.unbind(0), hidden, params)
    return torch.stack(outputs, 0), final


def _full_bidirectional_layer(
    cell: Cell, input: torch.Tensor, hidden: tuple, params: tuple
) -> tuple[torch.Tensor, tuple]:
    input_w = params[0].linear_ih(input)
    step_inputs = input_w.unbind(0)
    forward_outputs, forward_final = _steps(cell, step_inputs, hidden[0], params[0])
    forward_output = torch.stack(forward_outputs, 0)
    input_w = params[1].linear_ih(input)
    step_inputs = input_w.unbind(0)
    reversed_inputs = step_inputs[::-1]
    del step_inputs  # moved into the reversed list, as C++ moves it
    reverse_outputs, reverse_final = _steps(cell, reversed_inputs, hidden[1], params[1])
    reverse_outputs.reverse()
    reverse_output = torch.stack(reverse_outputs, 0)
    return torch.cat([forward_output, reverse_output], forward_output.dim() - 1), (forward_final, reverse_final)


# An LSTM's (h, c) pair is built in C++ by one make_tuple call, whose arguments GCC evaluates right
# to left: c's op comes first. The order shows in the backward, which runs the later op first.


def _slice(hidden: Hidden, start: int, end: int) -> Hidden:
    if isinstance(hidden, tuple):
        c = hidden[1].narrow(0, start, end - start)
        return hidden[0].narrow(0, start, end - start), c
    return hidden.narrow(0, start, end - start)


def _concat(hiddens: Sequence[Hidden]) -> Hidden:
    if isinstance(hiddens[0], tuple):
        c = torch.cat([hidden[1] for hidden in hiddens], 0)
        return torch.cat([hidden[0] for hidden in hiddens], 0), c
    return torch.cat(list(hiddens), 0)


def _packed_layer(cell: Cell, packed: tuple, hidden: Hidden, params: _CellParams) -> tuple[tuple, Hidden]:
    data, batch_sizes = packed
    sizes = batch_sizes.tolist()
    input_w = params.linear_ih(data)
    outputs, hiddens = [], []
    offset, last = 0, sizes[0]
    for size in sizes:
        step_input = input_w.narrow(0, offset, size)
        offset += size
        if last > size:
            hiddens.append(_slice(hidden, size, last))
            hidden = _slice(hidden, 0, size)
        last = size
        hidden = cell(step_input, hidden, params)
        outputs.append(_output_of(hidden))
    hiddens.append(hidden)
    hiddens.reverse()
    return (torch.cat(outputs, 0), batch_sizes), _concat(hiddens)


def _reversed_packed_layer(cell: Cell, packed: tuple, hidden: Hidden, params: _CellParams) -> tuple[tuple, Hidden]:
    data, batch_sizes = packed
    sizes = batch_sizes.tolist()
    input_w = params.linear_ih(data)
    outputs = []
    offset, last = data.shape[0], sizes[-1]
    initial = hidden
    hidden = _slice(initial, 0, sizes[-1])
    for size in reversed(sizes):
        if size > last:
            hidden = _concat([hidden, _slice(initial, last, size)])
        step_input = input_w.narrow(0, offset - size, size)
        offset -= size
        last = size
        hidden = cell(step_input, hidden, params)
        outputs.append(_output_of(hidden))
    outputs.reverse()
    return (torch.cat(outputs, 0), batch_sizes), hidden


def _packed_bidirectional_layer(cell: Cell, packed: tuple, hidden: tuple, params: tuple) -> tuple[tuple, tuple]:
    forward_output, forward_final = _packed_layer(cell, packed, hidden[0], params[0])
    reverse_output, reverse_final = _reversed_packed_layer(cell, packed, hidden[1], params[1])
    return (torch.cat([forward_output[0], reverse_output[0]], -1), packed[1]), (forward_final, reverse_final)


def _layer_stack(
    cell: Cell, packed: bool, input: Any, hiddens: list, params: list[_CellParams], flags: Flags
) -> tuple[Any, list]:
    """``_rnn_impl``: the layers in turn, with dropout between them in training; the final hidden
    state of every layer and direction."""
    layer: Callable[..., tuple[Any, Any]]
    layer_params: list[Any] = list(params)  # per layer: its params, or a pair of them (both directions)
    if flags.bidirectional:
        layer = _packed_bidirectional_layer if packed else _full_bidirectional_layer
        hiddens = [(hiddens[i], hiddens[i + 1]) for i in range(0, len(hiddens), 2)]
        layer_params = [(params[i], params[i + 1]) for i in range(0, len(params), 2)]
    else:
        layer = _packed_layer if packed else _full_layer
    layer_input: Any = input
    finals: list[Any] = []
    for index in range(flags.num_layers):
        layer_input, final = layer(cell, layer_input, hiddens[index], layer_params[index])
        finals.append(final)
        if flags.dropout_after(index):
            if packed:
                layer_input = (F.dropout(layer_input[0], flags.dropout, training=True), layer_input[1])
            else:
                layer_input = F.dropout(layer_input, flags.dropout, training=True)
    if flags.bidirectional:
        finals = [final for pair in finals for final in pair]
    return layer_input, finals


def lstm_loop(
    input: Any, hx: Sequence[torch.Tensor], params: Sequence[torch.Tensor], flags: Flags
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``_lstm_impl`` as CPU runs it; ``input`` is a tensor or a (data, batch_sizes) pair."""
    packed = isinstance(input, tuple)
    gathered = _gather_params(params, flags.has_biases, hx[0].shape[2] != hx[1].shape[2])
    if flags.batch_first and not packed:
        input = input.transpose(0, 1)
    hiddens = list(zip(hx[0].unbind(0), hx[1].unbind(0)))
    output, finals = _layer_stack(_lstm_cell, packed, input, hiddens, gathered, flags)
    # Arguments of one make_tuple call, as above: the cell states' stack comes first.
    cy = torch.stack([final[1] for final in finals], 0)
    hy = torch.stack([final[0] for final in finals], 0)
    if packed:
        return output[0], hy, cy
    return (output.transpose(0, 1) if flags.batch_first else output), hy, cy


def one_hidden_loop(
    cell: Cell, input: Any, hx: torch.Tensor, params: Sequence[torch.Tensor], flags: Flags
) -> tuple[torch.Tensor, torch.Tensor]:
    """``ONE_HIDDEN_RNN`` (GRU, RNN) as CPU runs it; ``input`` is a tensor or a (data, batch_sizes) pair."""
    packed = isinstance(input, tuple)
    gathered = _gather_params(params, flags.has_biases, False)
    if flags.batch_first and not packed:
        input = input.transpose(0, 1)
    output, finals = _layer_stack(cell, packed, input, list(hx.unbind(0)), gathered, flags)
    hy = torch.stack(finals, 0)
    if packed:
        return output[0], hy
    if flags.batch_first:
        output.transpose_(0, 1)
    return output, hy


# --- the kernels on meta ------------------------------------------------------------------------------


def _lstm(input: torch.Tensor, hx: list, params: list, *flags: Any) -> tuple:
    if cpu_takes_onednn(input, hx):
        return onednn_lstm(input, hx, params, Flags(*flags))
    return lstm_loop(input, hx, params, Flags(*flags))


def _lstm_packed(data: torch.Tensor, batch_sizes: torch.Tensor, hx: list, params: list, *flags: Any) -> tuple:
    return lstm_loop((data, batch_sizes), hx, params, Flags(*flags))


def _one_hidden(cell: Cell) -> tuple[Callable[..., tuple], Callable[..., tuple]]:
    def padded(input: torch.Tensor, hx: torch.Tensor, params: list, *flags: Any) -> tuple:
        return one_hidden_loop(cell, input, hx, params, Flags(*flags))

    def packed(data: torch.Tensor, batch_sizes: torch.Tensor, hx: torch.Tensor, params: list, *flags: Any) -> tuple:
        return one_hidden_loop(cell, (data, batch_sizes), hx, params, Flags(*flags))

    return padded, packed


_KERNELS: dict[str, Callable[..., Any]] = {"lstm.input": _lstm, "lstm.data": _lstm_packed}
for _name, _cell in (("gru", _gru_cell), ("rnn_tanh", _tanh_cell), ("rnn_relu", _relu_cell)):
    _KERNELS[f"{_name}.input"], _KERNELS[f"{_name}.data"] = _one_hidden(_cell)

#: While a meta profile runs, the recurrent ops on meta tensors take CPU's path.
RECURRENT_ON_META = [KernelOverride(op, kernel, ("meta",)) for op, kernel in _KERNELS.items()]


@contextlib.contextmanager
def recurrent_on_meta(device: torch.device) -> Iterator[None]:
    """On meta: LSTM, GRU and RNN layers as CPU runs them."""
    if device.type != "meta":
        yield
        return
    with contextlib.ExitStack() as stack:
        for override in RECURRENT_ON_META:
            stack.enter_context(override.on(device))
        yield
