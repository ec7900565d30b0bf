"""One training step under the tracer: the forward in train mode, the backward of a scalar loss,
and the optimizer's step, counted per layer and followed byte by byte.

The step runs on converted copies of the model's parameters and buffers (a stateless
call), so the model keeps no ``.grad``, no optimizer state and its weights. The optimizer
first takes one step on zero gradients, untraced, so that its state exists as in every
step after the first; the traced step then starts, as PyTorch's ``zero_grad`` leaves it,
with no gradients.

Backward work is charged to the module whose forward made it. Autograd numbers its nodes
in the order the forward creates them; the tracer notes the next number at every module
entry and exit, and while the backward runs it asks which node is executing each op.
A parameter's gradient accumulation and the optimizer's work on it are charged to the
module that owns the parameter. ``torch._C._autograd._get_sequence_nr`` and
``torch._C._current_autograd_node`` are private: PyTorch has no public way to ask either
(its own ``ModuleTracker`` guesses from gradient hooks, which misplaces work between
modules).
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .. import devices, formulas
from ..formulas import FormulaSet
from ..results import MemoryPart, Phase
from .model_forms import swapped_state
from .tracer import Attribution, LiveMemory, Tracer, argument_tensors, storage_key, tensor_leaves

_ACCUMULATE_GRAD = 2**64 - 1  # the sequence number of an AccumulateGrad node: it has none


def make_optimizer(name: str, params: list[torch.Tensor]) -> torch.optim.Optimizer | None:
    """The optimizer ``devices.OPTIMIZERS`` names, over ``params``; None for "none" or no parameters."""
    entry = devices.OPTIMIZERS[name]
    if entry is None or not params:
        return None
    kind, settings = entry
    optimizer: torch.optim.Optimizer = getattr(torch.optim, kind)(params, **settings)
    return optimizer


def sum_of_outputs(outputs: Any) -> torch.Tensor:
    """The default loss: the sum of every floating output that depends on a trainable weight."""
    leaves = [leaf for leaf in tensor_leaves(outputs) if leaf.is_floating_point() and leaf.requires_grad]
    if not leaves:
        raise ValueError(
            "no output of the model depends on a trainable parameter, so there is nothing to train: "
            "check requires_grad, or give a loss_factory that builds the loss from the outputs"
        )
    total = leaves[0].sum()
    for leaf in leaves[1:]:
        total = total + leaf.sum()
    return total


class StepMemory(LiveMemory):
    """Live bytes over the step by part: the weights, inputs and optimizer state from the start,
    then what the step creates, as temporaries until it is saved for backward (activations) or
    becomes a parameter's ``.grad`` (grads). The parts are kept as they were at the peak."""

    category = MemoryPart.TEMPORARIES

    def __init__(self, fixed: dict[MemoryPart, list[torch.Tensor]]) -> None:
        super().__init__([tensor for tensors in fixed.values() for tensor in tensors])
        self.parts = dict.fromkeys(MemoryPart, 0)
        seen: set[int] = set()
        for part, tensors in fixed.items():
            for tensor in tensors:
                key = storage_key(tensor)
                if key is not None and key not in seen:
                    seen.add(key)
                    self.parts[part] += tensor.untyped_storage().nbytes()
        self.current = self.peak = sum(self.parts.values())
        self.phase = Phase.FORWARD
        self.peak_parts = dict(self.parts)
        self.peak_phase = Phase.FORWARD
        self.most_saved = 0  # the most bytes saved for backward at one time

    def reclassify(self, tensor: torch.Tensor, category: MemoryPart) -> None:
        super().reclassify(tensor, category)
        self.most_saved = max(self.most_saved, self.parts[MemoryPart.ACTIVATIONS])

    def _new_peak(self) -> None:
        self.peak = self.current
        self.peak_parts = dict(self.parts)
        self.peak_phase = self.phase


