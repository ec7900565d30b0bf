"""The forms a model comes in besides a plain ``nn.Module``, and what profiling does with each.

- ``torch.compile`` wraps the model in an ``OptimizedModule``: the original module is profiled,
  so layer paths carry no ``_orig_mod.`` prefix and figures are the eager model's.
- ``torch.export`` gives an ``ExportedProgram``: its ``module()`` is profiled. Its graph calls
  ops directly on the flattened weights, so no module hook fires; it is run node by node and
  each node's ops are charged to the module its ``nn_module_stack`` names, as in the eager
  model. It has no train or eval mode to set (its mode is fixed when it is exported).
- TorchScript modules refuse per-module hooks and ``torch.func.functional_call``: they are
  followed with process-wide module hooks that answer for them only, and called on converted
  copies by swapping their tensors in and back out.
- Lazy modules (``nn.LazyLinear``) have no shapes before their first forward: a clear error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from typing_extensions import TypeGuard  # typing's own from Python 3.10

# Wrappers that split a batch over devices and call their ``module`` on each part: what they
# run is their module (the stateless API, which meta needs, refuses DataParallel itself).
_DATA_PARALLEL = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)


def unwrap(model: Any) -> Any:
    """The module to profile: the original of a compiled one, the module of an exported program,
    the ``module`` of a data-parallel wrapper."""
    return _unwrapped(model)[0]


def unwrap_with_label(model: Any) -> tuple[Any, str]:
    """The module to profile, and its name as the profile gives it: its type, and the
    data-parallel wrapper it was taken out of, if any (``Net (unwrapped from DataParallel)``)."""
    module, wrappers = _unwrapped(model)
    name = type(module).__name__
    return module, f"{name} (unwrapped from {' in '.join(wrappers)})" if wrappers else name


def _unwrapped(model: Any) -> tuple[Any, list[str]]:
    """The module to profile, and the names of the data-parallel wrappers taken off it."""
    wrappers: list[str] = []
    while True:
        if isinstance(model, torch.export.ExportedProgram):
            return model.module(), wrappers
        original = getattr(model, "_orig_mod", None)
        if isinstance(original, torch.nn.Module) and type(model).__name__ == "OptimizedModule":
            model = original
        elif isinstance(model, _DATA_PARALLEL):
            wrappers.append(type(model).__name__)
            model = model.module
        else:
            return model, wrappers


def lazy_parameter_error(path: str, name: str, module: torch.nn.Module) -> ValueError:
    """A lazy module's parameters have no shape until its first forward: the error that says so,
    naming it (``path`` is the module's, ``name`` the parameter's)."""
    where = f"{path}.{name}" if path else name
    return ValueError(
        f"{where} ({type(module).__name__}) is an uninitialised lazy parameter: its shape is known only "
        "after the model's first forward. Run one forward with an example input before profiling "
        "(the lazy modules then become ordinary ones)."
    )


def set_mode(model: torch.nn.Module, train: bool) -> None:
    """``model.train(train)``; an exported module, whose mode is fixed in its graph, is left as it is."""
    with contextlib.suppress(NotImplementedError):  # torch.export's: "Calling train() is not supported yet"
        model.train(train)


def scripted(modules: list[tuple[str, torch.nn.Module]]) -> set[int]:
    """Ids of the TorchScript modules among ``modules``."""
    return {id(module) for _, module in modules if isinstance(module, torch.jit.ScriptModule)}


def script_module_hooks(
    ids: set[int],
    enter: Callable[[torch.nn.Module, tuple, dict], None],
    leave: Callable[[torch.nn.Module, tuple, Any], None],
) -> list[Any]:
    """Process-wide forward hooks that call ``enter`` / ``leave`` for the modules in ``ids``
    only. TorchScript modules refuse their own hooks; their children run inside the
    TorchScript interpreter and are not seen, so a scripted module's ops are its own row."""

    def before(module: torch.nn.Module, args: tuple) -> None:
        if id(module) in ids:
            enter(module, args, {})

    def after(module: torch.nn.Module, args: tuple, output: Any) -> None:
        if id(module) in ids:
            leave(module, args, output)

    return [
        torch.nn.modules.module.register_module_forward_pre_hook(before),
        torch.nn.modules.module.register_module_forward_hook(after, always_call=True),
    ]


def is_exported(model: torch.nn.Module) -> TypeGuard[torch.fx.GraphModule]:
    """Whether ``model`` is an exported program's module: a graph whose nodes name their modules."""
    return isinstance(model, torch.fx.GraphModule) and any("nn_module_stack" in node.meta for node in model.graph.nodes)


class _ByModule(torch.fx.Interpreter):
    """Runs an exported graph node by node, each node's ops charged to its innermost module."""

    def __init__(self, module: torch.fx.GraphModule, tracer: Any) -> None:
        super().__init__(module)
        self.tracer = tracer

    def run_node(self, node: torch.fx.Node) -> Any:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            return super().run_node(node)
        with self.tracer.charged_to(next(reversed(stack.values()))[0]):
            return super().run_node(node)


def run_exported(model: torch.fx.GraphModule, args: tuple, kwargs: dict, tracer: Any) -> Any:
    """The exported module's forward, its ops charged to the layers they came from."""
    # The graph takes its inputs flattened as its own forward flattens them (fx's pytree, the
    # module's in_spec: neither has a public form).
    flat = torch.fx._pytree.tree_flatten_spec((list(args), kwargs), model._in_spec)
    return _ByModule(model, tracer).run(*flat)


def call_with_state(model: torch.nn.Module, state: dict[str, torch.Tensor], args: tuple, kwargs: dict) -> Any:
    """``model(*args, **kwargs)`` with its parameters and buffers replaced by ``state`` (every
    name, ties kept): ``torch.func.functional_call``, or for a model holding TorchScript
    modules, which that refuses, the same swap done by hand and undone afterwards."""
    if not scripted(list(model.named_modules())):
        return torch.func.functional_call(model, state, args, kwargs, tie_weights=True, strict=False)
    with swapped_state(model, state):
        return model(*args, **kwargs)


@contextlib.contextmanager
def swapped_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> Iterator[None]:
    """The model's parameters and buffers replaced by ``state`` (by every name they have, so
    ties are kept) until the block ends, also when it raises; TorchScript modules included."""
    originals = []
    try:
        for path, module in model.named_modules(remove_duplicate=False):
            for table in (module._parameters, module._buffers):
                for name in list(table.keys()):
                    full = f"{path}.{name}" if path else name
                    if full in state and table[name] is not None:
                        originals.append((table, name, table[name]))
                        table[name] = state[full]
        yield
    finally:
        for table, name, original in reversed(originals):
            table[name] = original
