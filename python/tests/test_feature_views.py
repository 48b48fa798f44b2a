"""Feature views through the SDK, on both backends: point-in-time training data as (X, y),
splits, a spine, Feast's get_historical_features, online vectors with request values and an
on-demand feature, and a view from a TOML file."""

from __future__ import annotations

import datetime as dt
import math
import pathlib

import pandas as pd
import polars as pl
import pytest

import kairos

UTC = dt.timezone.utc


def at(hour: int, minute: int = 0) -> pd.Timestamp:
    return pd.Timestamp(2025, 1, 1, hour, minute, tz="UTC")


def build(fs: kairos.Client) -> kairos.FeatureView:
    """Payments of two cards, and card profiles whose home moves at noon."""
    payments = pd.DataFrame(
        {
            "tx": [1, 2, 3, 4],
            "cc_num": [10, 10, 20, 20],
            "ts": [at(9), at(13), at(9), at(13)],
            "amount": [5.0, 500.0, 7.0, 9.0],
            "lat": [48.85, 40.71, 51.5, 51.5],
            "lon": [2.35, -74.0, -0.12, -0.12],
            "is_fraud": [0, 1, 0, 0],
        }
    )
    profiles = pd.DataFrame(
        {
            "cc_num": [10, 20, 10],
            "ts": [at(8), at(8), at(12)],
            "home_lat": [48.85, 51.5, 40.71],
            "home_lon": [2.35, -0.12, -74.0],
        }
    )
    tx = fs.create_feature_group("payments", primary_key="tx", event_time="ts", df=payments)
    tx.insert(payments)
    cards = fs.create_feature_group("profiles", primary_key="cc_num", event_time="ts", df=profiles)
    cards.insert(profiles)
    return fs.create_feature_view(
        "fraud",
        root=tx,
        features=["amount", "lat", "lon"],
        labels=["is_fraud"],
        request=["cc_num", "amount", "lat", "lon"],
        joins=[kairos.Join(cards, on=["cc_num"], features=["home_lat", "home_lon"])],
        on_demand=[
            kairos.OnDemand(
                "km_from_home", function="haversine", inputs=["lat", "lon", "home_lat", "home_lon"]
            )
        ],
    )


def test_training_data_is_point_in_time_correct(fs: kairos.Client) -> None:
    view = build(fs)
    assert view.features == ["amount", "lat", "lon", "home_lat", "home_lon", "km_from_home"]
    assert view.labels == ["is_fraud"]
    x, y = view.training_data()
    assert list(x.columns) == view.features
    assert isinstance(y, pd.Series)
    assert sorted(y.tolist()) == [0, 0, 0, 1]
    frame = x.assign(is_fraud=y).sort_values(["amount"])
    # Card 10's 13:00 payment sees the home it moved to at noon; its 09:00 payment the old one.
    first, second = frame[frame["amount"] == 5.0].iloc[0], frame[frame["amount"] == 500.0].iloc[0]
    assert first["home_lat"] == 48.85 and first["km_from_home"] == pytest.approx(0.0, abs=1e-6)
    assert second["home_lat"] == 40.71 and second["km_from_home"] == pytest.approx(0.0, abs=1e-6)


def test_splits_and_return_types(fs: kairos.Client) -> None:
    view = build(fs)
    x_train, x_test, y_train, _ = view.train_test_split(0.5, seed=7)
    assert len(x_train) + len(x_test) == 4
    assert len(y_train) == len(x_train)
    x_train, x_test, _, _ = view.train_test_split(test_start=at(12))
    assert sorted(x_train["amount"]) == [5.0, 7.0]
    assert sorted(x_test["amount"]) == [9.0, 500.0]
    x, y = view.training_data(return_type="polars")
    assert isinstance(x, pl.DataFrame) and isinstance(y, pl.Series)
    parts = view.train_validation_test_split(0.25, 0.25, seed=1, return_type="arrow")
    assert sum(p.num_rows for p in parts[:3]) == 4


