"""Python user-defined functions for on-demand features.

    @kairos.udf(returns="float64")
    def haversine_km(lat, lon, home_lat, home_lon):
        lat, lon, home_lat, home_lon = map(np.radians, (lat, lon, home_lat, home_lon))
        a = np.sin((home_lat - lat) / 2) ** 2 + ...
        return 6371 * 2 * np.arcsin(np.sqrt(a))

    kairos.OnDemand("km_from_home", function=haversine_km, inputs=["lat", "lon", ...])

A view stores the function's source and its SHA-256 with its version, and that source is what
runs, on whole columns for training data and on one-row columns online: one code path, so no
skew. ``mode="vectorized"`` (the default) passes each input as a numpy array and expects an
array back; ``mode="row"`` calls the function once per row with plain Python values (a row with
a null input gets a null). The source must stand alone: the modules it uses by a global name
(``np``) and plain constants are written into it; any other global is refused.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["vectorized", "row"]
_CONSTANTS = (int, float, str, bool, bytes, type(None))


@dataclass(frozen=True)
class Udf:
    """A function made an on-demand feature's function by ``@kairos.udf``."""

    function: Callable[..., Any]
    name: str
    source: str
    returns: str
    mode: Mode

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)

    def spec(self) -> dict[str, Any]:
        """The ``python`` part of an on-demand feature's definition."""
        return {
            "source": self.source,
            "sha256": self.sha256,
            "mode": self.mode,
            "returns": self.returns,
        }


def udf(*, returns: str, mode: Mode = "vectorized") -> Callable[[Callable[..., Any]], Udf]:
    """Makes a function an on-demand feature's function, returning ``returns`` (a Kairos type:
    ``float64``, ``int64``, ``string``, ``bool``…)."""
    if mode not in ("vectorized", "row"):
        from kairos.errors import BadInput

        raise BadInput(f"udf mode is 'vectorized' or 'row', not {mode!r}")

    def wrap(function: Callable[..., Any]) -> Udf:
        return Udf(function, function.__name__, standalone_source(function), returns, mode)

    return wrap


def standalone_source(function: Callable[..., Any]) -> str:
    """The function's definition without its decorators, after the imports and constants it
    reads by a global name."""
    from kairos.errors import BadInput

    name = function.__name__
    try:
        text = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError) as e:
        raise BadInput(f"udf '{name}': its source cannot be read ({e})") from None
    tree = ast.parse(text)
    definition = tree.body[0]
    if not isinstance(definition, ast.FunctionDef):
        raise BadInput(f"udf '{name}' must be a function defined with def")
    body = "\n".join(text.splitlines()[definition.lineno - 1 :])
    preamble = []
    for global_name in sorted(_globals_read(definition)):
        if global_name not in function.__globals__:
            continue  # a builtin, or a name the function never reaches
        value = function.__globals__[global_name]
        if isinstance(value, types.ModuleType):
            preamble.append(f"import {value.__name__} as {global_name}")
        elif isinstance(value, _CONSTANTS):
            preamble.append(f"{global_name} = {value!r}")
        else:
            raise BadInput(
                f"udf '{name}' reads the global '{global_name}' "
                f"({type(value).__name__}); a stored function must stand alone: define it "
                "inside the function, or import it there"
            )
    return "\n".join([*preamble, "", "", body]) if preamble else body


def _globals_read(definition: ast.FunctionDef) -> set[str]:
    assigned = {a.arg for a in definition.args.args}
    loaded = set()
    for node in ast.walk(definition):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                loaded.add(node.id)
            else:
                assigned.add(node.id)
    return loaded - assigned