class StepAttribution(Attribution):
    """Where a step's work is charged (the tracer's :class:`Attribution`): forward and loss ops to
    the module stack, backward ops to the module whose forward made the autograd node running them,
    optimizer ops to the module owning the parameter they update."""

    def __init__(self, memory: StepMemory, owners: dict[int, int]) -> None:
        self.memory = memory
        self.phase = Phase.FORWARD
        self._owners = owners  # storage key -> module index: weights, their gradients, optimizer state
        self._sequence_at: list[int] = []  # autograd's next sequence number at each module entry and exit
        self._module_at: list[int] = []  # the module running from then on

    def enter_phase(self, phase: Phase) -> None:
        self.phase = self.memory.phase = phase

    def own(self, tensor: torch.Tensor, index: int) -> None:
        key = storage_key(tensor)
        if key is not None:
            self._owners[key] = index

    def owner_of(self, tensor: torch.Tensor) -> int | None:
        key = storage_key(tensor)
        return self._owners.get(key) if key is not None else None

    @property
    def counting_calls(self) -> bool:  # type: ignore[override]  # a property where the base has a constant
        # In the backward, a module's forward runs again only in a checkpointed block.
        return self.phase is Phase.FORWARD

    def module_changed(self, innermost: int) -> None:
        self._sequence_at.append(torch._C._autograd._get_sequence_nr())
        self._module_at.append(innermost)

    def owner(self, innermost: int | None, args: tuple, kwargs: dict) -> int:
        if innermost is not None or self.phase in (Phase.FORWARD, Phase.LOSS):
            return 0 if innermost is None else innermost
        if self.phase is Phase.BACKWARD:
            return self._backward_owner()
        for tensor in argument_tensors(args, kwargs):
            owner = self.owner_of(tensor)
            if owner is not None:
                return owner
        return 0

    def _backward_owner(self) -> int:
        node = torch._C._current_autograd_node()
        if node is None:  # the engine seeding the loss's gradient
            return 0
        sequence = node._sequence_nr()
        if sequence == _ACCUMULATE_GRAD:
            variable = getattr(node, "variable", None)
            owner = self.owner_of(variable) if variable is not None else None
            return 0 if owner is None else owner
        position = bisect.bisect_right(self._sequence_at, sequence) - 1
        return self._module_at[position] if position >= 0 else 0

    def op_call(self, func: Any, args: tuple, kwargs: dict, out: Any) -> formulas.OpCall:
        node = torch._C._current_autograd_node() if self.phase is Phase.BACKWARD else None
        if node is None:
            return formulas.OpCall(func, args, kwargs, out)
        needed = tuple(edge[0] is not None for edge in node.next_functions)
        return formulas.OpCall(func, args, kwargs, out, grad_needed=needed)

    def accounted(self, args: tuple, kwargs: dict, out: Any) -> None:
        if self.phase is Phase.OPTIMIZER:  # what an update creates belongs to its parameter's module
            owner = self.owner(None, args, kwargs)
            for tensor in argument_tensors((out,), {}):
                self.own(tensor, owner)


@dataclass
class StepResult:
    """What the traced step measured: per-module tallies, the memory split at the peak."""

    tracer: Tracer
    peak_bytes: int
    parts: dict[MemoryPart, int]
    peak_phase: Phase
    most_saved: int
    cuda_peak_mb: float | None


