"""Operator-level counting, attributed to the innermost module running.

A ``TorchDispatchMode`` sees every aten op of the forward, including those that
functional code (``F.linear``, ``@``, ``einsum``) and fused fast paths produce;
forward hooks on every module keep a stack, so each op is charged to the module
whose own ``forward`` issued it. The same mode follows live intermediate tensors
as they are created and freed, which gives the activation peak on any device.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .. import formulas
from .higher_order import EagerFlexAttention, run_higher_order
from .meta_kernels import META_KERNELS, run_on_meta
from .model_forms import script_module_hooks, scripted

_aten = torch.ops.aten


def _existing_ops(*names: tuple[Any, str, str]) -> frozenset:
    """Op overloads looked up by name; those that this torch version lacks are skipped."""
    found = (getattr(getattr(namespace, name, None), overload, None) for namespace, name, overload in names)
    return frozenset(op for op in found if op is not None)


# Queries about a tensor's layout; they compute nothing and are answered before counting.
_METADATA_OPS = _existing_ops(
    (_aten, "sym_is_contiguous", "default"),
    (_aten, "is_contiguous", "default"),
    (_aten, "is_contiguous", "memory_format"),
    (_aten, "is_strides_like_format", "default"),
    (_aten, "is_non_overlapping_and_dense", "default"),
    (_aten, "size", "default"),
    (_aten, "sym_size", "default"),
    (_aten, "stride", "default"),
    (_aten, "sym_stride", "default"),
    (_aten, "storage_offset", "default"),
    (_aten, "sym_storage_offset", "default"),
    (_aten, "numel", "default"),
    (_aten, "sym_numel", "default"),
    (_aten, "dim", "default"),
    (_aten, "_nested_tensor_size", "default"),
    (torch.ops.prim, "layout", "default"),
    (torch.ops.prim, "device", "default"),
)


# Batch norm returns its saved statistics beside its output: empty tensors from the CPU
# kernel, C elements each on meta. Only the output is an activation, so that the figure
# does not depend on the device.
_STATISTICS_OUTPUTS = _existing_ops(
    (_aten, "native_batch_norm", "default"),
    (_aten, "_native_batch_norm_legit_no_training", "default"),
    (_aten, "_native_batch_norm_legit", "default"),
    (_aten, "_native_batch_norm_legit", "no_stats"),
)


@dataclass
class LayerTally:
    """What one module has done so far in this forward; ``ops`` maps an op's name to
    [calls, MACs, FLOPs]."""

    calls: int = 0
    macs: int = 0
    flops: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    input_shapes: list[Any] = field(default_factory=list)
    output_shapes: list[Any] = field(default_factory=list)
    ops: dict[str, list[int]] = field(default_factory=dict)

    def charge(self, op: str, macs: int, flops: int) -> None:
        self.macs += macs
        self.flops += flops
        figures = self.ops.get(op)
        if figures is None:
            figures = self.ops[op] = [0, 0, 0]
        figures[0] += 1
        figures[1] += macs
        figures[2] += flops


def tensor_leaves(value: Any) -> list[torch.Tensor]:
    """Tensors inside nested tuples, lists, dicts and dataclasses, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in tensor_leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in tensor_leaves(item)]
    if hasattr(value, "__dataclass_fields__"):
        return [leaf for name in value.__dataclass_fields__ for leaf in tensor_leaves(getattr(value, name, None))]
    return []


def argument_tensors(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """Tensors passed to an op: directly or in a list (``cat``), never deeper; faster than
    walking every int of stride and padding lists."""
    found = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(item for item in value if isinstance(item, torch.Tensor))
    return found


def shapes_of(value: Any) -> list[list[int]]:
    return [_shape(leaf) for leaf in tensor_leaves(value)]


def _shape(tensor: torch.Tensor) -> list[int]:
    """A tensor's shape; a nested tensor's padded shape (its sequences' count, then each
    dimension's largest size), as ``to_padded_tensor`` would give it."""
    if not (tensor.is_nested and tensor.layout == torch.strided):
        return list(tensor.shape)
    sizes = tensor._nested_tensor_size().tolist()  # one row of sizes per sequence
    return [len(sizes), *(max(column) for column in zip(*sizes))]


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _storage_key(tensor: torch.Tensor) -> int | None:
    try:
        return tensor.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):  # sparse and other storage-less layouts
        return None


