"""Operator-level counting, attributed to the innermost module running.

A ``TorchDispatchMode`` sees every aten op of the forward, including those that
functional code (``F.linear``, ``@``, ``einsum``) and fused fast paths produce;
a wrapper around every module's ``forward`` keeps a stack, so each op is charged to
the module whose own ``forward`` issued it. The same mode follows live intermediate tensors
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
from ..formulas.elementwise import PerElement
from ..formulas.schema import OpSchema, schema_of
from ..results import MemoryPart
from .higher_order import EagerFlexAttention, run_higher_order
from .kernel_overrides import kernel_in_effect
from .meta_kernels import META_KERNELS, run_on_meta
from .model_forms import script_module_hooks, scripted
from .roofline import OpClock
from .traffic import traffic_of

_aten = torch.ops.aten
_NO_FORWARD = object()  # a module with no forward of its own in its __dict__ (the usual case)
# The key whose kernel OpOverload.decompose runs (it answers NotImplemented without one).
_COMPOSITE = torch._C.DispatchKey.CompositeImplicitAutograd


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
# A tensor made from Python data in a forward (``torch.tensor([128, 384], device=x.device)``) reaches
# the mode as ``lift_fresh`` on cpu and cuda, and as no op at all on meta: it is a constant, as the
# weights are, and passes uncounted everywhere (no activation, no op), so that meta = cpu.
_CONSTANT_OPS = _existing_ops((_aten, "lift_fresh", "default"))


# Jagged nested tensors (``layout=torch.jagged``) are a Python tensor subclass whose ops run as
# dense ops on its values; torch.nested has no public name for the class.
_JAGGED: Any
try:
    from torch.nested._internal.nested_tensor import NestedTensor as _JAGGED
except ImportError:  # a torch without jagged nested tensors
    _JAGGED = None


# Batch norm returns its saved statistics beside its output: empty tensors from the CPU
# kernel, C elements each on meta. Only the output is an activation, and only its bytes are
# written, so that neither figure depends on the device.
_STATISTICS_OUTPUTS = _existing_ops(
    (_aten, "native_batch_norm", "default"),
    (_aten, "_native_batch_norm_legit_no_training", "default"),
    (_aten, "_native_batch_norm_legit", "default"),
    (_aten, "_native_batch_norm_legit", "no_stats"),
)


@dataclass
class LayerTally:
    """What one module has done so far in this forward; ``ops`` maps an op's name to
    [calls, MACs, FLOPs]. With a target, its ops' estimated seconds, split by what bounds
    each op (see :mod:`.roofline`)."""

    calls: int = 0
    macs: int = 0
    flops: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    compute_s: float = 0.0
    memory_s: float = 0.0
    overhead_s: float = 0.0
    input_shapes: list[Any] = field(default_factory=list)
    output_shapes: list[Any] = field(default_factory=list)
    ops: dict[str, list[int]] = field(default_factory=dict)
    #: Why some of its MACs and FLOPs are only an upper bound on this device (formulas' ``Cost.upper_bound``).
    upper_bounds: set[str] = field(default_factory=set)

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
    found: list[torch.Tensor] = []
    _collect_leaves(value, found)
    return found


def _collect_leaves(value: Any, found: list[torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _collect_leaves(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_leaves(item, found)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            _collect_leaves(getattr(value, name, None), found)


def argument_tensors(args: tuple, kwargs: dict, positions: tuple[int, ...] | None = None) -> list[torch.Tensor]:
    """Tensors passed to an op: directly or in a list (``cat``), never deeper; faster than
    walking every int of stride and padding lists. ``positions`` (an op plan's
    ``tensor_positions``) limits the positional arguments looked at to those that may hold one."""
    if positions is not None:
        args = tuple([args[index] for index in positions if index < len(args)])
    found = []
    for value in (*args, *kwargs.values()) if kwargs else args:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, torch.Tensor):
                    found.append(item)
    return found


def shapes_of(value: Any) -> list[list[int]]:
    return [_shape(leaf) for leaf in tensor_leaves(value)]


def dtypes_of(value: Any) -> list[str]:
    """The dtypes of the tensors ``shapes_of`` gives the shapes of, as ``float32``."""
    return [str(leaf.dtype).replace("torch.", "") for leaf in tensor_leaves(value)]


def _shape(tensor: torch.Tensor) -> list[int]:
    """A tensor's shape; a nested tensor's padded shape (its sequences' count, then each
    dimension's largest size), as ``to_padded_tensor`` would give it."""
    if not tensor.is_nested:
        return list(tensor.shape)
    if tensor.layout == torch.jagged:  # the ragged dimension is a symbol; its longest sequence is known
        jagged: Any = tensor  # the jagged class's own attributes, not Tensor's
        shape = list(tensor.shape)
        shape[jagged._ragged_idx] = jagged._get_max_seqlen()
        return shape
    sizes = tensor._nested_tensor_size().tolist()  # one row of sizes per sequence
    return [len(sizes), *(max(column) for column in zip(*sizes))]


#: The address of a tensor's storage (``untyped_storage()._cdata``), asked without making the
#: storage's Python object, which most tensors the tracer sees never need.
_storage_id = getattr(torch._C, "_storage_id", None) or (lambda tensor: tensor.untyped_storage()._cdata)


def storage_key(tensor: torch.Tensor) -> int | None:
    """What identifies the memory a tensor lives in (its views share it); None for layouts
    without storage (sparse). Live memory, a training step's owners and undone writes key on it."""
    try:
        return _storage_id(tensor)
    except (RuntimeError, NotImplementedError):  # sparse and other storage-less layouts
        return None


class LiveMemory:
    """Bytes of intermediate tensors alive right now, and the peak.

    Each storage is counted once, however many views of it exist, and leaves the
    tally when the last tensor that the mode saw on it is freed; a tensor seen again on the
    same storage (an in-place op returns its argument) is followed once. Storages of the
    inputs, parameters and buffers are external and never counted. ``parts`` splits
    the live bytes by what they are: everything a forward creates is an activation;
    a training step's memory starts new storages as temporaries and reclassifies them.
    """

    #: What a storage created now counts as.
    category = MemoryPart.ACTIVATIONS

    def __init__(self, external: list[torch.Tensor]) -> None:
        self._external = {key for key in map(storage_key, external) if key is not None}
        self._live: dict[int, list[Any]] = {}  # storage key -> [bytes, tensors alive, category]
        self._refs: dict[int, tuple[weakref.ref, int, int]] = {}  # id(ref) -> (ref, storage key, id(tensor))
        self._followed: dict[int, int] = {}  # id(tensor) -> storage key, for each tensor alive with a ref
        self.parts: dict[MemoryPart, int] = {}
        self.current = 0
        self.peak = 0
        self._open = True
        self._on_freed = self._freed  # one bound method for every weakref's callback

    def saw(self, tensor: torch.Tensor) -> None:
        try:
            key = _storage_id(tensor)
        except (RuntimeError, NotImplementedError):  # sparse and other storage-less layouts
            return
        if key in self._external:
            return
        tensor_id = id(tensor)
        if self._followed.get(tensor_id) == key:  # this tensor is followed on this storage already
            return
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [tensor.untyped_storage().nbytes(), 0, self.category]
            self.parts[self.category] = self.parts.get(self.category, 0) + entry[0]
            self.current += entry[0]
            if self.current > self.peak:
                self._new_peak()
            self.storage_added(key, entry[0])
        entry[1] += 1
        # Refs are kept by id: two refs to one tensor would compare their tensors with ==.
        ref = weakref.ref(tensor, self._on_freed)
        self._refs[id(ref)] = (ref, key, tensor_id)
        self._followed[tensor_id] = key

    def _new_peak(self) -> None:
        self.peak = self.current

    def reclassify(self, tensor: torch.Tensor, category: MemoryPart) -> None:
        """Count a live storage as ``category`` from now on (a temporary that became a gradient)."""
        key = storage_key(tensor)
        entry = self._live.get(key) if key is not None else None
        if entry is None or entry[2] == category:
            return
        self.parts[entry[2]] -= entry[0]
        self.parts[category] = self.parts.get(category, 0) + entry[0]
        entry[2] = category

    def _freed(self, ref: weakref.ref) -> None:
        followed = self._refs.pop(id(ref), None)
        if followed is None or not self._open:
            return
        _, key, tensor_id = followed
        self._followed.pop(tensor_id, None)  # its id is free: a tensor made later may take it
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            self.parts[entry[2]] -= entry[0]
            del self._live[key]
            self.storage_freed(key, entry[0])

    def storage_added(self, key: int, nbytes: int) -> None:
        """A storage (by its key) became live: for a subclass that follows storages (the serving
        step's notes which module made each, and logs them to work a peak out again)."""

    def storage_freed(self, key: int, nbytes: int) -> None:
        """A storage's last tensor that the mode saw was freed."""

    def close(self) -> None:
        """Stop listening: tensors that outlive the traced work no longer matter."""
        self._open = False
        self._live.clear()
        self._refs.clear()
        self._followed.clear()


class OpPlan:
    """How the tracer treats one op overload, worked out on its first call and kept with the
    formula set: whether it is a layout query, its formula, whether it is free, and which
    of its outputs are activations."""

    __slots__ = (
        "call",
        "count_bytes",
        "counted",
        "tensor_positions",
        "decompose",
        "formula",
        "free",
        "memory_outputs",
        "meta_kernel",
        "passed",
        "family",
        "func",
        "name",
        "per_element",
        "traffic",
        "writes",
    )

    def __init__(self, func: Any, formula_set: formulas.FormulaSet) -> None:
        found = formula_set.for_op(func)
        #: Plans are found by ``id(func)`` (an overload's ``__hash__`` is Python code, run on every
        #: dict lookup): the plan holds the overload, so that its id is never another's.
        self.func = func
        #: What runs the op: an overload's C++ entry point itself, one Python frame fewer per op
        #: than ``OpOverload.__call__``, which only calls it (overloads of other kinds: the call).
        self.call = func._op if type(func) is torch._ops.OpOverload else func
        #: Answered before counting, and never counted: layout queries and constants.
        self.passed = func in _METADATA_OPS or func in _CONSTANT_OPS
        self.free = formula_set.is_free(found)
        self.formula: Any = None if self.free else found  # an OpFormula, or None
        #: A per-element formula, which the tracer applies without calling it (None: call the formula).
        self.per_element = found if type(found) is PerElement else None
        #: CompositeImplicit ops without a formula (or with one for their nested runs only): count
        #: what they decompose into, as FlopCounterMode does.
        #: (Layout queries first: prim::layout, which a nested tensor's ``.layout`` asks, is no dispatcher op.)
        self.decompose = (
            (found is None or getattr(found, "nested_only", False))
            and not self.passed
            and (
                _COMPOSITE in func.py_kernels or torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), _COMPOSITE)
            )
        )
        self.name = str(func.overloadpacket)
        self.family = formula_set.family_of(func)  # the registry family its formula belongs to
        self.count_bytes = not func.is_view
        schema = schema_of(func)
        self.tensor_positions = schema.tensor_positions
        #: None where the op reads its tensor arguments and writes its outputs whole (most ops).
        self.traffic = traffic_of(schema, self.name) if self.count_bytes else None
        #: False for a free view: listed in ``ops`` with its calls, but it takes no time on the clock.
        self.counted = self.count_bytes or not self.free
        self.memory_outputs = 1 if func in _STATISTICS_OUTPUTS else None  # None: every output
        self.meta_kernel = func in META_KERNELS  # ours replaces PyTorch's on meta
        #: The op's schema where it writes an argument (``Tensor(a!)``): OwnWrites looks at those.
        self.writes: OpSchema | None = schema if schema.written else None


