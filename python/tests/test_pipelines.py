"""A streaming pipeline through the SDK, on both backends: deployed from a dict, fed events
over its HTTP stream, its window written into a feature group, stopped and started."""

from __future__ import annotations

import time
from typing import Any

import pytest

import kairos

DEFINITION: dict[str, Any] = {
    "name": "amounts_10m",
    "source": {"kind": "http", "stream": "payments"},
    "input": {
        "key": "cc_num",
        "event_time": "ts",
        "columns": [
            {"name": "cc_num", "type": "int64"},
            {"name": "ts", "type": "timestamp"},
            {"name": "amount", "type": "float64"},
        ],
    },
    "window": {"kind": "tumbling", "size": "10m", "out_of_orderness": "0s"},
    "output": {"feature_group": "amounts_10m"},
    "aggregations": [
        {"name": "sum_10m", "agg": "sum", "column": "amount"},
        {"name": "count_10m", "agg": "count"},
    ],
}


def test_a_pipeline_turns_pushed_events_into_window_features(fs: kairos.Client) -> None:
    pipeline = fs.deploy_pipeline(DEFINITION)
    assert pipeline.name == "amounts_10m"
    fs.push(
        "payments",
        [
            {"cc_num": 7, "ts": "2025-01-01T09:01:00Z", "amount": 10.0},
            {"cc_num": 7, "ts": "2025-01-01T09:05:00Z", "amount": 32.5},
            # Past the window's end: the watermark closes 09:00-09:10.
            {"cc_num": 8, "ts": "2025-01-01T09:31:00Z", "amount": 1.0},
        ],
    )
    group = fs.get_feature_group("amounts_10m")
    deadline = time.monotonic() + 60
    while True:
        row = group.get_online([7], return_type="arrow").to_pylist()[0]
        if row["count_10m"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert row["sum_10m"] == pytest.approx(42.5)
    assert row["count_10m"] == 2
    assert [p.name for p in fs.pipelines()] == ["amounts_10m"]

    assert pipeline.stop()["state"] == "stopped"
    with pytest.raises(kairos.Conflict):
        pipeline.stop()
    assert pipeline.start()["state"] in ("running", "starting")


def test_a_bad_pipeline_is_refused_naming_the_value(fs: kairos.Client) -> None:
    bad = {**DEFINITION, "window": {"kind": "tumbling", "size": "ten minutes"}}
    with pytest.raises(kairos.BadInput, match="'ten minutes' is not a duration"):
        fs.deploy_pipeline(bad)
    with pytest.raises(kairos.NotFound):
        fs.get_pipeline("nope")