class LiveMemory:
    """Bytes of intermediate tensors alive right now, and the peak.

    Each storage is counted once, however many views of it exist, and leaves the
    tally when the last tensor that the mode saw on it is freed. Storages of the
    inputs, parameters and buffers are external and never counted. ``parts`` splits
    the live bytes by what they are: everything a forward creates is an activation;
    a training step's memory starts new storages as temporaries and reclassifies them.
    """

    #: What a storage created now counts as.
    category = "activations"

    def __init__(self, external: list[torch.Tensor]) -> None:
        self._external = {key for key in map(_storage_key, external) if key is not None}
        self._live: dict[int, list[Any]] = {}  # storage key -> [bytes, tensors alive, category]
        self._refs: dict[int, tuple[weakref.ref, int]] = {}  # id(ref) -> (ref, storage key)
        self.parts: dict[str, int] = {}
        self.current = 0
        self.peak = 0
        self._open = True

    def saw(self, tensor: torch.Tensor) -> None:
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse and other storage-less layouts
            return
        key = storage._cdata
        if key in self._external:
            return
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [storage.nbytes(), 0, self.category]
            self.parts[self.category] = self.parts.get(self.category, 0) + entry[0]
            self.current += entry[0]
            if self.current > self.peak:
                self._new_peak()
        entry[1] += 1
        # Refs are kept by id: two refs to one tensor would compare their tensors with ==.
        ref = weakref.ref(tensor, self._freed)
        self._refs[id(ref)] = (ref, key)

    def _new_peak(self) -> None:
        self.peak = self.current

    def reclassify(self, tensor: torch.Tensor, category: str) -> None:
        """Count a live storage as ``category`` from now on (a temporary that became a gradient)."""
        key = _storage_key(tensor)
        entry = self._live.get(key) if key is not None else None
        if entry is None or entry[2] == category:
            return
        self.parts[entry[2]] -= entry[0]
        self.parts[category] = self.parts.get(category, 0) + entry[0]
        entry[2] = category

    def _freed(self, ref: weakref.ref) -> None:
        ref_and_key = self._refs.pop(id(ref), None)
        if ref_and_key is None or not self._open:
            return
        key = ref_and_key[1]
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            self.parts[entry[2]] -= entry[0]
            del self._live[key]

    def close(self) -> None:
        """Stop listening: tensors that outlive the traced work no longer matter."""
        self._open = False
        self._live.clear()
        self._refs.clear()


