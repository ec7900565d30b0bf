"""One serving step of a generative model: a prefill of ``context`` tokens at ``batch``, the
cache the model returns measured tensor by tensor, then one decode step with that cache.

The model is called as ``transformers`` models are (and as a model of one's own can be):
the token input is ``decoder_input_ids`` or ``input_ids`` (keyword) or else the first
positional input, shaped [batch, sequence, ...]. The prefill gives it the model's own
token input tiled to [batch, context] (so on cpu every id is one the model was already
given), every other input with ``batch`` rows, and ``use_cache=True`` where the forward
takes it. The cache is read from the output's ``cache`` or ``past_key_values`` (a key or
an attribute), or the second element of a tuple. The decode step gives the token input's
last column ([batch, 1]) and the cache (as ``cache`` or ``past_key_values``, whichever the
forward names), the other inputs as in the prefill; an encoder-decoder's (the prefill
output has ``encoder_last_hidden_state``) encoder inputs are replaced by
``encoder_outputs``, so the encoder is not run again. Attention masks, positions and labels
are left out of both calls: every sequence is ``context`` real tokens.

The cache's bytes are its tensors' elements (each distinct view once; 0-d tensors, which
are lengths and counters, not counted) at the cache's dtype, charged to the module whose
forward created each tensor's storage (the attention layer that concatenated it). The
decode step's activations are the peak of live tensors it creates other than those the
returned cache keeps (the cache's new token belongs to the cache).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..devices import KV_BYTES
from .moving import _NOT_DATA
from .tracer import Attribution, LiveMemory, Tracer, dtypes_of, shapes_of, storage_key, tensor_leaves
from .training import rebatch

#: Keyword inputs that describe a padded or positioned sequence: the serving step makes its own.
_LEFT_OUT = (
    "attention_mask",
    "decoder_attention_mask",
    "position_ids",
    "decoder_position_ids",
    "cache_position",
    "past_key_values",
    "cache",
    "cache_params",
    "use_cache",
    "labels",
)
_TOKEN_KEYS = ("decoder_input_ids", "input_ids")
_CACHE_KEYS = ("cache", "past_key_values", "cache_params")


class ServeError(ValueError):
    """The model does not follow the serving step's calling convention; the message says how."""


@dataclass(frozen=True)
class TokenSlot:
    """Where the token input is: a keyword's name, or a positional index."""

    key: str | None
    index: int | None

    def get(self, args: tuple, kwargs: dict) -> torch.Tensor:
        return kwargs[self.key] if self.key is not None else args[self._position()]

    def put(self, args: tuple, kwargs: dict, tokens: torch.Tensor) -> tuple[tuple, dict]:
        if self.key is not None:
            return args, {**kwargs, self.key: tokens}
        index = self._position()
        return (*args[:index], tokens, *args[index + 1 :]), kwargs

    def _position(self) -> int:
        if self.index is None:
            raise ValueError("a token slot names a keyword or a position")
        return self.index


def token_slot(args: tuple, kwargs: dict) -> TokenSlot:
    for key in _TOKEN_KEYS:
        if isinstance(kwargs.get(key), torch.Tensor):
            return TokenSlot(key, None)
    for index, value in enumerate(args):
        if isinstance(value, torch.Tensor):
            return TokenSlot(None, index)
    raise ServeError(
        "the serving step needs a token input: give the model's inputs as input_ids (or decoder_input_ids) "
        "or as a first positional tensor shaped [batch, sequence]"
    )


def tiled(tokens: torch.Tensor, batch: int, context: int) -> torch.Tensor:
    """``tokens`` [b, t, ...] repeated along its first two dimensions and cut to [batch, context, ...]."""
    if tokens.dim() < 2:
        raise ServeError(
            f"the token input must be shaped [batch, sequence, ...] for a serving step, got shape {list(tokens.shape)}"
        )
    rows, length = tokens.shape[:2]
    repeats = (-(-batch // rows), -(-context // length), *([1] * (tokens.dim() - 2)))
    return tokens.repeat(*repeats)[:batch, :context].contiguous()


def cache_keyword(model: torch.nn.Module) -> tuple[str, bool]:
    """The forward's name for the cache argument, and whether it takes ``use_cache``."""
    parameters = inspect.signature(model.forward).parameters
    takes_any = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values())
    for name in _CACHE_KEYS:
        if name in parameters:
            return name, "use_cache" in parameters or takes_any
    if takes_any:
        return "past_key_values", True
    raise ServeError(
        f"{type(model).__name__}.forward takes no cache argument: a serving step calls it with the cache "
        "its prefill returned as cache=... or past_key_values=... (transformers' convention)"
    )


def returned_cache(output: Any) -> Any:
    """The cache a forward returned: its ``cache`` or ``past_key_values`` (key or attribute),
    or the second element of a tuple."""
    for name in _CACHE_KEYS:
        if isinstance(output, dict) and output.get(name) is not None:
            return output[name]
        if not isinstance(output, dict) and getattr(output, name, None) is not None:
            return getattr(output, name)
    if isinstance(output, (tuple, list)) and len(output) >= 2 and tensor_leaves_deep(output[1]):
        return output[1]
    raise ServeError(
        f"the prefill returned no cache (a {type(output).__name__} without 'cache' or 'past_key_values'): "
        "a serving step needs the model to return its key-value cache or state, e.g. (logits, cache)"
    )


def _encoder_output(output: Any) -> torch.Tensor | None:
    if isinstance(output, dict):
        value = output.get("encoder_last_hidden_state")
    else:
        value = getattr(output, "encoder_last_hidden_state", None)
    return value if isinstance(value, torch.Tensor) else None


def tensor_leaves_deep(value: Any) -> list[torch.Tensor]:
    """Every tensor reachable from ``value``: in containers, dataclasses and plain objects (the
    layers of a ``transformers`` cache), each object visited once; modules and classes are not entered."""
    found: list[torch.Tensor] = []
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, (tuple, list)):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif hasattr(item, "__dict__") and not isinstance(item, _NOT_DATA):
            stack.extend(reversed(list(vars(item).values())))
    return found


