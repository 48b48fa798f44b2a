"""Feature groups: tables of features keyed by entity and stamped with event time, kept in an
online store (the latest row per key, for serving) and an offline store (every row, for
training)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from kairos import _frames, _wire
from kairos._frames import ReturnType

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow as pa

    from kairos._internal import Engine

Time = dt.datetime | dt.date | str | int
Wait = Literal["logged", "online", "stored"]


@dataclass(frozen=True)
class Feature:
    """A column of a feature group."""

    name: str
    type: str
    nullable: bool = True
    description: str | None = None


@dataclass(frozen=True)
class InsertResult:
    """What an insert wrote."""

    rows: int
    """Rows written (rows an expectation quarantined are not among them)."""
    online_visible: bool
    """Whether the online store already shows them (``wait="online"``)."""
    validation: dict[str, Any] | None
    """What the group's expectations made of the rows, when it declares any."""


class FeatureGroup:
    """One version of a feature group. Got from ``Client.create_feature_group``,
    ``get_feature_group`` or ``get_or_create_feature_group``."""

    def __init__(self, engine: Engine, definition: dict[str, Any]) -> None:
        self._engine = engine
        self._definition = definition

    @property
    def name(self) -> str:
        return str(self._definition["name"])

    @property
    def version(self) -> int:
        return int(self._definition["version"])

    @property
    def primary_key(self) -> list[str]:
        return list(self._definition["primary_key"])

    @property
    def event_time(self) -> str:
        return str(self._definition["event_time"])

    @property
    def online_enabled(self) -> bool:
        return bool(self._definition.get("online", True))

    @property
    def description(self) -> str:
        return str(self._definition.get("description", ""))

    @property
    def features(self) -> list[Feature]:
        return [
            Feature(c["name"], c["type"], c.get("nullable", True), c.get("description"))
            for c in self._definition["columns"]
        ]

    @property
    def definition(self) -> dict[str, Any]:
        """The group's definition as the REST API and the TOML files spell it."""
        return dict(self._definition)

    def __repr__(self) -> str:
        return f"FeatureGroup({self.name!r}, version={self.version})"

    def insert(self, data: Any, *, wait: Wait = "stored") -> InsertResult:
        """Inserts the rows of ``data`` (pandas, Polars, pyarrow, or anything with
        ``__arrow_c_stream__``) as one batch: validated whole, and refused whole (raising
        ``BadInput`` naming the column, row and expected type) with nothing written.

        ``wait`` says when to answer: ``"stored"`` (the default) once both stores hold the
        rows, so reads and training data see them; ``"online"`` once the online store shows
        them; ``"logged"`` once the log holds them durably (the fastest: they reach both stores
        within moments)."""
        table = _frames.to_arrow(data)
        ack = json.loads(self._engine.insert(self.name, self.version, table, wait))
        return InsertResult(
            rows=int(ack["rows"]),
            online_visible=bool(ack["online_visible"]),
            validation=ack.get("validation"),
        )

    def read(
        self,
        *,
        start: Time | None = None,
        end: Time | None = None,
        as_of: Time | None = None,
        return_type: ReturnType = "pandas",
    ) -> Any:
        """Rows of the offline store with event time in ``[start, end)``, as they were known
        at ``as_of`` (time travel) when given."""
        table = self._engine.read_offline(
            self.name,
            self.version,
            _frames.micros(start, "start"),
            _frames.micros(end, "end"),
            _frames.micros(as_of, "as_of"),
        )
        return _frames.from_arrow(table, return_type)

    def get_online(self, keys: Sequence[Any], *, return_type: ReturnType = "pandas") -> Any:
        """The latest row of each key, in the order asked: per key a dict of key columns, a
        tuple in key order, or a bare value for a one-column key. A key with no row (or one
        past its TTL) gets nulls beside its key."""
        entries = [list(k) if isinstance(k, tuple) else k for k in keys]
        answer = json.loads(
            self._engine.get_online(self.name, self.version, json.dumps(entries, default=str))
        )
        return _frames.from_arrow(self._online_table(entries, answer), return_type)

    def _online_table(self, entries: list[Any], answer: dict[str, Any]) -> pa.Table:
        import pyarrow as pa

        columns: list[str] = answer["columns"]
        key_at = {name: columns.index(name) for name in self.primary_key}
        rows: list[list[Any]] = []
        for entry, result in zip(entries, answer["results"], strict=True):
            values = result.get("values")
            if values is None:
                values = [None] * len(columns)
                for i, name in enumerate(self.primary_key):
                    key = entry[name] if isinstance(entry, dict) else entry
                    values[key_at[name]] = key[i] if isinstance(key, list) else key
            rows.append(values)
        types = {f.name: _frames.arrow_type(f.type) for f in self.features}
        arrays = []
        for i, name in enumerate(columns):
            cells = [row[i] for row in rows]
            target = types[name]
            if pa.types.is_timestamp(target) or pa.types.is_date(target):
                arrays.append(pa.array(cells, pa.string()).cast(target))
            else:
                arrays.append(pa.array(cells, target))
        return pa.Table.from_arrays(arrays, names=columns)

    def status(self) -> dict[str, Any]:
        """Where the group's log and materialisers stand."""
        return _wire.report(self._engine.describe_group(self.name, self.version))

    def check(self) -> dict[str, Any]:
        """Whether the online and offline stores agree with each other and with the log."""
        return _wire.report(self._engine.check_group(self.name, self.version))

    def compact(self) -> dict[str, Any]:
        """Compacts the offline table's small files into large ones."""
        return _wire.report(self._engine.compact_group(self.name, self.version))

    def delete(self) -> None:
        """Deletes this version of the group and all its data."""
        self._engine.delete_group(self.name, self.version)


def definition(
    name: str,
    *,
    primary_key: str | Sequence[str],
    event_time: str,
    features: dict[str, str] | Sequence[Feature] | None,
    df: Any,
    online_enabled: bool,
    description: str,
    ttl: dt.timedelta | int | None,
    expectations: Sequence[dict[str, Any]] | None,
) -> dict[str, Any]:
    """A feature group's definition as the engine reads it, its columns declared by
    ``features`` or inferred from ``df``'s schema."""
    from kairos.errors import BadInput

    keys = [primary_key] if isinstance(primary_key, str) else list(primary_key)
    if features is None and df is None:
        raise BadInput(f"feature group '{name}': give its features, or a df to infer them from")
    columns: list[dict[str, Any]]
    if features is None:
        schema = _frames.to_arrow(df, what="df").schema
        try:
            columns = [{"name": f.name, "type": _frames.kairos_type(f.type)} for f in schema]
        except ValueError as e:
            raise BadInput(f"feature group '{name}': {e}") from None
    elif isinstance(features, dict):
        columns = [{"name": n, "type": t} for n, t in features.items()]
    else:
        columns = [
            {"name": f.name, "type": f.type, "nullable": f.nullable}
            | ({"description": f.description} if f.description else {})
            for f in features
        ]
    spec: dict[str, Any] = {
        "name": name,
        "description": description,
        "columns": columns,
        "primary_key": keys,
        "event_time": event_time,
        "online": online_enabled,
    }
    if ttl is not None:
        seconds = ttl.total_seconds() if isinstance(ttl, dt.timedelta) else ttl
        spec["ttl_seconds"] = int(seconds)
    if expectations:
        spec["expectations"] = list(expectations)
    return spec
