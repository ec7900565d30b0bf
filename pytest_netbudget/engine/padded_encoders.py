"""``nn.TransformerEncoder`` with a padding mask, counted as the padded batch on every device.

In eval mode on CPU and CUDA the encoder turns a padded batch into a nested tensor (its
sequences without their padding) and back; on meta that conversion has no kernel, so the
forward fails there. While profiling, the encoder's nested-tensor path is switched off
(``use_nested_tensor``, restored afterwards): every layer then runs on the padded batch
with the mask, as it does in training and on meta, and cpu, cuda and meta count alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def padded_encoders(modules: list[tuple[str, torch.nn.Module]]) -> Iterator[None]:
    """The nested-tensor path off for every encoder among ``modules`` (the model's ``named_modules()``)."""
    encoders = [
        module
        for _, module in modules
        if isinstance(module, torch.nn.TransformerEncoder) and getattr(module, "use_nested_tensor", False)
    ]
    for encoder in encoders:
        encoder.use_nested_tensor = False
    try:
        yield
    finally:
        for encoder in encoders:
            encoder.use_nested_tensor = True