# Whether this torch's C extension can mark a code object for dynamo to skip (2.6 and later).
_CODE_MARKS = hasattr(torch._C._dynamo.eval_frame, "set_code_exec_strategy")

# Modules whose forward takes another path when a hook is attached to them or a child:
# TransformerEncoderLayer skips its fused fast path then (torch checks _forward_hooks and
# _forward_pre_hooks). Profiling followed modules with hooks before it wrapped forwards, so
# these keep one (a no-op) and run, and count, as they always have here.
_HOOK_SENSITIVE = (torch.nn.TransformerEncoderLayer,)


def _no_op_hook(module: torch.nn.Module, args: tuple) -> None:
    return None


class Attribution:
    """Where a tracer charges work when "the innermost module running" is not the whole answer:
    the small public interface the training step (``engine/training.py``) implements to charge the
    backward to the module whose forward made it and the optimizer's work to the module owning the
    parameter. The tracer keeps the module stack and the tallies, and asks:

    - ``counting_calls``: whether a module forward starting now is a call of the profiled forward.
      False while a checkpointed block runs its forward again inside the backward: the module goes
      on the stack, but its calls, shapes and module formula are not counted again.
    - ``module_changed(innermost)``: after each counted module entry and exit, with the module
      running from then on (its index; 0, the model, when none is).
    - ``owner(innermost, args, kwargs)``: the index of the module an op is charged to; ``innermost``
      is the innermost module running (None when none is).
    - ``op_call(func, args, kwargs, out)``: the call as the op's formula sees it.
    - ``accounted(args, kwargs, out)``: after each op the tracer accounted, charged or not.

    These defaults are what a tracer without an attribution does (it does it inline, faster).
    """

    counting_calls = True

    def module_changed(self, innermost: int) -> None:
        return None

    def owner(self, innermost: int | None, args: tuple, kwargs: dict) -> int:
        return 0 if innermost is None else innermost

    def op_call(self, func: Any, args: tuple, kwargs: dict, out: Any) -> formulas.OpCall:
        return formulas.OpCall(func, args, kwargs, out)

    def accounted(self, args: tuple, kwargs: dict, out: Any) -> None:
        return None


