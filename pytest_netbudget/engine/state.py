"""Leaving the model and the process as they were: every module's attributes put back, writes
to the model's own tensors undone, the random number generators put back, one profile of a
model at a time.

A forward may assign to its module: a position table made on first use (``if self.pos is
None: self.pos = torch.arange(...)``, on meta a meta tensor), a counter (``self.calls += 1``),
a cache filled once (torchvision's ``MultiScaleRoIAlign.scales``), a value kept for the next
call (Qwen2-VL's ``rope_deltas``), a parameter or buffer replaced. :class:`KeptAttributes`
takes each module's attributes (and the items of its plain lists, dicts and sets) before the
profile and puts them back after it: added ones removed, replaced ones put back.

On the direct path (the model's own device and dtype) the forward runs on the model's
own tensors, and some forwards write to them: a key-value cache or a step counter kept
as a buffer, ``nn.Embedding(max_norm=...)`` renormalising rows of its weight. The op's
schema says which arguments it writes (``Tensor(a!)``); before the first write to one
of the model's tensors, or a plain tensor one of its modules holds, :class:`OwnWrites`
keeps a copy, and puts it back afterwards.
"""

from __future__ import annotations

import contextlib
import operator
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..formulas.schema import OpSchema
from .tracer import storage_key


class OwnWrites:
    """Copies of the model's tensors taken before an op first writes them, put back on exit.

    ``before(schema, args, kwargs)`` is called by the tracer before each op whose schema writes
    an argument (``schema.written``), with the schema its plan for the op keeps.
    """

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        """``tensors``: the model's parameters and buffers, and the plain tensors its modules hold."""
        self._tensors = tensors
        self._owned: dict[int, torch.Tensor] | None = None  # storage key -> tensor, made at the first write
        self._saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def before(self, schema: OpSchema, args: tuple, kwargs: dict) -> None:
        if self._owned is None:  # most forwards write none of their tensors: no keys taken then
            self._owned = {key: tensor for tensor in self._tensors if (key := storage_key(tensor)) is not None}
        for index in schema.written:
            tensor = args[index] if index < len(args) else kwargs.get(schema.names[index])
            key = storage_key(tensor) if isinstance(tensor, torch.Tensor) else None
            if key in self._owned and key not in self._saved:
                owned = self._owned[key]
                self._saved[key] = (owned, owned.detach().clone())

    def __enter__(self) -> OwnWrites:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with torch.no_grad():
            for owned, copy in self._saved.values():
                owned.copy_(copy)
        self._saved.clear()


# Containers whose items are kept too, by exact type: a subclass may refuse to be cleared
# (transformers' ModelOutput) or do more when written.
_CONTAINERS = frozenset((list, dict, set, OrderedDict))
# What nn.Module itself keeps in every instance's __dict__: its mode, its tables of parameters,
# buffers and children (whose items are kept), and its hook tables (kept as objects: profiling
# registers no hook of its own on them but through handles it removes).
_BASE_ATTRIBUTES = frozenset(vars(torch.nn.Module()))
_TABLES = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set")


class KeptAttributes:
    """Every module's attributes as they were when this was made, put back on exit.

    Each module's ``__dict__`` is copied (a shallow copy), and so are the items of its tables
    of parameters, buffers and children and of the plain lists, dicts and sets among its own
    attributes. On exit an attribute the profile added is removed, one it replaced is put
    back, and a container whose items changed gets its old items back, in place. ``tensors``
    are the plain tensors the modules hold (directly or in such a container), for
    :class:`OwnWrites` to watch.

    Cost: about 2 us of CPU time a module, both sides together, on a model where nothing
    changed (21 us on the spec's CNN, 0.37 ms on ResNet-50, measured on a loaded 2-core
    machine). The checks are dict and list comparisons, which run in C and compare each item
    by identity first; an attribute replaced by an equal object of its own (an int, a new list
    of the same items) passes them as unchanged.
    """

    def __init__(self, modules: list[tuple[str, torch.nn.Module]]) -> None:
        self._saved: list[tuple[dict[str, Any], dict[str, Any], list[tuple[Any, Any]]]] = []
        self.tensors: list[torch.Tensor] = []
        for _, module in modules:
            attributes = vars(module)
            before = attributes.copy()
            held = []
            for name in _TABLES:
                table = before.get(name)
                if type(table) in _CONTAINERS:
                    held.append((table, table.copy() if table else None))
            own = _own_attributes(tuple(before))
            if own is not None:
                values = own(before)
                for position in _held_positions(tuple(map(type, values))):
                    value = values[position]
                    if type(value) in _CONTAINERS:
                        held.append((value, value.copy() if value else None))
                        items = value.values() if isinstance(value, dict) else value
                        self.tensors += [item for item in items if _is_tensor(type(item))]
                    else:
                        self.tensors.append(value)
            self._saved.append((attributes, before, held))

    def __enter__(self) -> KeptAttributes:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for attributes, before, held in self._saved:
            for container, items in held:
                if items is None:  # was empty
                    if container:
                        container.clear()
                elif not _equal(container, items):
                    container.clear()
                    if isinstance(container, list):
                        container += items
                    else:
                        container.update(items)
            if not _equal(attributes, before):
                for name in attributes.keys() - before.keys():
                    del attributes[name]
                for name, value in before.items():
                    if attributes.get(name, _ABSENT) is not value:
                        attributes[name] = value
        self._saved.clear()


