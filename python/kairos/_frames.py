"""Rows in and out: any Arrow-capable object in, pandas, Polars or pyarrow out.

Event times are UTC instants. A naive timestamp (no time zone) is taken as UTC, with one
warning per call naming the columns. pyarrow, pandas and Polars are imported here, when rows
first cross, never at ``import kairos``.
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pyarrow as pa

ReturnType = Literal["pandas", "polars", "arrow"]
RETURN_TYPES: tuple[ReturnType, ...] = ("pandas", "polars", "arrow")


def to_arrow(data: Any, *, what: str = "rows") -> pa.Table:
    """``data`` as a pyarrow Table: a pandas or Polars DataFrame, a pyarrow Table or
    RecordBatch, a DuckDB result, or anything else with ``__arrow_c_stream__``; a dict of
    columns or a list of row dicts too. Naive timestamps become UTC, with a warning."""
    import pyarrow as pa

    table: pa.Table
    if isinstance(data, pa.Table):
        table = data
    elif isinstance(data, pa.RecordBatch):
        table = pa.Table.from_batches([data])
    elif _is_pandas(data):
        # The index is not a column of the group: a default RangeIndex would arrive as
        # `__index_level_0__` and be refused as an unknown column.
        table = pa.Table.from_pandas(data, preserve_index=False)
    elif hasattr(data, "__arrow_c_stream__"):
        table = pa.table(data)
    elif isinstance(data, dict):
        table = pa.table(data)
    elif isinstance(data, list):
        table = pa.Table.from_pylist(data)
    else:
        from kairos.errors import BadInput

        raise BadInput(
            f"{what} must be a pandas or Polars DataFrame, a pyarrow Table, an object with "
            f"__arrow_c_stream__, a dict of columns or a list of row dicts, not "
            f"{type(data).__name__}"
        )
    return _naive_times_as_utc(_dictionaries_decoded(table), what)


def _dictionaries_decoded(table: pa.Table) -> pa.Table:
    """Categorical columns (pandas' category, Polars' Categorical) as their plain values."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            plain = field.type.value_type
            if pa.types.is_string_view(plain):
                # Polars' categoricals: pyarrow can neither cast nor take string views, so
                # their dictionary becomes plain strings first.
                plain = pa.large_string()
            chunks = [
                pa.DictionaryArray.from_arrays(
                    chunk.indices, chunk.dictionary.cast(plain)
                ).dictionary_decode()
                for chunk in table.column(i).chunks
            ]
            decoded = pa.chunked_array(chunks, type=plain)
            table = table.set_column(i, field.with_type(plain), decoded)
    return table


def _is_pandas(data: Any) -> bool:
    module = type(data).__module__
    return module.startswith("pandas") and hasattr(data, "to_numpy")


def _naive_times_as_utc(table: pa.Table, what: str) -> pa.Table:
    import pyarrow as pa

    naive = [
        i
        for i, field in enumerate(table.schema)
        if pa.types.is_timestamp(field.type) and field.type.tz is None
    ]
    if not naive:
        return table
    names = ", ".join(repr(table.schema.field(i).name) for i in naive)
    warnings.warn(
        f"{what}: the timestamps of {names} have no time zone; they are taken as UTC",
        UserWarning,
        stacklevel=4,
    )
    for i in naive:
        field = table.schema.field(i)
        utc = pa.timestamp(field.type.unit, tz="UTC")
        table = table.set_column(i, field.with_type(utc), table.column(i).cast(utc))
    return table


def from_arrow(table: Any, return_type: ReturnType) -> Any:
    """``table`` (a pyarrow Table, or anything with ``__arrow_c_stream__``) as ``return_type``
    asks."""
    import pyarrow as pa

    if return_type not in RETURN_TYPES:
        from kairos.errors import BadInput

        raise BadInput(f"return_type must be one of {', '.join(RETURN_TYPES)}, not {return_type!r}")
    arrow = table if isinstance(table, pa.Table) else pa.table(table)
    if return_type == "arrow":
        return arrow
    if return_type == "polars":
        import polars as pl

        return pl.from_arrow(arrow)
    return arrow.to_pandas()


def micros(at: dt.datetime | dt.date | str | int | None, name: str) -> int | None:
    """An instant as microseconds since the epoch: a datetime (naive is UTC, with a warning),
    a date (its midnight UTC), an ISO 8601 string, or an int already in microseconds."""
    if at is None:
        return None
    if isinstance(at, bool):
        from kairos.errors import BadInput

        raise BadInput(f"{name} must be a time, not a bool")
    if isinstance(at, int):
        return at
    if isinstance(at, str):
        try:
            at = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError as e:
            from kairos.errors import BadInput

            raise BadInput(f"{name}: {at!r} is not an ISO 8601 time ({e})") from None
    if not isinstance(at, dt.datetime):
        at = dt.datetime(at.year, at.month, at.day, tzinfo=dt.timezone.utc)
    if at.tzinfo is None:
        warnings.warn(f"{name} has no time zone; it is taken as UTC", UserWarning, stacklevel=4)
        at = at.replace(tzinfo=dt.timezone.utc)
    delta = at - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def rfc3339(at: dt.datetime | dt.date | str | int, name: str) -> str:
    """An instant as RFC 3339 text in UTC, as definitions spell times."""
    at_micros = micros(at, name)
    assert at_micros is not None
    instant = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=at_micros)
    return instant.isoformat().replace("+00:00", "Z")


def arrow_type(kairos_type: str) -> pa.DataType:
    """The Arrow type a column of a Kairos type is stored as."""
    import pyarrow as pa

    simple = {
        "bool": pa.bool_(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "string": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
    }
    if kairos_type in simple:
        return simple[kairos_type]
    if kairos_type.startswith("embedding(") and kairos_type.endswith(")"):
        return pa.list_(pa.float32(), int(kairos_type[len("embedding(") : -1]))
    raise ValueError(f"unknown Kairos type {kairos_type!r}")


def kairos_type(arrow: pa.DataType) -> str:
    """The Kairos type a column of Arrow type ``arrow`` is declared as, when inferred from a
    DataFrame."""
    import pyarrow as pa

    t = pa.types
    if t.is_boolean(arrow):
        return "bool"
    if t.is_int8(arrow) or t.is_int16(arrow) or t.is_int32(arrow) or t.is_uint8(arrow):
        return "int32"
    if t.is_uint16(arrow):
        return "int32"
    if t.is_integer(arrow):
        return "int64"
    if t.is_float16(arrow) or t.is_float32(arrow):
        return "float32"
    if t.is_floating(arrow):
        return "float64"
    if t.is_string(arrow) or t.is_large_string(arrow) or t.is_string_view(arrow):
        return "string"
    if t.is_dictionary(arrow):
        return kairos_type(arrow.value_type)
    if t.is_timestamp(arrow) or t.is_date64(arrow):
        return "timestamp"
    if t.is_date32(arrow):
        return "date"
    if t.is_fixed_size_list(arrow) and t.is_floating(arrow.value_type):
        return f"embedding({arrow.list_size})"
    raise ValueError(f"no Kairos type holds Arrow {arrow}")
