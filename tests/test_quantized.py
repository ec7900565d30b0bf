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
