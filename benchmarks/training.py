"""One training step: netbudget against FlopCounterMode and PyTorch's MemTracker, figures and time.

    python benchmarks/training.py            # CNN, ResNet-18, a transformer block, an LSTM tagger,
                                             # BERT small, a GPT-2-shaped LM, the 7B on meta
    python benchmarks/training.py --quick    # without ResNet-18 at 224x224 and the 7B decoder

For each model: ``2 * train_macs`` against FlopCounterMode around forward + backward (on
meta, where every kernel is the unfused one it counts), ``train_memory_mb`` against
MemTracker's peak for the same AdamW step on CPU, written as a training loop writes it (the
outputs and the loss alive to the step's end), and the time of each as a multiple of that bare
step (forward, loss, backward, optimizer) in the same process, median of interleaved rounds.
The 7B Llama-shaped decoder runs on meta only: netbudget and FlopCounterMode, no weights
allocated.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference_models import CausalBlock, Decoder, LSTMModel, SpecCNN, resnet18  # noqa: E402

from pytest_netbudget import profile  # noqa: E402
from pytest_netbudget.engine.tracer import tensor_leaves  # noqa: E402

MIB = 2**20


def bert_small() -> nn.Module:
    """BERT with a masked-LM head: 4 layers of 256, 4 heads, vocabulary 1,000 (random weights)."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=1000,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=64,
    )
    return transformers.BertForMaskedLM(config)


def gpt2_lm() -> nn.Module:
    """A GPT-2-shaped language model: 4 layers of 256, 4 heads, vocabulary 1,000 (random weights)."""
    import transformers

    config = transformers.GPT2Config(vocab_size=1000, n_embd=256, n_layer=4, n_head=4, n_positions=64)
    return transformers.GPT2LMHeadModel(config)


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], Any]]] = {
    "cnn b32": (SpecCNN, lambda: torch.randn(32, 1, 28, 28)),
    "resnet18 b8": (resnet18, lambda: torch.randn(8, 3, 224, 224)),
    "block b8x256": (CausalBlock, lambda: torch.randn(8, 256, 768)),
    "bilstm b16x64": (
        lambda: LSTMModel(vocab=5000, embed=64, hidden=128, classes=17),
        lambda: torch.randint(0, 5000, (16, 64)),
    ),
    "bert small b4x32": (bert_small, lambda: torch.randint(0, 1000, (4, 32))),
    "gpt2 lm b4x32": (gpt2_lm, lambda: torch.randint(0, 1000, (4, 32))),
}
QUICK = ("cnn b32", "block b8x256", "bilstm b16x64", "bert small b4x32", "gpt2 lm b4x32")


def loss_of(outputs: Any) -> torch.Tensor:
    return sum(leaf.sum() for leaf in tensor_leaves(outputs) if leaf.is_floating_point())


