"""Runs a stored Python function over Arrow columns: what the engine calls, in the SDK's process
(embedded) or a server's Python worker. Not part of the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kairos._frames import arrow_type


def load(source: str, name: str, mode: str, returns: str, arity: int) -> Callable[[list[Any]], Any]:
    """The function ``name`` defined by ``source``, as a callable from ``arity`` Arrow arrays (any
    ``__arrow_c_array__`` object) to one pyarrow array of type ``returns``."""
    import pyarrow as pa

    namespace: dict[str, Any] = {"__name__": f"kairos.udf.{name}"}
    exec(compile(source, f"<kairos udf {name}>", "exec"), namespace)
    function = namespace[name]
    target = arrow_type(returns)

    def vectorized(columns: list[Any]) -> Any:
        arrays = [pa.array(column).to_numpy(zero_copy_only=False) for column in columns]
        # NaN out (from a null in) is null, as the built-in functions answer.
        return pa.array(function(*arrays), type=target, from_pandas=True)

    def row(columns: list[Any]) -> Any:
        rows = zip(*(pa.array(column).to_pylist() for column in columns), strict=True)
        out = [None if None in values else function(*values) for values in rows]
        return pa.array(out, type=target)

    if len(columns_of(function)) != arity:
        raise TypeError(
            f"{name} takes {len(columns_of(function))} argument(s); the view passes {arity}"
        )
    return vectorized if mode == "vectorized" else row


def columns_of(function: Callable[..., Any]) -> list[str]:
    import inspect

    return list(inspect.signature(function).parameters)