class Tracer(TorchDispatchMode):
    """Counts every op of a forward and charges it to the module that ran it.

    One context manager: entering it wraps every module's ``forward`` (an instance attribute
    that ``Module.__call__`` finds first) and starts the dispatch mode; leaving it (also when
    the forward raises) restores every ``forward`` and stops listening for freed tensors. A
    wrapper costs about 1 us a module call where a forward pre-hook and hook pair costs about
    7 us (any hook sends ``Module.__call__`` down its slow path). It runs after the module's
    own pre-hooks and before its forward hooks, so it sees the arguments and output they see.
    TorchScript modules, whose ``forward`` cannot be replaced, are followed with process-wide
    hooks that answer for them only.
    """

    #: Higher-order ops (``torch.cond``, ``flex_attention``, ...) come to ``__torch_dispatch__`` whole.
    supports_higher_order_operators = True

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # TorchDispatchMode wraps a subclass's __torch_dispatch__ in torch._disable_dynamo
        # unless this says False: that wrapper imports torch._dynamo on its first call (over a
        # second) and swaps the frame evaluator around every op. The same exclusion is set
        # once on the method's code instead, below the class, where this torch can.
        return not _CODE_MARKS

    def __init__(
        self,
        model: torch.nn.Module,
        external: list[torch.Tensor],
        formula_set: formulas.FormulaSet,
        modules: list[tuple[str, torch.nn.Module]] | None = None,
        clock: OpClock | None = None,
        *,
        memory: LiveMemory | None = None,
        attribution: Attribution | None = None,
    ) -> None:
        """``external``: the weights and inputs (never activations), unless ``memory`` is given
        (a training step's, which splits the bytes by part); ``attribution``: where work is
        charged beyond the innermost module running (see :class:`Attribution`)."""
        super().__init__()
        self.formula_set = formula_set
        self.clock = clock  # with a target: each op's estimated time
        self.modules = list(model.named_modules()) if modules is None else modules
        self.tallies = [LayerTally() for _ in self.modules]
        self.uncounted: Counter[str] = Counter()
        self.memory = LiveMemory(external) if memory is None else memory
        self.attribution = attribution
        #: With a serving plan: the storage of a weight whose planned precision moves another share of
        #: its bytes (int4 of float16: 0.27) -> that share; a read of it counts at the plan's bytes.
        self.read_shares: dict[int, float] | None = None
        self._module_formulas = [formula_set.for_module(module) for _, module in self.modules]
        self._plans: dict[int, OpPlan] = formula_set.plans  # by id(func): see OpPlan.func
        self._stack: list[int] = []
        self._paths: dict[str, int] | None = None  # module path -> index, made when first asked
        #: Set on the direct path: undoes what the forward writes to the model's own tensors.
        self.own_writes: Any = None
        self._suppressed = 0  # > 0 inside a module counted by a user's module formula
        self._forwards: list[tuple[torch.nn.Module, Any]] = []  # each module's own forward attribute, if any
        self._handles: list[Any] = []

    def __enter__(self) -> Tracer:
        try:
            script_ids = scripted(self.modules)
            for index, (_, module) in enumerate(self.modules):
                if id(module) not in script_ids:
                    own = vars(module)
                    self._forwards.append((module, own.get("forward", _NO_FORWARD)))
                    own["forward"] = self._wrapped_forward(index, module.forward)
                if isinstance(module, _HOOK_SENSITIVE):
                    self._handles.append(module.register_forward_pre_hook(_no_op_hook))
            if script_ids:
                index_of = {id(module): index for index, (_, module) in enumerate(self.modules)}
                self._handles += script_module_hooks(
                    script_ids,
                    lambda module, args, kwargs: self._enter(index_of[id(module)], args, kwargs),
                    lambda module, args, output: self._leave(index_of[id(module)], args, output),
                )
            self._handles.append(EagerFlexAttention())
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
        for module, forward in reversed(self._forwards):
            if forward is _NO_FORWARD:
                del vars(module)["forward"]
            else:
                vars(module)["forward"] = forward
        self._forwards.clear()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.memory.close()

    def _wrapped_forward(self, index: int, forward: Any) -> Any:
        """``forward`` between ``_enter`` and ``_leave`` of the module at ``index``."""
        enter, leave = self._enter, self._leave

        def traced_forward(*args: Any, **kwargs: Any) -> Any:
            enter(index, args, kwargs)
            try:
                output = forward(*args, **kwargs)
            except BaseException:
                with contextlib.suppress(Exception):  # the forward's own error is the one to report
                    leave(index, args, None)
                raise
            leave(index, args, output)
            return output

        traced_forward.__wrapped__ = forward  # type: ignore[attr-defined]  # inspect.signature sees the model's own
        return traced_forward

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

    def _enter(self, index: int, args: tuple, kwargs: dict) -> None:
        attribution = self.attribution
        self._stack.append(index)
        if attribution is not None and not attribution.counting_calls:
            return
        tally = self.tallies[index]
        tally.calls += 1
        if tally.calls == 1:
            tally.input_shapes = shapes_of((args, kwargs) if kwargs else args)
        if self._module_formulas[index] is not None:
            self._suppressed += 1
        if attribution is not None:
            attribution.module_changed(index)

    def _leave(self, index: int, args: tuple, output: Any) -> None:
        while self._stack and self._stack.pop() != index:
            pass  # a child left without its exit (not expected with wrappers); unwind to this module
        attribution = self.attribution
        if attribution is not None and not attribution.counting_calls:
            return
        tally = self.tallies[index]
        if tally.calls == 1 and not tally.output_shapes:
            tally.output_shapes = shapes_of(output)
        formula = self._module_formulas[index]
        if formula is not None:
            self._suppressed -= 1
            if self._suppressed == 0:  # whatever the forward returned, None included
                module = self.modules[index][1]
                name = f"module:{type(module).__name__}"
                cost = formulas.apply(formula, name, module, args, output)
                tally.charge(name, cost.macs, cost.total_flops)
                if cost.upper_bound is not None:
                    tally.upper_bounds.add(cost.upper_bound)
                if self.clock is not None:  # its own figures have no bytes: a compute time
                    inputs = argument_tensors(args, {})
                    dtype = inputs[0].dtype if inputs else torch.float32
                    self.clock.charge(tally, cost.total_flops, cost.macs, 0, dtype, None)
        if attribution is not None:
            attribution.module_changed(self._stack[-1] if self._stack else 0)

    # --- operator counting ---------------------------------------------------------------

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        plan = self._plans.get(id(func))
        if plan is None:
            if isinstance(func, torch._ops.HigherOrderOperator):  # no public alias of the class
                return run_higher_order(self, func, args, kwargs, self._traced)
            plan = self._plans[id(func)] = OpPlan(func, self.formula_set)
        if plan.passed:
            return plan.call(*args, **kwargs)
        if types and _JAGGED in types:  # run its own implementation with this mode on: its dense ops are counted
            return self._traced(_JAGGED.__torch_dispatch__, func, types, args, kwargs)
        if plan.writes is not None and self.own_writes is not None:
            self.own_writes.before(plan.writes, args, kwargs)
        if plan.decompose:
            decomposed = self._decompose(func, args, kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = run_on_meta(func, args, kwargs) if plan.meta_kernel else plan.call(*args, **kwargs)
        self._account(func, plan, args, kwargs, out)
        return out

    def _decompose(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """Run a CompositeImplicit op's decomposition with this mode active again, so that
        its parts are counted. Nested tensors have kernels of their own for such ops
        (``linear``), which the dense decomposition cannot run: those run whole."""
        tensors = argument_tensors(args, kwargs)
        if any(tensor.is_nested for tensor in tensors):
            return NotImplemented
        # Under torch.inference_mode an op with a kernel in front of it arrives here whole: run that kernel.
        return self._traced(kernel_in_effect(func, tensors) or func.decompose, *args, **kwargs)

    def _traced(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` with this dispatch mode active again (only the
        dispatch mode: the module hooks stay as they are)."""
        TorchDispatchMode.__enter__(self)
        try:
            return function(*args, **kwargs)
        finally:
            TorchDispatchMode.__exit__(self, None, None, None)

    def _account(self, func: Any, plan: OpPlan, args: tuple, kwargs: dict, out: Any) -> None:
        # One pass over the outputs: the live-memory tally and the bytes written.
        saw = self.memory.saw
        if isinstance(out, torch.Tensor):  # most ops: one output, always an activation
            written = out.numel() * out.element_size()
            saw(out)
        else:
            written = 0
            for position, tensor in enumerate(argument_tensors((out,), {})):
                if plan.memory_outputs is None or position < plan.memory_outputs:
                    written += tensor.numel() * tensor.element_size()
                    saw(tensor)
        attribution = self.attribution
        if self._suppressed:
            if attribution is not None:
                attribution.accounted(args, kwargs, out)
            return
        stack = self._stack
        if attribution is None:
            tally = self.tallies[stack[-1] if stack else 0]
        else:
            tally = self.tallies[attribution.owner(stack[-1] if stack else None, args, kwargs)]
        read = 0
        first_read = None  # the first tensor read: its dtype sets the estimated time's peak
        if not plan.count_bytes:
            written = 0
        elif plan.traffic is None:
            read, first_read = _bytes_read(args, kwargs, plan.tensor_positions)
        else:
            read, written = plan.traffic.bytes_moved(args, kwargs, written, argument_tensors)
        if self.read_shares is not None and read:
            read -= self._unplanned_bytes(args, kwargs, plan)
        tally.read_bytes += read
        tally.write_bytes += written
        macs = flops = 0
        per_element = plan.per_element
        if per_element is not None and (args or per_element.of_output):  # the formula's figure, without calling it
            flops = per_element.flops(args, out)
        elif plan.formula is not None:
            call = (
                formulas.OpCall(func, args, kwargs, out)
                if attribution is None
                else attribution.op_call(func, args, kwargs, out)
            )
            cost = formulas.apply(plan.formula, plan.name, call)
            macs, flops = cost.macs, cost.total_flops
            if cost.upper_bound is not None:
                tally.upper_bounds.add(cost.upper_bound)
        elif not plan.free:  # listed with its calls all the same: ``ops`` names every op that ran
            self.uncounted[plan.name] += 1
        tally.charge(plan.name, macs, flops)
        clock = self.clock
        if clock is not None and plan.counted:
            if first_read is not None:
                dtype = first_read.dtype
            else:
                dtype = out.dtype if isinstance(out, torch.Tensor) else torch.float32
            clock.charge(tally, flops, macs, read + written, dtype, plan.family)
        if attribution is not None:
            attribution.accounted(args, kwargs, out)

    def _unplanned_bytes(self, args: tuple, kwargs: dict, plan: OpPlan) -> int:
        """Bytes of the weights an op reads whole that a server holding them at their planned precision
        does not move (see ``read_shares``); a gather's picked rows stay as they are."""
        shares = self.read_shares or {}
        positions = plan.tensor_positions if plan.traffic is None else plan.traffic.read_positions
        unplanned = 0
        for tensor in argument_tensors(args, kwargs, positions):
            share = shares.get(storage_key(tensor) or 0)
            if share is not None:
                nbytes = tensor.numel() * tensor.element_size()
                unplanned += nbytes - round(nbytes * share)
        return unplanned


def _bytes_read(args: tuple, kwargs: dict, positions: tuple[int, ...]) -> tuple[int, torch.Tensor | None]:
    """Bytes of the tensors an op reads under the plain rule (those of :func:`argument_tensors`,
    summed as they are found, with no list made: this runs for nearly every op), and the first."""
    read = 0
    first = None
    count = len(args)
    values: Any = [args[index] for index in positions if index < count]
    if kwargs:
        values += kwargs.values()
    for value in values:
        if isinstance(value, torch.Tensor):
            read += value.numel() * value.element_size()
            if first is None:
                first = value
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, torch.Tensor):
                    read += item.numel() * item.element_size()
                    if first is None:
                        first = item
    return read, first


def _skip_dynamo(code: Any) -> None:
    """Dynamo (which ``torch.cond`` and other higher-order ops run eagerly) neither traces nor
    compiles this code, nor anything it calls: what ``torch._disable_dynamo`` does per call,
    marked once on the code object through torch's C extension, which is loaded with torch
    (torch._dynamo's own ``skip_code`` marks the frame alone)."""
    eval_frame = torch._C._dynamo.eval_frame
    skip = eval_frame._FrameAction.SKIP
    eval_frame.set_code_exec_strategy(code, eval_frame._FrameExecStrategy(skip, skip))


if _CODE_MARKS:
    _skip_dynamo(Tracer.__torch_dispatch__.__code__)
