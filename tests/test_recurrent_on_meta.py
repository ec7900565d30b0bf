"""LSTM, GRU and RNN on meta run as CPU runs them (issue 21): every figure equal, by hand where it can be."""

from __future__ import annotations

import itertools

import pytest
import torch
from reference_models import LSTMModel
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from pytest_netbudget import profile
from pytest_netbudget.engine import recurrent_on_meta as recurrent

MIB = 2**20
ONEDNN = torch.backends.mkldnn.is_available()


def test_the_lstm_taggers_activations_by_hand_on_cpu_and_meta():
    """The example project's tagger: Embedding(5000, 64) -> 2-layer bidirectional LSTM(128) ->
    Linear(256, 17) on 4 sentences of 32 tokens. CPU runs oneDNN's kernel, one op per layer and
    direction. The peak comes as the second layer's outputs are joined; alive then (float32 bytes):
      the embedding's output 4*32*64*4 = 32,768, and its sequence-first contiguous copy, 32,768
      h0 and c0, zeros of 4 x 4 x 128: 8,192 each = 16,384
      the first layer's joined output (the second's input), 32*4*256*4 = 131,072
      the second layer's two outputs, 2 x 32*4*128*4 = 131,072, and their join, 131,072
      eight final states (hy, cy per layer and direction) of 4 x 128: 8 x 2,048 = 16,384
    = 491,520 bytes = 0.46875 MiB. Meta ran the LSTM step by step and peaked at 0.559 MiB."""
    torch.manual_seed(0)
    model = LSTMModel(vocab=5000, embed=64, hidden=128, classes=17)
    tokens = torch.randint(0, 5000, (4, 32))
    for device in ("cpu", "meta"):
        assert profile(model, tokens, device=device).activations_mb * MIB == 491_520, device


def test_onednns_workspace_is_kept_for_the_backward_on_meta_as_on_cpu():
    """LSTM(8, 16), one layer, over 5 steps of 2 rows, in training. oneDNN's kernel keeps for its
    backward a workspace laid out by oneDNN's rnn_utils, each region starting on a 4,096-byte page,
    leading dimensions rounded up to 64 bytes (16 floats):
      gates 5*2 rows x 64 floats = 2,560 B at 0; hidden states 5*2 x 16 = 640 B at 4,096;
      layer states, cell states and the three state gradients, 2*(5+1)*2 rows x 16 floats = 1,536 B
      each, at 8,192, 12,288, 16,384, 20,480 and 24,576; an empty grid region at 28,672 -> 28,672 B.
    Saved for backward besides it: h0 and c0 (2 x 16 floats, 128 B each), the output (5 x 2 x 16
    floats, 640 B), hy and cy (128 B each): 29,824 B in all. PyTorch's meta kernel makes the
    workspace empty: meta saved 1,152 B."""
    if not ONEDNN:
        pytest.skip("this torch has no oneDNN: CPU runs the loop")
    assert recurrent.onednn_lstm_workspace_bytes(5, 2, 8, 16, 4) == 28_672
    x = torch.randn(5, 2, 8)
    for device in ("cpu", "meta"):
        p = profile(nn.LSTM(8, 16), x, device=device, train=True, optimizer="none")
        assert p.train.saved_mb * MIB == 28_672 + 2 * 128 + 640 + 2 * 128, device


@pytest.mark.skipif(not ONEDNN, reason="this torch has no oneDNN")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_workspace_formula_is_the_size_cpus_kernel_allocates(dtype):
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no bfloat16 for oneDNN")
    for steps, batch, inputs, hidden in itertools.product((1, 7), (1, 3, 16), (5, 64, 300), (1, 48, 64, 256)):
        args = (
            torch.zeros(steps, batch, inputs, dtype=dtype),
            torch.zeros(4 * hidden, inputs, dtype=dtype),
            torch.zeros(4 * hidden, hidden, dtype=dtype),
            torch.zeros(4 * hidden, dtype=dtype),
            torch.zeros(4 * hidden, dtype=dtype),
            torch.zeros(batch, hidden, dtype=dtype),
            torch.zeros(batch, hidden, dtype=dtype),
        )
        workspace = torch.ops.aten.mkldnn_rnn_layer(*args, False, [], 2, hidden, 1, True, False, False, True)[3]
        expected = recurrent.onednn_lstm_workspace_bytes(steps, batch, inputs, hidden, args[0].element_size())
        assert workspace.numel() == expected, (steps, batch, inputs, hidden)