def test_a_spine_and_feasts_historical_features(fs: kairos.Client) -> None:
    view = build(fs)
    spine = pd.DataFrame({"tx": [2, 1], "ts": [at(13), at(9)]})
    frame = fs.get_historical_features(spine, "fraud").sort_values("tx")
    assert frame["tx"].tolist() == [1, 2]
    assert frame["home_lat"].tolist() == [48.85, 40.71]
    x, _ = view.training_data(spine=spine.iloc[:1])
    assert x["amount"].tolist() == [500.0]


def test_a_memory_budget_spills_the_join_in_process_and_a_server_keeps_its_own(
    fs: kairos.Client,
) -> None:
    build(fs)
    spine = pd.DataFrame({"tx": [2, 1], "ts": [at(13), at(9)]})
    if fs.backend == "remote":
        with pytest.raises(kairos.BadInput, match="memory budget"):
            fs.get_historical_features(spine, "fraud", memory_budget=1)
        return
    # One byte: every input goes through the spill files, and the rows are the same.
    spilled = fs.get_historical_features(spine, "fraud", memory_budget=1).sort_values("tx")
    in_memory = fs.get_historical_features(spine, "fraud").sort_values("tx")
    assert spilled["home_lat"].tolist() == [48.85, 40.71]
    pd.testing.assert_frame_equal(spilled.reset_index(drop=True), in_memory.reset_index(drop=True))


def test_online_vectors_with_request_values(fs: kairos.Client) -> None:
    view = build(fs)
    vector = view.get_feature_vector(
        {"tx": 99}, request={"amount": 12.0, "lat": 48.85, "lon": 2.35, "cc_num": 10}
    )
    assert len(vector) == len(view.features)
    named = dict(zip(view.features, vector, strict=True))
    assert named["amount"] == 12.0
    # The card lives in New York since noon: Paris is ~5,837 km away.
    assert named["home_lat"] == 40.71
    assert math.isclose(named["km_from_home"], 5837, rel_tol=0.01)

    requests = [
        {"amount": 1.0, "lat": 51.5, "lon": -0.12, "cc_num": 20},
        {"amount": 2.0, "lat": 40.71, "lon": -74.0, "cc_num": 10},
    ]
    frame = view.get_feature_vectors([97, 98], request=requests, return_type="pandas")
    assert frame["km_from_home"].tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    dicts = view.get_feature_vectors([97], request=requests[:1], return_type="dict")
    assert dicts[0]["amount"] == 1.0


def test_a_view_from_a_toml_file_and_its_errors(fs: kairos.Client, tmp_path: pathlib.Path) -> None:
    build(fs)
    path = tmp_path / "amounts.toml"
    path.write_text(
        'name = "amounts"\n'
        "[root]\n"
        'group = "payments"\n'
        'features = ["amount"]\n'
        'labels = ["is_fraud"]\n'
    )
    view = fs.create_feature_view_from_file(path)
    assert (view.name, view.features) == ("amounts", ["amount"])
    assert sorted(v.name for v in fs.feature_views()) == ["amounts", "fraud"]
    with pytest.raises(kairos.BadInput, match="nope"):
        fs.create_feature_view("bad", root="payments", features=["nope"])
    with pytest.raises(kairos.NotFound):
        fs.get_feature_view("missing")
    view.delete()
    with pytest.raises(kairos.NotFound):
        fs.get_feature_view("amounts")


def test_the_async_client_serves_vectors_and_training_data(fs: kairos.Client) -> None:
    import asyncio

    build(fs)

    async def main() -> tuple[list[list[object]], int]:
        client = kairos.AsyncClient(fs)
        view = await client.get_feature_view("fraud")
        request = {"cc_num": 10, "amount": 3.0, "lat": 40.71, "lon": -74.0}
        vectors = await asyncio.gather(
            *(view.get_feature_vector({"tx": i}, request=request) for i in range(50))
        )
        x, _ = await view.training_data()
        return vectors, len(x)

    vectors, rows = asyncio.run(main())
    assert rows == 4
    assert all(v == vectors[0] for v in vectors) and vectors[0][0] == 3.0