class Tracer(TorchDispatchMode):
    """Counts every op of a forward and charges it to the module that ran it.

    One context manager: entering it hooks every module and starts the dispatch mode,
    leaving it (also when the forward raises) removes the hooks and stops listening
    for freed tensors, as ``FlopCounterMode`` enters and leaves its ``ModuleTracker``.
    """

    #: Higher-order ops (``torch.cond``, ``flex_attention``, ...) come to ``__torch_dispatch__`` whole.
    supports_higher_order_operators = True

    def __init__(self, model: torch.nn.Module, external: list[torch.Tensor], formula_set: formulas.FormulaSet) -> None:
        super().__init__()
        self.formula_set = formula_set
        self.modules = list(model.named_modules())
        self.tallies = [LayerTally() for _ in self.modules]
        self.uncounted: Counter[str] = Counter()
        self.memory = LiveMemory(external)
        self._index = {id(module): index for index, (_, module) in enumerate(self.modules)}
        self._module_formulas = [formula_set.for_module(module) for _, module in self.modules]
        self._stack: list[int] = []
        self._paths: dict[str, int] | None = None  # module path -> index, made when first asked
        #: Set on the direct path: undoes what the forward writes to the model's own tensors.
        self.own_writes: Any = None
        self._suppressed = 0  # > 0 inside a module counted by a user's module formula
        self._handles: list[Any] = []

    def __enter__(self) -> Tracer:
        script_ids = scripted(self.modules)
        for _, module in self.modules:
            if id(module) not in script_ids:
                self._handles.append(module.register_forward_pre_hook(self._enter, with_kwargs=True))
                self._handles.append(module.register_forward_hook(self._leave, always_call=True))
        if script_ids:
            self._handles += script_module_hooks(script_ids, self._enter, self._leave)
        self._handles.append(EagerFlexAttention())
        try:
            return super().__enter__()
        except BaseException:
            self._detach()
            raise

    def __exit__(self, *exc_info: Any) -> None:
        try:
            super().__exit__(*exc_info)
        finally:
            self._detach()

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.memory.close()

    # --- module attribution ---------------------------------------------------------

    @contextlib.contextmanager
    def charged_to(self, path: str) -> Iterator[None]:
        """Ops run in this block are charged to the module at ``path``, or to its nearest
        ancestor that the model has (an exported graph's nodes name the module that made
        them, but the graph keeps only the modules that hold weights)."""
        if self._paths is None:
            self._paths = {name: index for index, (name, _) in enumerate(self.modules)}
        while path not in self._paths:
            path = path.rpartition(".")[0]
        self._stack.append(self._paths[path])
        try:
            yield
        finally:
            self._stack.pop()

    def _enter(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        index = self._index[id(module)]
        tally = self.tallies[index]
        tally.calls += 1
        if tally.calls == 1:
            tally.input_shapes = shapes_of((args, kwargs))
        self._stack.append(index)
        if self._module_formulas[index] is not None:
            self._suppressed += 1

    def _leave(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        index = self._index[id(module)]
        while self._stack and self._stack.pop() != index:
            pass  # a child raised and its hook never ran; unwind to this module
        tally = self.tallies[index]
        if tally.calls == 1 and not tally.output_shapes:
            tally.output_shapes = shapes_of(output)
        formula = self._module_formulas[index]
        if formula is not None:
            self._suppressed -= 1
            if self._suppressed == 0:  # whatever the forward returned, None included
                name = f"module:{type(module).__name__}"
                cost = formulas.apply(formula, name, module, args, output)
                tally.charge(name, cost.macs, cost.total_flops)

    # --- operator counting ---------------------------------------------------------------

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _METADATA_OPS:
            return func(*args, **kwargs)
        if isinstance(func, torch._ops.HigherOrderOperator):  # no public alias of the class
            return run_higher_order(self, func, args, kwargs, self._traced)
        if self.own_writes is not None:
            self.own_writes.before(func, args, kwargs)
        formula = self.formula_set.for_op(func)
        if formula is None:
            # CompositeImplicit ops without a formula: count what they decompose into,
            # as FlopCounterMode does.
            decomposed = self._decompose(func, args, kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs) if func not in META_KERNELS else run_on_meta(func, args, kwargs)
        self._account(func, formula, args, kwargs, out)
        return out

    def _op_call(self, func: Any, args: tuple, kwargs: dict, out: Any) -> formulas.OpCall:
        return formulas.OpCall(func, args, kwargs, out)

    def _owner(self, args: tuple, kwargs: dict) -> int:
        """The index of the module an op is charged to: the innermost one running."""
        return self._stack[-1] if self._stack else 0

    def _decompose(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """Run a CompositeImplicit op's decomposition with this mode active again, so that
        its parts are counted. Nested tensors have kernels of their own for such ops
        (``linear``), which the dense decomposition cannot run: those run whole."""
        if any(tensor.is_nested for tensor in argument_tensors(args, kwargs)):
            return NotImplemented
        return self._traced(func.decompose, *args, **kwargs)

    def _traced(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` with this dispatch mode active again (only the
        dispatch mode: the module hooks stay as they are)."""
        TorchDispatchMode.__enter__(self)
        try:
            return function(*args, **kwargs)
        finally:
            TorchDispatchMode.__exit__(self, None, None, None)

    def _account(self, func: Any, formula: Any, args: tuple, kwargs: dict, out: Any) -> None:
        outputs = argument_tensors((out,), {})
        for tensor in outputs[:1] if func in _STATISTICS_OUTPUTS else outputs:
            self.memory.saw(tensor)
        if self._suppressed:
            return
        tally = self.tallies[self._owner(args, kwargs)]
        if not func.is_view:
            tally.read_bytes += sum(_nbytes(tensor) for tensor in argument_tensors(args, kwargs))
            tally.write_bytes += sum(_nbytes(tensor) for tensor in outputs)
        if formula is None:
            self.uncounted[str(func.overloadpacket)] += 1
        elif not self.formula_set.is_free(formula):
            name = str(func.overloadpacket)
            cost = formulas.apply(formula, name, self._op_call(func, args, kwargs, out))
            tally.charge(name, cost.macs, cost.total_flops)
