"""Three models a team might ship: an MNIST CNN, a small transformer classifier, an LSTM tagger."""

from __future__ import annotations

import torch
from torch import nn


class MnistCNN(nn.Module):
    """Two conv blocks and a linear head: 28,938 parameters, 2,838,080 MACs on a 28x28 image."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 16, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2))
        self.out = nn.Linear(32 * 7 * 7, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        return self.out(x.flatten(1))


class TextClassifier(nn.Module):
    """Token embedding, learned positions, a transformer encoder and a linear head on the mean token."""

    def __init__(
        self,
        vocab_size: int = 8000,
        dim: int = 128,
        heads: int = 4,
        layers: int = 2,
        max_len: int = 256,
        num_classes: int = 4,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(1, max_len, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position[:, : tokens.shape[1]]
        return self.head(self.encoder(x).mean(dim=1))


class LSTMTagger(nn.Module):
    """A bidirectional LSTM over word embeddings with a tag classifier on every token."""

    def __init__(self, vocab_size: int = 5000, embed_dim: int = 64, hidden: int = 128, tags: int = 17) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.tagger = nn.Linear(2 * hidden, tags)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        features, _ = self.lstm(self.embed(tokens))
        return self.tagger(features)


def tagger_inputs() -> torch.Tensor:
    """A batch of 4 sentences of 32 token ids, as the tagger sees them in serving."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 5000, (4, 32), generator=generator)
