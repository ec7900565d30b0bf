"""A Sequencer2d-M-shaped model (bidirectional LSTMs along the rows and the columns of the feature
map) profiled on meta, against a bare meta forward of the same model.

    python benchmarks/sequencer.py               # 5 interleaved rounds at 224x224
    python benchmarks/sequencer.py --rounds 3

timm's ``sequencer2d_m`` took 18.7 s to profile on meta: PyTorch runs an LSTM on meta step by
step (3,657 ``addmm`` calls at 224x224), where CPU runs one oneDNN kernel per layer and
direction. timm needs torchvision, which has no usable build here, so the model is written out
below with ``sequencer2d_m``'s configuration: stages of 4, 3, 14 and 3 blocks, patch sizes 7, 2,
1, 1, widths 192, 384, 384, 384, LSTM hidden sizes 48, 96, 96, 96, MLP ratio 3, both directions
joined ("cat") and projected back by a linear layer.

Each round times, in a rotated order and each paired with a bare ``no_grad`` eval forward on
meta just before it: ``profile(..., device="meta")``, and ``profile`` with the recurrent routing
for meta switched off (what netbudget did before: PyTorch's step-by-step LSTM); the figures are
medians of the per-round ratios to the bare forward.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections import Counter
from unittest import mock

import torch
from torch import nn

from pytest_netbudget import profile
from pytest_netbudget.engine import run as engine_run
from targets import paired_ratios


class BiLSTM2d(nn.Module):
    """A bidirectional LSTM down every column and another along every row of a (B, H, W, C) map,
    their outputs joined channel-wise and projected back to C."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.rnn_v = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.rnn_h = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(4 * hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        columns = x.permute(0, 2, 1, 3).reshape(-1, height, channels)
        vertical = self.rnn_v(columns)[0].reshape(batch, width, height, -1).permute(0, 2, 1, 3)
        horizontal = self.rnn_h(x.reshape(-1, width, channels))[0].reshape(batch, height, width, -1)
        return self.fc(torch.cat([vertical, horizontal], dim=-1))


class SequencerBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.rnn_tokens = BiLSTM2d(dim, hidden)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        width = int(mlp_ratio * dim)
        self.mlp_channels = nn.Sequential(nn.Linear(dim, width), nn.GELU(), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.rnn_tokens(self.norm1(x))
        return x + self.mlp_channels(self.norm2(x))


class Downsample(nn.Module):
    """A strided convolution on the channel-last map."""

    def __init__(self, dim: int, dim_out: int, patch: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(dim, dim_out, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class Sequencer2d(nn.Module):
    """``sequencer2d_m``'s configuration by default."""

    def __init__(
        self,
        layers: tuple[int, ...] = (4, 3, 14, 3),
        patch_sizes: tuple[int, ...] = (7, 2, 1, 1),
        dims: tuple[int, ...] = (192, 384, 384, 384),
        hidden_sizes: tuple[int, ...] = (48, 96, 96, 96),
        mlp_ratio: float = 3.0,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dims[0], kernel_size=patch_sizes[0], stride=patch_sizes[0])
        stages = []
        for index, depth in enumerate(layers):
            down = Downsample(dims[index - 1], dims[index], patch_sizes[index]) if index else nn.Identity()
            blocks = [SequencerBlock(dims[index], hidden_sizes[index], mlp_ratio) for _ in range(depth)]
            stages.append(nn.Sequential(down, *blocks))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x).permute(0, 2, 3, 1))
        return self.head(self.norm(x).mean(dim=(1, 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    with torch.device("meta"):
        model = Sequencer2d().eval()
    x = torch.empty(1, 3, args.size, args.size, device="meta")

    def bare() -> None:
        with torch.no_grad():
            model(x)

    def step_by_step() -> None:
        """What netbudget did before: no routing for recurrent layers on meta."""
        with mock.patch.object(engine_run, "recurrent_on_meta", lambda device: contextlib.nullcontext()):
            profile(model, x, device="meta")

    p = profile(model, x, device="meta")
    calls: Counter[str] = Counter()
    for row in p.layers:
        calls.update({op: stats.calls for op, stats in row.ops.items()})
    print(
        f"Sequencer2d-M on meta at {args.size}x{args.size}, torch {torch.__version__}: {p.params:,} params,"
        f" {p.macs / 1e9:.2f} GMACs; netbudget sees {calls['aten.mkldnn_rnn_layer']} mkldnn_rnn_layer"
        f" and {calls['aten.addmm']} addmm calls"
    )
    variants = {"bare": bare, "netbudget": lambda: profile(model, x, device="meta"), "LSTM step by step": step_by_step}
    rounds = paired_ratios(variants, args.rounds)
    print(f"  bare meta forward        {statistics.median(rounds.bare):7.2f} s")
    for name, ratios in rounds.ratios.items():
        print(
            f"  {name:24s} {statistics.median(rounds.times[name]):7.2f} s  {statistics.median(ratios):.2f}x the bare"
            f" meta forward (rounds {min(ratios):.2f}-{max(ratios):.2f}x)"
        )


if __name__ == "__main__":
    main()