def ready_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW with its state made by one step on zero gradients, gradients then None: the same
    starting point netbudget profiles."""
    optimizer = torch.optim.AdamW(model.parameters())
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return optimizer


def bare_step(model: nn.Module, inputs: Any, optimizer: torch.optim.Optimizer) -> None:
    """One step as a training loop writes it: the outputs and the loss stay alive to its end."""
    outputs = model(inputs)
    loss = loss_of(outputs)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def flop_counter_total(make: Callable[[], nn.Module], inputs: Any) -> int:
    """FlopCounterMode around forward + backward on meta, where every kernel is the unfused one it counts."""
    with torch.device("meta"):
        model = make()
    model.train()
    with FlopCounterMode(display=False) as counter:
        loss_of(model(inputs.to("meta"))).backward()
    return counter.get_total_flops()


def flop_counter_step(model: nn.Module, inputs: Any, optimizer: torch.optim.Optimizer) -> None:
    """The bare step under FlopCounterMode, for its time."""
    with FlopCounterMode(display=False):
        bare_step(model, inputs, optimizer)


def mem_tracker_step(model: nn.Module, inputs: Any, optimizer: torch.optim.Optimizer) -> tuple[int, float]:
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(model, optimizer, inputs)
    start = time.perf_counter()
    with tracker:
        bare_step(model, inputs, optimizer)
    seconds = time.perf_counter() - start
    return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"], seconds


def timed(call: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(name: str, rounds: int) -> list[str]:
    make, make_input = MODELS[name]
    torch.manual_seed(0)
    model, inputs = make().train(), make_input()
    optimizer = ready_optimizer(model)
    nb = profile(model, inputs, device="cpu", train=True, optimizer="adamw")
    fcm_flops = flop_counter_total(make, inputs)
    tracked, _ = mem_tracker_step(model, inputs, optimizer)
    times: dict[str, list[float]] = {"bare": [], "netbudget": [], "FlopCounterMode": [], "MemTracker": []}
    for _ in range(rounds):  # interleaved, so that noise hits every tool alike
        times["bare"].append(timed(lambda: bare_step(model, inputs, optimizer)))
        times["netbudget"].append(timed(lambda: profile(model, inputs, device="cpu", train=True, optimizer="adamw")))
        times["FlopCounterMode"].append(timed(lambda: flop_counter_step(model, inputs, optimizer)))
        times["MemTracker"].append(mem_tracker_step(model, inputs, optimizer)[1])
    bare = statistics.median(times["bare"])
    ratios = "  ".join(
        f"{tool} {statistics.median(values) / bare:.2f}x" for tool, values in times.items() if tool != "bare"
    )
    return [
        f"{name:14s} train_macs {nb.train_macs / 1e9:8.3f} G  2*train_macs / FlopCounterMode {2 * nb.train_macs / fcm_flops:.4f}"
        f"  train_memory {nb.train_memory_mb:9.2f} MiB / MemTracker {nb.train_memory_mb * MIB / tracked:.4f}",
        f"{'':14s} bare step {bare * 1e3:8.1f} ms  {ratios}  (netbudget also profiles the eval forward)",
        f"{'':14s} peak in the {nb.train.peak_phase}: "
        + ", ".join(f"{part} {value:.1f}" for part, value in nb.train.memory_mb.items())
        + f" MiB; most saved for backward {nb.train.saved_mb:.1f} MiB",
    ]


def decoder_7b() -> list[str]:
    """The 7B decoder's AdamW step on meta: seconds, and the breakdown checked against 4N / 4N / 8N bytes."""
    with torch.device("meta"):
        model = Decoder()
    tokens = torch.zeros(1, 2048, dtype=torch.long, device="meta")
    optimizer = ready_optimizer(model)
    bare = timed(lambda: bare_step(model, tokens, optimizer))
    seconds = timed(lambda: profile(model, tokens, device="meta", train=True, optimizer="adamw"))
    p = profile(model, tokens, device="meta", train=True, optimizer="adamw")
    fcm_seconds = timed(lambda: flop_counter_step(model, tokens, optimizer))
    fcm_flops = flop_counter_total(Decoder, tokens)
    n = p.params
    parts = p.train.memory_mb
    return [
        f"7B decoder on meta, seq 2048, AdamW fp32: {n:,} params; bare meta step {bare:.1f} s,"
        f" netbudget {seconds:.1f} s (eval forward + step), FlopCounterMode over the step {fcm_seconds:.1f} s",
        f"  train_macs {p.train_macs / 1e12:.2f} T = {p.train_macs / p.macs:.3f} x forward;"
        f" 2*train_macs / FlopCounterMode {2 * p.train_macs / fcm_flops:.4f}",
        f"  peak {p.train_memory_mb / 1024:.2f} GiB in the {p.train.peak_phase}: params {parts['params'] / 1024:.3f} GiB"
        f" (4 B x N = {4 * n / 2**30:.3f}), grads {parts['grads'] / 1024:.3f} GiB (4 B x N),"
        f" optimizer state {parts['optimizer_state'] / 1024:.3f} GiB (8 B x N = {8 * n / 2**30:.3f}),"
        f" activations {parts['activations'] / 1024:.3f} GiB, temporaries {parts['temporaries'] / 1024:.3f} GiB",
        f"  most saved for backward at once: {p.train.saved_mb / 1024:.2f} GiB",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip ResNet-18 at 224x224 and the 7B decoder")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"Training step (AdamW), torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in QUICK if args.quick else MODELS:
        print("\n".join(measure(name, args.rounds)))
    if not args.quick:
        print("\n".join(decoder_7b()))


if __name__ == "__main__":
    main()
