"""Python UDFs as on-demand features: the lecture's numpy haversine over whole columns for
training data and over one row online, with the same values (no skew), beside the built-in
haversine; the source and its hash are stored with the view version."""

from __future__ import annotations

import hashlib
import math
import pathlib
import time

import numpy as np
import pandas as pd
import pytest
from conftest import Server

import kairos

EARTH_KM = 6371.0


@kairos.udf(returns="float64")
def haversine_np(lat, lon, home_lat, home_lon):  # type: ignore[no-untyped-def]
    lat, lon, home_lat, home_lon = map(np.radians, (lat, lon, home_lat, home_lon))
    a = (
        np.sin((home_lat - lat) / 2) ** 2
        + np.cos(lat) * np.cos(home_lat) * np.sin((home_lon - lon) / 2) ** 2
    )
    return 2 * EARTH_KM * np.arcsin(np.sqrt(a))


@kairos.udf(returns="string", mode="row")
def size_band(amount: float) -> str:
    return "large" if amount >= 100 else "small"


def at(hour: int) -> pd.Timestamp:
    return pd.Timestamp(2025, 1, 1, hour, tz="UTC")


def view_with_udfs(fs: kairos.Client) -> kairos.FeatureView:
    payments = pd.DataFrame(
        {
            "tx": [1, 2, 3],
            "cc_num": [10, 10, 20],
            "ts": [at(9), at(13), at(10)],
            "amount": [5.0, 500.0, 70.0],
            "lat": [48.85, 40.71, 51.5],
            "lon": [2.35, -74.0, -0.12],
        }
    )
    profiles = pd.DataFrame(
        {
            "cc_num": [10, 20],
            "ts": [at(8), at(8)],
            "home_lat": [48.85, 52.52],
            "home_lon": [2.35, 13.4],
        }
    )
    tx = fs.create_feature_group("payments", primary_key="tx", event_time="ts", df=payments)
    tx.insert(payments)
    cards = fs.create_feature_group("profiles", primary_key="cc_num", event_time="ts", df=profiles)
    cards.insert(profiles)
    inputs = ["lat", "lon", "home_lat", "home_lon"]
    return fs.create_feature_view(
        "geo",
        root=tx,
        features=["amount", "lat", "lon"],
        request=["cc_num", "amount", "lat", "lon"],
        joins=[kairos.Join(cards, on=["cc_num"], features=["home_lat", "home_lon"])],
        on_demand=[
            kairos.OnDemand("km_udf", function=haversine_np, inputs=inputs),
            kairos.OnDemand("km_builtin", function="haversine", inputs=inputs),
            kairos.OnDemand("band", function=size_band, inputs=["amount"]),
        ],
    )


def test_a_python_udf_gives_training_and_serving_the_same_values(fs: kairos.Client) -> None:
    view = view_with_udfs(fs)
    x, _ = view.training_data()
    x = x.sort_values("amount").reset_index(drop=True)
    assert x["km_udf"].tolist() == pytest.approx(x["km_builtin"].tolist(), rel=1e-12)
    assert x["band"].tolist() == ["small", "small", "large"]
    # London to Berlin, the 10:00 payment of card 20.
    assert math.isclose(x["km_udf"][1], 932, rel_tol=0.01)

    for _, row in x.iterrows():
        cc_num = 10 if row["lat"] != 51.5 else 20
        online = view.get_feature_vector(
            {"tx": 0},
            request={
                "cc_num": cc_num,
                "amount": row["amount"],
                "lat": row["lat"],
                "lon": row["lon"],
            },
            return_type="dict",
        )
        assert online["km_udf"] == row["km_udf"]
        assert online["band"] == row["band"]


def test_the_view_stores_the_udfs_source_and_hash(fs: kairos.Client) -> None:
    view = view_with_udfs(fs)
    stored = {o["name"]: o for o in view.definition["on_demand"]}
    python = stored["km_udf"]["python"]
    assert python["sha256"] == hashlib.sha256(python["source"].encode()).hexdigest()
    assert "import numpy as np" in python["source"]
    assert "EARTH_KM = 6371.0" in python["source"]
    assert "@kairos.udf" not in python["source"]
    assert python["mode"] == "vectorized" and stored["band"]["python"]["mode"] == "row"
    again = fs.get_feature_view("geo", view.version)
    assert again.definition["on_demand"] == view.definition["on_demand"]


def test_a_failing_udf_is_reported_with_its_name(fs: kairos.Client) -> None:
    @kairos.udf(returns="float64", mode="row")
    def broken(amount: float) -> float:
        raise ValueError("no amount for you")

    view_with_udfs(fs)
    view = fs.create_feature_view(
        "broken",
        root="payments",
        features=["amount"],
        on_demand=[kairos.OnDemand("b", function=broken, inputs=["amount"])],
    )
    with pytest.raises(kairos.KairosError, match=r"broken.*no amount for you"):
        view.training_data()


def test_a_udf_that_does_not_stand_alone_is_refused() -> None:
    table = {"x": 1}

    with pytest.raises(kairos.BadInput, match="global 'LOOKUP'"):

        @kairos.udf(returns="float64")
        def lookup(x):  # type: ignore[no-untyped-def]
            return LOOKUP[x]

    del table


LOOKUP = {"a": 1.0}


def test_a_udf_that_answers_the_wrong_length_is_refused(fs: kairos.Client) -> None:
    @kairos.udf(returns="float64")
    def constant(amount):  # type: ignore[no-untyped-def]
        return np.array([1.0])

    view_with_udfs(fs)
    view = fs.create_feature_view(
        "constant",
        root="payments",
        features=["amount"],
        on_demand=[kairos.OnDemand("c", function=constant, inputs=["amount"])],
    )
    with pytest.raises(kairos.KairosError, match=r"'constant' returned 1 rows.*expected 3 rows"):
        view.training_data()


def test_a_hanging_udf_times_out_and_the_server_goes_on(tmp_path: pathlib.Path) -> None:
    """On a server only: embedded, a function runs in the caller's own process."""
    config = tmp_path / "kairos.toml"
    config.write_text("[store.python]\ntimeout_ms = 1500\nworkers = 1\n")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = Server(data_dir, "--config", str(config))
    try:
        fs = kairos.connect(server.url)
        view_with_udfs(fs)

        @kairos.udf(returns="float64", mode="row")
        def forever(amount: float) -> float:
            import time

            time.sleep(3600)
            return amount

        view = fs.create_feature_view(
            "forever",
            root="payments",
            features=["amount"],
            on_demand=[kairos.OnDemand("f", function=forever, inputs=["amount"])],
        )
        started = time.monotonic()
        with pytest.raises(kairos.KairosError, match=r"'forever'.*no answer within 1500 ms"):
            view.training_data()
        assert time.monotonic() - started < 60
        # The worker was replaced: the server still runs the view's other functions.
        x, _ = fs.get_feature_view("geo").training_data()
        assert len(x) == 3
        fs.close()
    finally:
        server.stop()
