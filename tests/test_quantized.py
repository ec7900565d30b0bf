"""Quantized models (torch.ao): packed weights counted as parameters, MACs as their float forms."""

from __future__ import annotations

import io

import pytest
import torch
from engine_helpers import profile_both
from torch import nn

from pytest_netbudget import profile
from pytest_netbudget.formulas import ELEMENTWISE_COST

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def dynamic(inputs: int = 64, hidden: int = 32, outputs: int = 8) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))
    return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def test_dynamically_quantized_linear_layers():
    """Linear(64, 32) and Linear(32, 8) as int8 weights (one scale and zero point each, 8 bytes
    apiece) and float32 biases; 3 rows: MACs as the float layers, biases and the ReLU as FLOPs."""
    p = profile_both(dynamic(), torch.randn(3, 64))
    assert p.params == (64 * 32 + 32) + (32 * 8 + 8)
    assert p.trainable_params == 0
    assert p.size_mb * 2**20 == (64 * 32 + 32 * 8) * 1 + 2 * (8 + 8) + (32 + 8) * 4
    macs = 3 * 64 * 32 + 3 * 32 * 8
    assert p.macs == macs
    assert p.flops == 2 * macs + 3 * 32 + ELEMENTWISE_COST * 3 * 32 + 3 * 8


def test_quantized_size_tracks_the_saved_state_dict():
    model = dynamic(512, 512, 256)
    saved = io.BytesIO()
    torch.save(model.state_dict(), saved)
    size = profile(model, torch.randn(1, 512), device="meta").size_mb * 2**20
    assert abs(size - len(saved.getvalue())) / len(saved.getvalue()) < 0.01


class StaticNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 5)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(self.quant(x)))
        return self.dequant(self.fc(x.reshape(x.shape[0], -1)))


def test_statically_quantized_convolution_and_linear_on_cpu():
    """Conv2d(3, 4, 3) on [2, 3, 8, 8]: 2*4*6*6 outputs x 27 MACs; Linear(144, 5) on 2 rows.
    FLOPs: 2*MACs, the conv bias and ReLU per output element, the linear bias."""
    torch.manual_seed(0)
    model = StaticNet().eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    torch.ao.quantization.prepare(model, inplace=True)
    model(torch.randn(2, 3, 8, 8))
    torch.ao.quantization.convert(model, inplace=True)
    p = profile(model, torch.randn(2, 3, 8, 8), device="cpu")
    assert p.uncounted_ops == {}
    assert p.params == (4 * 3 * 9 + 4) + (144 * 5 + 5)
    conv_out = 2 * 4 * 6 * 6
    macs = conv_out * 27 + 2 * 144 * 5
    assert p.macs == macs
    assert p.flops == 2 * macs + conv_out + ELEMENTWISE_COST * conv_out + 2 * 5


# torchao: weights as tensor subclasses holding packed values and their scales.


def torchao_quantized(config: object, dtype: torch.dtype) -> nn.Module:
    quantization = pytest.importorskip("torchao.quantization")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32)).to(dtype)
    quantization.quantize_(model, config)
    return model


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchao_int8_weight_only_on_cpu_and_meta():
    """torchao's Int8WeightOnlyConfig on Linear(64, 32): an int8 [32, 64] with a float32 scale and
    an int8 zero point per row, and the float32 bias: 2,048 + 128 + 32 + 128 bytes (it was counted
    as a float32 weight, 8,320 bytes); its 2,080 parameters are the weight's and the bias's
    elements. On 4 rows it runs as a dequantized product (mm) and the scales: 4 x 64 x 32 MACs,
    FLOPs 2 * MACs + 4 x 32 (scales) + 4 x 32 (bias). It profiles on meta too."""
    quantization = pytest.importorskip("torchao.quantization")
    p = profile_both(torchao_quantized(quantization.Int8WeightOnlyConfig(), torch.float32), torch.randn(4, 64))
    assert p.params == 64 * 32 + 32
    assert p.size_mb * 2**20 == 2048 + 128 + 32 + 128
    assert (p.macs, p.flops) == (4 * 64 * 32, 2 * 8192 + 128 + 128)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchao_int4_weight_only_runs_the_packed_cpu_kernel():
    """torchao's int4 weight-only layout for CPU (groups of 32) calls _weight_int4pack_mm_for_cpu:
    4 x 64 x 32 MACs (it was uncounted), FLOPs 2 * MACs + 2 x 64 x 32 (each weight's group scale
    and zero point) + 4 x 32 (bias). Its size: the packed [32, 32] uint8 (two weights a byte),
    the bfloat16 scales and zero points [2 groups, 32, 2] and the bfloat16 bias: 1,024 + 256 + 64
    bytes (the bfloat16 weight it stands for is 4,096)."""
    workflow = pytest.importorskip("torchao.prototype.quantization.int4.inference_workflow")
    config = workflow.PrototypeInt4WeightOnlyConfig(group_size=32, set_inductor_config=False)
    p = profile(torchao_quantized(config, torch.bfloat16), torch.randn(4, 64, dtype=torch.bfloat16), device="cpu")
    assert p.uncounted_ops == {}
    assert (p.macs, p.flops) == (8192, 2 * 8192 + 2 * 64 * 32 + 4 * 32)
    assert p.size_mb * 2**20 == 1024 + 256 + 64