def cache_tensors(cache: Any) -> list[torch.Tensor]:
    """The cache's tensors, each distinct view once; 0-d tensors (lengths, counters) left out."""
    distinct: dict[tuple, torch.Tensor] = {}
    for tensor in tensor_leaves_deep(cache):
        if tensor.dim() == 0:
            continue
        key = (storage_key(tensor), tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()))
        distinct.setdefault(key, tensor)
    return list(distinct.values())


def tensor_bytes(tensor: torch.Tensor, kv_dtype: str | None) -> int:
    """Bytes of one cache tensor: its elements at ``kv_dtype`` when it is floating, else at its own dtype."""
    if kv_dtype is not None and tensor.is_floating_point():
        return tensor.numel() * KV_BYTES[kv_dtype]
    return tensor.numel() * tensor.element_size()


class _RunningModule(Attribution):
    """Which module is running: told by the tracer after every module entry and exit."""

    def __init__(self) -> None:
        self.index = 0

    def module_changed(self, innermost: int) -> None:
        self.index = innermost


class _CreatorMemory(LiveMemory):
    """Live memory that also notes, for each storage, the module running when it became live."""

    def __init__(self, external: list[torch.Tensor], running: _RunningModule) -> None:
        super().__init__(external)
        self.creator: dict[int, int] = {}
        self._running = running

    def storage_added(self, key: int, nbytes: int) -> None:
        self.creator[key] = self._running.index


class _EventMemory(LiveMemory):
    """Live memory with a log of every storage that became live (bytes > 0) or was freed
    (bytes < 0), so that the peak can be worked out again leaving some storages out."""

    def __init__(self, external: list[torch.Tensor]) -> None:
        super().__init__(external)
        self.events: list[tuple[int, int]] = []

    def storage_added(self, key: int, nbytes: int) -> None:
        self.events.append((key, nbytes))

    def storage_freed(self, key: int, nbytes: int) -> None:
        self.events.append((key, -nbytes))

    def peak_without(self, kept: list[torch.Tensor]) -> int:
        """The peak of live bytes had the storages of ``kept`` (alive at the end) never been counted."""
        last: dict[int, int] = {}
        for position, (key, nbytes) in enumerate(self.events):
            if nbytes > 0:
                last[key] = position
        skipped = {last[key] for key in map(storage_key, kept) if key in last}
        live: dict[int, int] = {}
        current = peak = 0
        for position, (key, nbytes) in enumerate(self.events):
            if nbytes > 0 and position not in skipped:
                live[key] = nbytes
                current += nbytes
                peak = max(peak, current)
            elif nbytes < 0 and key in live:
                current -= live.pop(key)
        return peak


@dataclass
class ServeRun:
    """What one serving step measured. Per-module lists follow the tracer's module order."""

    prefill: Tracer
    decode: Tracer
    kv_bytes: list[int]  # the cache after the prefill, charged to the module that created each storage
    decode_activation_bytes: int
    prefill_inputs: list[list[int]]
    decode_inputs: list[list[int]]
    prefill_input_dtypes: list[str]
    decode_input_dtypes: list[str]
    #: With ``follow``: (cache bytes, decode activation bytes) one token later, from a second decode step.
    following: tuple[int, int] | None = None


#: Runs ``model(*args, **kwargs)`` under a tracer with everything a traced forward needs around it.
TracedCall = Callable[[Tracer, tuple, dict], Any]
#: A fresh tracer of the model that follows live memory with the given one (and attribution).
NewTracer = Callable[[LiveMemory, "Attribution | None"], Tracer]