def test_a_gru_training_step_by_hand_on_cpu_and_meta():
    """GRU(I=4, H=5), one layer, over T=3 steps of B=2 rows; G = 3H = 15 gate units, E = B*H = 10.
    CPU projects the whole sequence's input once, then steps (optimizer none):
      forward: input projection 2*T*B*G*I + T*B*G = 720 + 90; per step the recurrent projection
        2*B*G*H + B*G = 330 and the cell's 10 per hidden unit, 100: 3 x 430 -> 2,100
      loss: the outputs' sum T*E = 30, h_n's sum E = 10, the two added: 1 -> 41
      backward: per step the cell's 12 per hidden unit (two products for the blend, a negation and
        an addition for the new gate, tanh and two sigmoid backwards at 2, two products for the
        reset gate), 3 x 120 = 360; the hidden states' gradients added (the last: output and h_n,
        1 add; the others: output, blend and recurrent projection, 2 adds): 5 x 10 = 50; per step
        the recurrent weight's gradient 2*B*G*H = 300 and its bias's sum B*G = 30, 3 x 330 = 990;
        the previous state's gradient, 300, for the 2 steps whose state needs one: 600; the 3 steps'
        recurrent weight and bias gradients added: 2 x (G*H + G) = 180; the input projection's
        weight gradient, once for the whole sequence, 2*T*B*G*I = 720, and its bias's sum 90 -> 2,990
    = 5,131. Meta projected each step's input apart and added the 3 steps' input-weight and bias
    gradients, 2 x (G*I + G) = 150 more: 5,281.
    MACs: forward T*B*G*(I + H) = 810; backward the weight gradients 810 and the 2 previous
    states' 300: 1,920."""
    torch.manual_seed(0)
    model, x = nn.GRU(4, 5), torch.randn(3, 2, 4)
    for device in ("cpu", "meta"):
        p = profile(model, x, device=device, train=True, optimizer="none")
        assert (p.flops, p.train_macs, p.train_flops) == (2_100, 1_920, 5_131), device


class Packed(nn.Module):
    """A recurrent layer over a packed batch of sequences of lengths 5, 4 and 2."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, [5, 4, 2], batch_first=True)
        return nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True)[0]


LAYERS = {
    "lstm": lambda: nn.LSTM(6, 8, num_layers=2, bidirectional=True, batch_first=True),
    "lstm without biases, 3 layers, dropout": lambda: nn.LSTM(6, 8, num_layers=3, bias=False, dropout=0.3),
    "lstm with projections": lambda: nn.LSTM(6, 8, num_layers=2, bidirectional=True, proj_size=4),
    "gru": lambda: nn.GRU(6, 8, num_layers=2, bidirectional=True, batch_first=True),
    "gru with dropout": lambda: nn.GRU(6, 8, num_layers=2, dropout=0.3),
    "rnn tanh": lambda: nn.RNN(6, 8, bidirectional=True, batch_first=True),
    "rnn relu": lambda: nn.RNN(6, 8, nonlinearity="relu", num_layers=2),
    "packed lstm": lambda: Packed(nn.LSTM(6, 8, num_layers=2, bidirectional=True, batch_first=True)),
    "packed gru": lambda: Packed(nn.GRU(6, 8, bidirectional=True, batch_first=True)),
    "packed rnn": lambda: Packed(nn.RNN(6, 8, batch_first=True)),
}


def _figures(p):
    step = p.train
    return (p.totals, p.layers, step.memory_mb, step.peak_phase, step.saved_mb)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("name", list(LAYERS))
def test_every_figure_equal_on_cpu_and_meta(name):
    """Forward and training step: totals (activations, train memory, FLOPs...), every row (shapes,
    bytes read and written, op calls) and the step's memory by part."""
    torch.manual_seed(0)
    model, x = LAYERS[name](), torch.randn(3, 5, 6)
    cpu = profile(model, x, device="cpu", train=True)
    meta = profile(model, x, device="meta", train=True)
    assert _figures(cpu) == _figures(meta)


def test_under_inference_mode_the_layers_run_whole_on_both_devices():
    """torch.inference_mode skips the autograd keys: the tracer sees aten::lstm and aten::gru whole on
    either device and counts them by their formulas; only their outputs are activations."""
    x = torch.randn(3, 5, 6)
    for model in (nn.LSTM(6, 8, num_layers=2, bidirectional=True), nn.GRU(6, 8)):
        with torch.inference_mode():
            cpu, meta = profile(model, x, device="cpu"), profile(model, x, device="meta")
        assert (cpu.totals, cpu.layers) == (meta.totals, meta.layers)