_ABSENT = object()
# What is worked out once per kind of module, not per module: which names of a __dict__ are
# the module's own, which of their types hold what must be kept, which types are tensors.
_own_getters: dict[tuple[str, ...], Callable[[dict[str, Any]], tuple[Any, ...]] | None] = {}
_held_by_types: dict[tuple[type, ...], tuple[int, ...]] = {}
_tensor_types: dict[type, bool] = {}


def _own_attributes(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]] | None:
    """For the names of a module's ``__dict__``: what reads the values of its own attributes
    (those ``nn.Module`` does not set), as a tuple; None when it has none."""
    try:
        return _own_getters[names]
    except KeyError:
        pass
    own = [name for name in names if name not in _BASE_ATTRIBUTES]
    getter = None if not own else operator.itemgetter(*own) if len(own) > 1 else lambda d, name=own[0]: (d[name],)
    _own_getters[names] = getter
    return getter


def _held_positions(types: tuple[type, ...]) -> tuple[int, ...]:
    """Positions, among a module's own attributes of these types, of the plain containers and tensors."""
    try:
        return _held_by_types[types]
    except KeyError:
        pass
    positions = tuple(index for index, kind in enumerate(types) if kind in _CONTAINERS or _is_tensor(kind))
    _held_by_types[types] = positions
    return positions


def _is_tensor(kind: type) -> bool:
    """``issubclass(kind, torch.Tensor)``, remembered: torch's own check costs 0.2 us a call."""
    found = _tensor_types.get(kind)
    if found is None:
        found = _tensor_types[kind] = issubclass(kind, torch.Tensor)
    return found


def _equal(now: Any, then: Any) -> bool:
    """``now == then`` for two containers, item by item (identity first, in C); a replaced item
    whose ``==`` cannot answer (a tensor of several values, a meta tensor) is a difference."""
    try:
        return bool(now == then)
    except Exception:
        return False


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """The CPU generator's state, and every initialised CUDA device's, restored afterwards:
    random inputs (``input_shape``) and dropout in a training step draw from them."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _default_device() -> torch.device | None:
    """The device ``torch.set_default_device`` set (None: none). Read where that function keeps
    it (this thread's global device context): ``torch.get_default_device()`` walks the mode
    stack and takes 20 us, half a small model's profile overhead budget for one setting."""
    context = getattr(getattr(torch, "_GLOBAL_DEVICE_CONTEXT", None), "device_context", None)
    return None if context is None else context.device


def _deterministic() -> tuple[bool, bool]:
    return torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()


def _set_deterministic(flags: tuple[bool, bool]) -> None:
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])


def _cudnn() -> tuple[bool, bool]:
    return torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark


def _set_cudnn(flags: tuple[bool, bool]) -> None:
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags


#: Process-wide torch settings a factory or a forward may change: (what, read it, set it back).
PROCESS_SETTINGS: tuple[tuple[str, Callable[[], Any], Callable[[Any], Any]], ...] = (
    ("default device", _default_device, torch.set_default_device),
    ("default dtype", torch.get_default_dtype, torch.set_default_dtype),
    ("grad mode", torch.is_grad_enabled, torch.set_grad_enabled),
    ("deterministic algorithms", _deterministic, _set_deterministic),
    ("cuDNN flags", _cudnn, _set_cudnn),
    ("float32 matmul precision", torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
    ("anomaly detection", torch.is_anomaly_enabled, torch.set_anomaly_enabled),
    ("threads", torch.get_num_threads, torch.set_num_threads),
)


@contextlib.contextmanager
def preserved_settings() -> Iterator[None]:
    """Process-wide torch settings (default device and dtype, grad mode, deterministic
    algorithms, threads, ...) put back afterwards, also when the block raises: a factory or a
    forward that sets them must not change the next model's figures or make it fail."""
    saved = [(read(), read, write) for _, read, write in PROCESS_SETTINGS]
    try:
        yield
    finally:
        for value, read, write in saved:
            if read() != value:
                write(value)


_locks: weakref.WeakKeyDictionary[torch.nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_locks_lock = threading.Lock()


@contextlib.contextmanager
def model_lock(model: torch.nn.Module) -> Iterator[None]:
    """One profile of ``model`` at a time: profiling sets its modes, hooks every module and
    may swap its tensors, which two threads profiling one model would interleave."""
    with _locks_lock:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
    with lock:
        yield
