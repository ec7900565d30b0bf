"""One view of an op overload's schema, read once per overload.

PyTorch has no public accessor for an overload's arguments (their names, positions, defaults,
types and which ones the op writes): ``func._schema`` is the only source. This module is the one
place that reads it; formulas (arguments by name), the tracer (which arguments may hold a tensor,
which the op writes), the traffic rules and the undoing of writes all ask :func:`schema_of`.
"""

from __future__ import annotations

import re
from typing import Any

# Schema types that never hold a tensor: an op's arguments of these types are not walked for
# the bytes it reads (a convolution's stride, padding and dilation lists, say).
_NO_TENSOR_TYPE = re.compile(
    r"((Optional|List)\[)*"
    r"(int|float|bool|str|complex|number|SymInt|SymFloat|SymBool|ScalarType|Layout|Device|MemoryFormat|Generator|"
    r"Dimname|QScheme|Stream)\]*"
)


class OpSchema:
    """What is read of one overload's schema.

    ``by_name``: each argument's (position, keyword-only, default), for formulas that read
    arguments by name. ``names``: the argument names in order. ``tensor_positions``: positions
    of the positional arguments that may hold a tensor (a type not known here is kept);
    keyword-only ones arrive as keyword arguments. ``written``: positions of the arguments the
    op writes (``Tensor(a!)``), ``written_keyword_only`` the names of those that are keyword-only
    (``out=``).
    """

    __slots__ = ("by_name", "names", "tensor_positions", "written", "written_keyword_only")

    def __init__(self, func: Any) -> None:
        arguments = list(func._schema.arguments)
        self.names: tuple[str, ...] = tuple(argument.name for argument in arguments)
        self.by_name: dict[str, tuple[int, bool, Any]] = {
            argument.name: (
                index,
                argument.kwarg_only,
                argument.default_value if argument.has_default_value() else None,
            )
            for index, argument in enumerate(arguments)
        }
        self.tensor_positions: tuple[int, ...] = tuple(
            index
            for index, argument in enumerate(arguments)
            if not argument.kwarg_only and not _NO_TENSOR_TYPE.fullmatch(str(argument.type))
        )
        self.written: tuple[int, ...] = tuple(
            index
            for index, argument in enumerate(arguments)
            if argument.alias_info is not None and argument.alias_info.is_write
        )
        self.written_keyword_only: frozenset[str] = frozenset(
            arguments[index].name for index in self.written if arguments[index].kwarg_only
        )


_schemas: dict[Any, OpSchema] = {}


def schema_of(func: Any) -> OpSchema:
    """The schema view of an op overload, made on its first use and kept."""
    found = _schemas.get(func)
    if found is None:
        found = _schemas[func] = OpSchema(func)
    return found