@pytest.mark.parametrize("dtype", ["bfloat16", "float64"])
def test_the_lstm_follows_cpus_kernel_for_each_dtype(dtype):
    """bfloat16 takes oneDNN's kernel where this CPU has it, float64 the loop: meta takes the same."""
    model, x = nn.LSTM(6, 8, num_layers=2, bidirectional=True), torch.randn(3, 5, 6)
    cpu = profile(model, x, device="cpu", dtype=dtype, train=True)
    meta = profile(model, x, device="meta", dtype=dtype, train=True)
    assert _figures(cpu) == _figures(meta)


# --- the functions themselves, op for op against PyTorch's kernels on CPU -------------------------------


class OpLog(TorchDispatchMode):
    """Each op's name and the shapes and dtypes of its outputs, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        leaves = out if isinstance(out, (tuple, list)) else (out,)
        shapes = tuple((tuple(leaf.shape), leaf.dtype) for leaf in leaves if isinstance(leaf, torch.Tensor))
        self.ops.append((str(func), shapes))
        return out


def _log(call, weights):
    """The ops of ``call()``'s forward and of the backward of its outputs' sum, on CPU."""
    with OpLog() as log:
        outputs = call()
        sum(output.sum() for output in outputs).backward()
    for weight in weights:
        weight.grad = None
    return log.ops


def _inputs(module, packed):
    torch.manual_seed(0)
    x = torch.randn(5, 3, 6)
    if packed:
        sequence = nn.utils.rnn.pack_padded_sequence(x, [5, 4, 2])
        return (sequence.data, sequence.batch_sizes)
    return (x,)


CELLS = {"GRU": recurrent._gru_cell, "RNN_TANH": recurrent._tanh_cell, "RNN_RELU": recurrent._relu_cell}


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
@pytest.mark.parametrize(
    ("kind", "options", "packed", "onednn"),
    [
        ("LSTM", {"num_layers": 2, "bidirectional": True}, False, True),
        ("LSTM", {"num_layers": 2, "bidirectional": True}, False, False),
        ("LSTM", {"proj_size": 4, "bidirectional": True}, False, True),
        ("LSTM", {"num_layers": 2, "bidirectional": True}, True, True),
        ("GRU", {"num_layers": 2, "bidirectional": True}, False, True),
        ("GRU", {"bidirectional": True, "bias": False}, True, True),
        ("RNN_TANH", {"num_layers": 2}, False, True),
        ("RNN_RELU", {"bidirectional": True}, True, True),
    ],
)
def test_the_functions_run_cpus_ops_in_cpus_order(kind, options, packed, onednn):
    """PyTorch's own kernel and ours, on CPU tensors, forward and backward: the same ops with the
    same outputs in the same order (oneDNN switched off for the loop's LSTM)."""
    module = (nn.LSTM if kind == "LSTM" else nn.GRU if kind == "GRU" else nn.RNN)(6, 8, **options)
    if kind == "RNN_RELU":
        module = nn.RNN(6, 8, nonlinearity="relu", **options)
    weights = module._flat_weights
    inputs = _inputs(module, packed)
    layers, directions = module.num_layers, 2 if module.bidirectional else 1
    h0 = torch.zeros(layers * directions, 3, module.proj_size or module.hidden_size)
    flags = recurrent.Flags(module.bias, layers, 0.0, True, module.bidirectional)
    their_flags = (module.bias, layers, 0.0, True, module.bidirectional, *(() if packed else (False,)))
    if kind == "LSTM":
        hx = [h0, torch.zeros(layers * directions, 3, module.hidden_size)]

        def theirs():
            return torch._VF.lstm(*inputs, hx, weights, *their_flags)

        def ours():
            if packed:
                return recurrent.lstm_loop(inputs, hx, weights, flags)
            if onednn and recurrent.cpu_takes_onednn(inputs[0], hx):
                return recurrent.onednn_lstm(inputs[0], hx, weights, flags)
            return recurrent.lstm_loop(inputs[0], hx, weights, flags)
    else:
        function = getattr(torch._VF, kind.lower())

        def theirs():
            return function(*inputs, h0, weights, *their_flags)

        def ours():
            return recurrent.one_hidden_loop(CELLS[kind], inputs if packed else inputs[0], h0, weights, flags)

    with torch.backends.mkldnn.flags(enabled=onednn):
        assert _log(ours, weights) == _log(theirs, weights)