def rebatch(value: Any, batch: int) -> Any:
    """Every input tensor with ``batch`` rows: its rows repeated (or cut) along dimension 0."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return value
        # a size of 0 holds no element: nothing to overflow (shape_problem wants positive sizes)
        problem = devices.shape_problem([batch, *value.shape[1:]]) if all(value.shape[1:]) else None
        if problem:
            raise ValueError(f"train batch {batch}: input {problem}")
        repeats = -(-batch // value.shape[0])
        return value.repeat(repeats, *([1] * (value.dim() - 1)))[:batch]
    if isinstance(value, tuple):
        return tuple(rebatch(item, batch) for item in value)
    if isinstance(value, list):
        return [rebatch(item, batch) for item in value]
    if isinstance(value, dict):
        return {key: rebatch(item, batch) for key, item in value.items()}
    return value


def owners_by_module(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[int, int]:
    """Storage key of each weight copy -> the index of the first module (in ``named_modules``
    order) that holds it, as the inventory counts tied weights."""
    owners: dict[int, int] = {}
    for index, (path, module) in enumerate(model.named_modules()):
        for name in (*module._parameters.keys(), *module._buffers.keys()):  # keys(): TorchScript tables
            copy = state.get(f"{path}.{name}" if path else name)
            key = storage_key(copy) if copy is not None else None
            if key is not None:
                owners.setdefault(key, index)
    return owners


@contextlib.contextmanager
def _grad_hooks(params: list[torch.Tensor], on_grad: Callable[[torch.Tensor], None]) -> Iterator[None]:
    handles = [param.register_post_accumulate_grad_hook(on_grad) for param in params]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_step(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    args: tuple,
    kwargs: dict,
    formulas: FormulaSet,
    *,
    optimizer: str,
    loss: Callable[[Any], torch.Tensor] | None,
    autocast: torch.dtype | None,
    device: torch.device,
    around: Callable[[], contextlib.AbstractContextManager],
    own_writes: Any = None,
) -> StepResult:
    """Trace one step of ``model`` called statelessly on ``state`` (converted copies).

    ``around`` gives the context the whole step runs in (train mode with modes restored,
    CUDA peak measurement, the meta attention routing); it yields a dict that receives
    ``peak_memory_mb`` on CUDA. ``own_writes`` (an ``OwnWrites`` that ``around`` enters) is
    told of every op that writes an argument.
    """
    unique = {id(tensor): tensor for tensor in state.values()}.values()
    params: list[torch.Tensor] = [tensor for tensor in unique if isinstance(tensor, torch.nn.Parameter)]
    buffers = [tensor for tensor in unique if not isinstance(tensor, torch.nn.Parameter)]
    trainable = [param for param in params if param.requires_grad]
    optim = make_optimizer(optimizer, trainable)
    if optim is not None:
        for param in trainable:
            param.grad = torch.zeros_like(param)
        optim.step()
        optim.zero_grad(set_to_none=True)
    owners = owners_by_module(model, state)
    opt_state: list[torch.Tensor] = []
    for state_of, param_state in optim.state.items() if optim is not None else ():
        param_key = storage_key(state_of)
        for value in param_state.values():
            if isinstance(value, torch.Tensor):
                opt_state.append(value)
                key = storage_key(value)
                if key is not None:
                    owners.setdefault(key, owners.get(param_key, 0) if param_key is not None else 0)
    memory = StepMemory(
        {
            MemoryPart.PARAMS: params,
            MemoryPart.BUFFERS: buffers,
            MemoryPart.INPUTS: tensor_leaves((args, kwargs)),
            MemoryPart.OPTIMIZER_STATE: opt_state,
        }
    )
    attribution = StepAttribution(memory, owners)
    tracer = Tracer(model, [], formulas, memory=memory, attribution=attribution)
    tracer.own_writes = own_writes

    def saved_for_backward(tensor: torch.Tensor) -> torch.Tensor:
        if attribution.phase in (Phase.FORWARD, Phase.LOSS):
            memory.reclassify(tensor, MemoryPart.ACTIVATIONS)
        return tensor

    def accumulated(param: torch.Tensor) -> None:
        if param.grad is not None:  # it is, after accumulation: the hook is called for that
            memory.reclassify(param.grad, MemoryPart.GRADS)
            attribution.own(param.grad, attribution.owner_of(param) or 0)

    cast = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with (
        around() as measured,
        torch.enable_grad(),
        _grad_hooks(trainable, accumulated),
        torch.autograd.graph.saved_tensors_hooks(saved_for_backward, lambda tensor: tensor),
        swapped_state(model, state),  # for the whole step: a checkpointed block runs again in the backward
        tracer,
    ):
        with cast:
            outputs = model(*args, **kwargs)
            attribution.enter_phase(Phase.LOSS)
            scalar = (loss or sum_of_outputs)(outputs)
        _check_scalar(scalar)
        # The outputs and the loss stay alive to the end, as a training loop holds them
        # (out = model(x); loss = f(out); loss.backward(); opt.step()).
        attribution.enter_phase(Phase.BACKWARD)
        scalar.backward()
        if optim is not None:
            attribution.enter_phase(Phase.OPTIMIZER)
            optim.step()
    return StepResult(
        tracer,
        memory.peak,
        dict(memory.peak_parts),
        memory.peak_phase,
        memory.most_saved,
        measured.get("peak_memory_mb"),
    )


def _check_scalar(value: Any) -> None:
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.requires_grad:
        raise ValueError(
            f"the loss must be a one-element tensor that requires grad, got "
            f"{type(value).__name__ if not isinstance(value, torch.Tensor) else f'a tensor of shape {list(value.shape)}'}"
        )
