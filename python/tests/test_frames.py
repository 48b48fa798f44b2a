"""Rows in and out with what real frames hold, on both backends: nulls, embeddings and time
zones from pandas, Polars and pyarrow, and the async client under a thousand concurrent calls."""

from __future__ import annotations

import asyncio
import datetime as dt

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import kairos


def items(fs: kairos.Client) -> kairos.FeatureGroup:
    return fs.create_feature_group(
        "items",
        primary_key="item",
        event_time="ts",
        features={
            "item": "int64",
            "ts": "timestamp",
            "price": "float64",
            "title": "string",
            "in_stock": "bool",
            "vector": "embedding(3)",
        },
    )


def test_nulls_embeddings_and_time_zones_round_trip(fs: kairos.Client) -> None:
    group = items(fs)
    paris = dt.timezone(dt.timedelta(hours=1))
    table = pa.table(
        {
            "item": pa.array([1, 2, 3], pa.int64()),
            # The same instant written in three zones' terms comes back as UTC.
            "ts": pa.array(
                [dt.datetime(2025, 1, 1, 13, tzinfo=paris)] * 3, pa.timestamp("ms", tz="+01:00")
            ),
            "price": pa.array([1.5, None, 3.0]),
            "title": pa.array(["a", None, "c"]),
            "in_stock": pa.array([True, None, False]),
            "vector": pa.array([[0.1, 0.2, 0.3], None, [1.0, 2.0, 3.0]], pa.list_(pa.float32(), 3)),
        }
    )
    group.insert(table)
    back = group.read(return_type="arrow").sort_by("item")
    assert back.column("ts").to_pylist()[0] == dt.datetime(2025, 1, 1, 12, tzinfo=dt.timezone.utc)
    assert back.column("price").to_pylist() == [1.5, None, 3.0]
    assert back.column("title").to_pylist() == ["a", None, "c"]
    assert back.column("in_stock").to_pylist() == [True, None, False]
    vectors = back.column("vector").to_pylist()
    assert vectors[1] is None and vectors[2] == pytest.approx([1.0, 2.0, 3.0])

    online = group.get_online([2, 3], return_type="polars")
    assert online["price"].to_list() == [None, 3.0]
    assert online["vector"].to_list()[1] == pytest.approx([1.0, 2.0, 3.0])

    frame = group.read()
    assert frame["ts"].dt.tz is not None and str(frame["ts"].dt.tz) == "UTC"
    assert frame.sort_values("item")["price"].isna().tolist() == [False, True, False]


def test_vectors_answer_python_values_and_frames_alike(fs: kairos.Client) -> None:
    group = fs.create_feature_group(
        "stock",
        primary_key="item",
        event_time="ts",
        features={
            "item": "int64",
            "ts": "timestamp",
            "count": "int32",
            "restocked": "timestamp",
            "since": "date",
            "vector": "embedding(2)",
        },
    )
    at = dt.datetime(2025, 3, 1, 8, 30, 0, 250, tzinfo=dt.timezone.utc)
    group.insert(
        pa.table(
            {
                "item": pa.array([1, 2], pa.int64()),
                "ts": pa.array([at, at], pa.timestamp("us", tz="UTC")),
                "count": pa.array([7, None], pa.int32()),
                "restocked": pa.array([at, None], pa.timestamp("us", tz="UTC")),
                "since": pa.array([dt.date(2024, 2, 29), None], pa.date32()),
                "vector": pa.array([[0.5, -1.0], None], pa.list_(pa.float32(), 2)),
            }
        )
    )
    view = fs.create_feature_view(
        "stock_vectors", root=group, features=["count", "restocked", "since", "vector"]
    )
    # A key as a bare value, a tuple or a dict; an unknown key answers nulls.
    rows = view.get_feature_vectors([1, (2,), {"item": 3}])
    assert rows[0] == [7, at, dt.date(2024, 2, 29), [0.5, -1.0]]
    assert rows[0][1].tzinfo is not None
    assert rows[1] == [None, None, None, None]
    assert rows[2] == [None, None, None, None]
    assert view.get_feature_vector(1, return_type="dict")["restocked"] == at
    table = view.get_feature_vectors([1, 2, 3], return_type="arrow")
    assert table.column("restocked").to_pylist() == [at, None, None]
    assert table.column("vector").to_pylist()[0] == [0.5, -1.0]


def test_polars_nulls_and_categoricals_go_in(fs: kairos.Client) -> None:
    group = items(fs)
    frame = pl.DataFrame(
        {
            "item": [7, 8],
            "ts": [dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)] * 2,
            "price": [None, 2.0],
            "title": pl.Series(["x", "y"], dtype=pl.Categorical),
            "in_stock": [None, True],
            "vector": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        }
    )
    group.insert(frame)
    back = group.read(return_type="polars").sort("item")
    assert back["title"].to_list() == ["x", "y"]
    assert back["price"].to_list() == [None, 2.0]


def test_a_null_in_a_key_is_refused_naming_the_row(fs: kairos.Client) -> None:
    group = items(fs)
    frame = pd.DataFrame(
        {
            "item": pd.array([1, None], dtype="Int64"),
            "ts": pd.to_datetime(["2025-01-01", "2025-01-02"], utc=True),
        }
    )
    with pytest.raises(kairos.BadInput, match=r"'item', row 2.*null"):
        group.insert(frame)
    assert len(group.read()) == 0


def test_the_async_client_takes_a_thousand_concurrent_calls(fs: kairos.Client) -> None:
    group = items(fs)
    group.insert(
        pd.DataFrame(
            {
                "item": range(100),
                "ts": pd.Timestamp("2025-01-01", tz="UTC"),
                "price": [float(i) for i in range(100)],
            }
        )
    )

    async def main() -> list[float]:
        client = kairos.AsyncClient(fs)
        async_group = await client.get_feature_group("items")
        answers = await asyncio.gather(
            *(async_group.get_online([i % 100], return_type="arrow") for i in range(1000))
        )
        return [a.column("price")[0].as_py() for a in answers]

    prices = asyncio.run(main())
    assert prices == [float(i % 100) for i in range(1000)]
