"""Leaving the model and the process as they were: writes to the model's own tensors undone,
the random number generators put back, one profile of a model at a time.

On the direct path (the model's own device and dtype) the forward runs on the model's
own tensors, and some forwards write to them: a key-value cache or a step counter kept
as a buffer, ``nn.Embedding(max_norm=...)`` renormalising rows of its weight. The op's
schema says which arguments it writes (``Tensor(a!)``); before the first write to one
of the model's tensors, :class:`OwnWrites` keeps a copy, and puts it back afterwards.
A forward that replaces a parameter or buffer by assignment is undone too.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import torch

from .tracer import _storage_key


def _written_arguments(func: Any) -> tuple[tuple[int, str], ...]:
    """(position, name) of each argument the op writes, by its schema."""
    return tuple(
        (index, argument.name)
        for index, argument in enumerate(func._schema.arguments)
        if argument.alias_info is not None and argument.alias_info.is_write
    )


class OwnWrites:
    """Copies of the model's tensors taken before an op first writes them, put back on exit.

    ``before(func, args, kwargs)`` is called by the tracer before each op whose schema writes
    an argument (the tracer's plan for the op says which do).
    """

    def __init__(self, modules: list[tuple[str, torch.nn.Module]], tensors: list[torch.Tensor]) -> None:
        """``modules``: the model's ``named_modules()``; ``tensors``: its parameters and buffers."""
        self._tensors = tensors
        self._owned: dict[int, torch.Tensor] | None = None  # storage key -> tensor, made at the first write
        self._saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._writes: dict[Any, tuple[tuple[int, str], ...]] = {}
        # Only entries that exist can be replaced; a forward adding a new one is not undone.
        self._tables = [
            (table, dict(table)) for _, module in modules for table in (module._parameters, module._buffers) if table
        ]

    def before(self, func: Any, args: tuple, kwargs: dict) -> None:
        writes = self._writes.get(func)
        if writes is None:
            writes = self._writes[func] = _written_arguments(func)
        if self._owned is None:  # most forwards write none of their tensors: no keys taken then
            self._owned = {key: tensor for tensor in self._tensors if (key := _storage_key(tensor)) is not None}
        for index, name in writes:
            tensor = args[index] if index < len(args) else kwargs.get(name)
            key = _storage_key(tensor) if isinstance(tensor, torch.Tensor) else None
            if key in self._owned and key not in self._saved:
                owned = self._owned[key]
                self._saved[key] = (owned, owned.detach().clone())

    def __enter__(self) -> OwnWrites:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with torch.no_grad():
            for owned, copy in self._saved.values():
                owned.copy_(copy)
        for table, entries in self._tables:
            for name, tensor in entries.items():
                if table[name] is not tensor:
                    table[name] = tensor
        self._saved.clear()


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
PROCESS_SETTINGS = (
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
