"""Feature groups through the SDK, on both backends: create, insert from pandas, Polars and
pyarrow, read back as each, online reads, time travel, and refusals that write nothing."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import kairos

UTC = dt.timezone.utc


def payments(n: int = 4, *, day: int = 1) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cc_num": list(range(1, n + 1)),
            "ts": pd.date_range(f"2025-01-{day:02d}", periods=n, freq="h", tz="UTC"),
            "amount": [10.0 * (i + 1) for i in range(n)],
            "merchant": [f"m{i % 2}" for i in range(n)],
        }
    )


def cards(fs: kairos.Client) -> kairos.FeatureGroup:
    return fs.create_feature_group(
        "cards",
        primary_key="cc_num",
        event_time="ts",
        features={"cc_num": "int64", "ts": "timestamp", "amount": "float64", "merchant": "string"},
    )


def test_a_group_inferred_from_a_dataframe_keeps_its_types(fs: kairos.Client) -> None:
    group = fs.get_or_create_feature_group(
        "cards", primary_key=["cc_num"], event_time="ts", df=payments()
    )
    assert (group.name, group.version) == ("cards", 1)
    assert [(f.name, f.type) for f in group.features] == [
        ("cc_num", "int64"),
        ("ts", "timestamp"),
        ("amount", "float64"),
        ("merchant", "string"),
    ]
    # Asked again, the same version comes back rather than a new one.
    again = fs.get_or_create_feature_group(
        "cards", primary_key=["cc_num"], event_time="ts", df=payments()
    )
    assert again.version == 1
    assert [(g.name, g.version) for g in fs.feature_groups()] == [("cards", 1)]
    assert cards(fs).version == 2


def test_rows_from_pandas_come_back_from_both_stores(fs: kairos.Client) -> None:
    group = cards(fs)
    result = group.insert(payments())
    assert result.rows == 4
    assert result.online_visible

    online = group.get_online([2, 4, 99])
    assert list(online["cc_num"]) == [2, 4, 99]
    assert online["amount"].tolist()[:2] == [20.0, 40.0]
    assert pd.isna(online["amount"].iloc[2])
    assert str(online["ts"].dtype) == "datetime64[us, UTC]"
    assert online["ts"].iloc[0] == pd.Timestamp("2025-01-01T01:00", tz="UTC")

    offline = group.read().sort_values("cc_num")
    assert offline["amount"].tolist() == [10.0, 20.0, 30.0, 40.0]
    assert offline["ts"].dt.tz is not None
    assert offline["merchant"].tolist() == ["m0", "m1", "m0", "m1"]


def test_polars_and_arrow_go_in_and_come_out(fs: kairos.Client) -> None:
    group = cards(fs)
    frame = pl.from_pandas(payments(3))
    group.insert(frame)
    table = pa.Table.from_pandas(payments(2, day=2), preserve_index=False)
    group.insert(table)

    polars = group.read(return_type="polars")
    assert isinstance(polars, pl.DataFrame)
    assert polars.height == 5
    arrow = group.read(return_type="arrow")
    assert isinstance(arrow, pa.Table)
    assert arrow.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    online = group.get_online([{"cc_num": 1}, (2,)], return_type="arrow")
    assert online.column("ts").to_pylist() == [
        dt.datetime(2025, 1, 2, tzinfo=UTC),
        dt.datetime(2025, 1, 2, 1, tzinfo=UTC),
    ]


def test_anything_with_an_arrow_stream_goes_in(fs: kairos.Client) -> None:
    class Stream:
        """Only the PyCapsule interface, as DuckDB's results and other libraries offer."""

        def __init__(self, table: pa.Table) -> None:
            self.table = table

        def __arrow_c_stream__(self, requested_schema: object = None) -> object:
            return self.table.__arrow_c_stream__(requested_schema)

    group = cards(fs)
    group.insert(Stream(pa.Table.from_pandas(payments(), preserve_index=False)))
    assert len(group.read()) == 4


def test_naive_times_are_utc_with_one_warning(fs: kairos.Client) -> None:
    group = cards(fs)
    naive = payments()
    naive["ts"] = naive["ts"].dt.tz_localize(None)
    with pytest.warns(UserWarning, match="'ts' have no time zone"):
        group.insert(naive, wait="online")
    assert group.get_online([1])["ts"].iloc[0] == pd.Timestamp("2025-01-01", tz="UTC")


def test_reads_filter_by_event_time_and_travel_in_time(fs: kairos.Client) -> None:
    group = cards(fs)
    group.insert(payments(4, day=1))
    between = group.read(start=dt.datetime(2025, 1, 1, 1, tzinfo=UTC), end="2025-01-01T03:00:00Z")
    assert sorted(between["cc_num"]) == [2, 3]

    known = dt.datetime.now(UTC)
    group.insert(payments(4, day=2))
    assert len(group.read()) == 8
    assert len(group.read(as_of=known)) == 4


def test_a_refused_batch_names_the_column_and_row_and_writes_nothing(fs: kairos.Client) -> None:
    group = cards(fs)
    group.insert(payments(2))
    bad = payments(3)
    bad["amount"] = ["1.0", "2.0", "lots"]
    with pytest.raises(kairos.BadInput) as refused:
        group.insert(bad)
    message = str(refused.value)
    assert "nothing was written" in message
    assert "'amount'" in message and "row 3" in message and "float64" in message
    assert isinstance(refused.value, ValueError)
    assert len(group.read()) == 2
    assert group.get_online([3])["amount"].isna().all()

    with pytest.raises(kairos.BadInput, match="'unknown'"):
        group.insert(payments(1).assign(unknown=1))


def test_missing_things_and_conflicts_raise_their_kind(fs: kairos.Client) -> None:
    with pytest.raises(kairos.NotFound, match="nope"):
        fs.get_feature_group("nope")
    group = cards(fs)
    with pytest.raises(kairos.NotFound):
        fs.get_feature_group("cards", version=7)
    group.insert(payments(1), wait="online")
    with pytest.raises(kairos.BadInput, match="return_type"):
        group.read(return_type="excel")  # type: ignore[arg-type]
    with pytest.raises(kairos.BadInput, match="wait"):
        group.insert(payments(1), wait="later")  # type: ignore[arg-type]


def test_status_check_compact_and_delete(fs: kairos.Client) -> None:
    group = cards(fs)
    group.insert(payments())
    group.insert(payments(day=2))
    assert group.status()["log_end_offset"] == 8
    compacted = group.compact()
    assert compacted["files_removed"] >= compacted["files_added"]
    assert group.check()["clean"]
    assert len(group.read()) == 8
    group.delete()
    with pytest.raises(kairos.NotFound):
        fs.get_feature_group("cards")


def test_the_async_client_awaits_without_blocking_the_loop(fs: kairos.Client) -> None:
    import asyncio

    async def main() -> list[int]:
        client = kairos.AsyncClient(fs)
        group = await client.create_feature_group(
            "cards", primary_key="cc_num", event_time="ts", df=payments()
        )
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        await group.insert(payments())
        rows = await group.read()
        ticker.cancel()
        assert ticks > 0
        return sorted(rows["cc_num"].tolist())

    assert asyncio.run(main()) == [1, 2, 3, 4]
