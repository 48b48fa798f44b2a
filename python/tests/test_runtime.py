"""The engine inside Python: it lets other threads run while it works, and a forked child that
inherits it gets a clear error rather than a hang."""

from __future__ import annotations

import os
import threading

import numpy as np
import pandas as pd

import kairos


def test_engine_work_releases_the_gil(fs: kairos.Client) -> None:
    n = 300_000
    rows = pd.DataFrame(
        {
            "k": np.arange(n, dtype=np.int64),
            "ts": pd.Timestamp("2025-01-01", tz="UTC"),
            "v": np.random.default_rng(0).random(n),
        }
    )
    group = fs.create_feature_group("big", primary_key="k", event_time="ts", df=rows)
    inserted = threading.Event()

    def insert() -> None:
        group.insert(rows)
        inserted.set()

    worker = threading.Thread(target=insert)
    ticks = 0
    worker.start()
    while not inserted.is_set():
        ticks += 1
    worker.join()
    # Held for the whole insert, the GIL would have let this thread count only between the
    # interpreter's switches before and after the call.
    assert ticks > 10_000, ticks
    assert len(group.read(return_type="arrow")) == n


def test_a_forked_child_is_told_to_connect_itself(fs: kairos.Client) -> None:
    fs.feature_groups()
    child = os.fork()
    if child == 0:
        try:
            fs.feature_groups()
            os._exit(1)
        except RuntimeError as error:
            os._exit(0 if "fork" in str(error) and "spawn" in str(error) else 2)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert fs.feature_groups() == []