def serve_step(
    model: torch.nn.Module,
    args: tuple,
    kwargs: dict,
    weights: list[torch.Tensor],
    new_tracer: NewTracer,
    call: TracedCall,
    *,
    context: int,
    batch: int,
    kv_dtype: str | None,
    follow: bool = False,
    decode_reads: dict[int, float] | None = None,
) -> ServeRun:
    """Trace the prefill and one decode step of ``model`` (called through ``call``) from its
    example inputs ``args`` / ``kwargs``; ``weights`` are its tensors as the call sees them.
    ``decode_reads``: the decode tracer's ``read_shares``, the weights' planned precision.
    ``follow``: a second decode step too, which measures the memory at ``context + 1`` from the
    cache the first one returned (the same cache a prefill of ``context + 1`` tokens returns)."""
    cache_name, use_cache = cache_keyword(model)
    slot = token_slot(args, kwargs)
    kwargs = {key: value for key, value in kwargs.items() if key not in _LEFT_OUT}
    tokens = tiled(slot.get(args, kwargs), batch, context)
    args, kwargs = rebatch(args, batch), rebatch(kwargs, batch)
    prefill_args, prefill_kwargs = slot.put(args, kwargs, tokens)
    if use_cache:
        prefill_kwargs["use_cache"] = True
    running = _RunningModule()
    creators = _CreatorMemory([*weights, *tensor_leaves((prefill_args, prefill_kwargs))], running)
    prefill = new_tracer(creators, running)
    output = call(prefill, prefill_args, prefill_kwargs)
    cache = returned_cache(output)
    encoder = _encoder_output(output)
    del output
    held = cache_tensors(cache)
    kv_bytes = [0] * len(prefill.tallies)
    for tensor in held:
        key = storage_key(tensor)
        kv_bytes[creators.creator.get(key, 0) if key is not None else 0] += tensor_bytes(tensor, kv_dtype)

    if encoder is not None:  # an encoder-decoder: the encoder's inputs give way to its output
        args, kwargs = (), {"encoder_outputs": (encoder,)}
    decode_args, decode_kwargs = slot.put(args, kwargs, tokens[:, -1:].clone())
    if use_cache:
        decode_kwargs["use_cache"] = True

    def decode_step(cache: Any, held: list[torch.Tensor]) -> tuple[Tracer, int, Any, list[torch.Tensor]]:
        # The cache's tensors are held until the step ends: the cache drops them as it grows,
        # and a storage freed meanwhile could come back under the same key as a new one.
        memory = _EventMemory([*weights, *held, *tensor_leaves((decode_args, decode_kwargs))])
        tracer = new_tracer(memory, None)
        tracer.read_shares = decode_reads
        grown = returned_cache(call(tracer, decode_args, {**decode_kwargs, cache_name: cache}))
        kept = cache_tensors(grown)
        return tracer, memory.peak_without(kept), grown, kept

    decode, activations, cache, held = decode_step(cache, held)
    following = None
    if follow:
        kv_after = sum(tensor_bytes(tensor, kv_dtype) for tensor in held)
        following = (kv_after, decode_step(cache, held)[1])
    return ServeRun(
        prefill=prefill,
        decode=decode,
        kv_bytes=kv_bytes,
        decode_activation_bytes=activations,
        prefill_inputs=shapes_of((prefill_args, prefill_kwargs)),
        decode_inputs=shapes_of((decode_args, decode_kwargs)),
        prefill_input_dtypes=dtypes_of((prefill_args, prefill_kwargs)),
        decode_input_dtypes=dtypes_of((decode_args, decode_kwargs)),
        following=following,
    )


def longest_context(memory_at: Callable[[int], int], start: int, budget: int, floor: int = 0) -> int | None:
    """The largest context L >= 1 with ``memory_at(L) <= budget``: 0 when not even one token
    fits, None when memory stops growing below the budget (any context fits).

    ``memory_at`` is measured, never assumed, but it is a sum of per-layer terms that grow
    linearly with L (full attention), grow up to a window and then stay (sliding windows), or
    stay (SSM states): nondecreasing, and concave piecewise-linear. So a step along the slope
    measured at L (memory at L + 1 minus at L) never passes the answer, and each step lands
    past at least one bend: a few measurements instead of a bisection. Every answer is
    checked where it stands (fits at L, not at L + 1); a step that overshoots after all (a
    model whose memory is not concave) falls back to bisecting, which needs only that memory
    never falls as the context grows. ``floor`` is memory no context goes below (the weights).
    """
    if floor > budget:
        return 0
    if memory_at(start) <= budget:
        context = start
    elif memory_at(1) <= budget:
        context = 1
    else:
        return 0
    while True:
        after = memory_at(context + 1)
        if after > budget:
            return context
        slope = after - memory_at(context)
        if slope == 0:
            far = 2 * context + 1
            if memory_at(far) == after:  # flat from context to twice it: bounded state only
                return None
            if memory_at(far) > budget:
                return _bisect(memory_at, context + 1, far, budget)
            context = far
            continue
        ahead = context + max((budget - memory_at(context)) // slope, 1)
        if memory_at(ahead) > budget:
            return _bisect(memory_at, context + 1, ahead, budget)
        context = ahead


def _bisect(memory_at: Callable[[int], int], fits: int, too_much: int, budget: int) -> int:
    """The last context that fits between ``fits`` (it does) and ``too_much`` (it does not)."""
    while too_much - fits > 1:
        middle = (fits + too_much) // 2
        if memory_at(middle) <= budget:
            fits = middle
        else:
            too_much = middle
    return fits
