"""The Python SDK against Feast, in one process and one run: online feature vectors (one
entity and 100 per call; three feature groups and two on-demand features), a 1M-row pandas
insert into both stores, a Python UDF's overhead beside the built-in haversine, and
`import kairos`.

    python3 -m venv /tmp/bench && /tmp/bench/bin/pip install feast KAIROS_WHEEL
    KAIROS_BIN=target/release/kairos /tmp/bench/bin/python bench/python_sdk.py [--keys 100000]
        [--parts online,insert,udf,training,import] [--history-keys 1000000 --spine 1000000]
        [--memory-budget 4294967296]

KAIROS_WHEEL is `maturin build --release` of python/ (its wheels folder); KAIROS_BIN a release
`kairos` for the remote backend. Feast's part runs where feast is importable and is skipped
otherwise. Prints one table; nothing is kept but the temporary folders it removes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

import kairos

EPOCH = pd.Timestamp("2025-01-01", tz="UTC")


def frames(keys: int) -> dict[str, pd.DataFrame]:
    """Three groups keyed by card: where it is, its profile, its spending."""
    rng = np.random.default_rng(0)
    cc = np.arange(keys, dtype=np.int64)
    ts = pd.Series([EPOCH] * keys)
    return {
        "card_location": pd.DataFrame(
            {"cc_num": cc, "ts": ts, "lat": rng.uniform(-60, 60, keys),
             "lon": rng.uniform(-180, 180, keys), "amount": rng.gamma(2, 30, keys)}
        ),
        "card_profile": pd.DataFrame(
            {"cc_num": cc, "ts": ts, "home_lat": rng.uniform(-60, 60, keys),
             "home_lon": rng.uniform(-180, 180, keys), "credit_limit": rng.uniform(500, 5000, keys)}
        ),
        "card_spending": pd.DataFrame(
            {"cc_num": cc, "ts": ts, "avg_amount_1d": rng.gamma(2, 30, keys),
             "count_1d": rng.integers(0, 50, keys).astype(np.int64),
             "max_amount_1d": rng.gamma(3, 40, keys)}
        ),
    }


def latencies(call, keys: int, calls: int, batch: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    picks = rng.integers(0, keys, (calls, batch))
    for row in picks[: min(200, calls)]:  # warm up
        call([int(k) for k in row])
    took = []
    start = time.perf_counter()
    for row in picks:
        begin = time.perf_counter()
        call([int(k) for k in row])
        took.append(time.perf_counter() - begin)
    total = time.perf_counter() - start
    took.sort()
    return {
        "p50_ms": 1e3 * took[len(took) // 2],
        "p99_ms": 1e3 * took[int(len(took) * 0.99)],
        "calls_per_s": calls / total,
    }


def kairos_view(fs: kairos.Client, data: dict[str, pd.DataFrame], udf: bool) -> kairos.FeatureView:
    for name, frame in data.items():
        group = fs.create_feature_group(name, primary_key="cc_num", event_time="ts", df=frame)
        group.insert(frame)
    distance: object = "haversine"
    if udf:
        distance = haversine_udf
    return fs.create_feature_view(
        "cards" + ("_udf" if udf else ""),
        root="card_location",
        features=["lat", "lon", "amount"],
        joins=[
            kairos.Join("card_profile", features=["home_lat", "home_lon", "credit_limit"]),
            kairos.Join("card_spending", features=["avg_amount_1d", "count_1d", "max_amount_1d"]),
        ],
        on_demand=[
            kairos.OnDemand("km_from_home", function=distance,  # type: ignore[arg-type]
                            inputs=["lat", "lon", "home_lat", "home_lon"]),
            kairos.OnDemand("amount_to_limit", expression="amount / credit_limit"),
        ],
    )


@kairos.udf(returns="float64")
def haversine_udf(lat, lon, home_lat, home_lon):  # type: ignore[no-untyped-def]
    lat, lon, home_lat, home_lon = map(np.radians, (lat, lon, home_lat, home_lon))
    a = np.sin((home_lat - lat) / 2) ** 2 + np.cos(lat) * np.cos(home_lat) * np.sin((home_lon - lon) / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(a))


def kairos_online(fs: kairos.Client, view: kairos.FeatureView, keys: int, calls: int) -> dict[str, dict[str, float]]:
    one = latencies(lambda k: view.get_feature_vector({"cc_num": k[0]}), keys, calls, 1)
    hundred = latencies(
        lambda ks: view.get_feature_vectors([{"cc_num": k} for k in ks]), keys, max(calls // 20, 100), 100
    )
    return {"1": one, "100": hundred}


def feast_repo(repo: pathlib.Path, data: dict[str, pd.DataFrame], online: bool) -> tuple[object, list[object]]:
    """A local Feast repo (SQLite online store) with a feature view per frame, each on the
    frame written as Parquet, keyed by card; answers the store and the card entity with the
    views, for the caller to apply with anything else it defines."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig
    from feast.types import Float64, Int64
    from feast.value_type import ValueType

    repo.mkdir()
    card = Entity(name="card", join_keys=["cc_num"], value_type=ValueType.INT64)
    views: list[object] = [card]
    for name, frame in data.items():
        path = repo / f"{name}.parquet"
        frame.to_parquet(path)
        views.append(FeatureView(
            name=name, entities=[card], ttl=dt.timedelta(days=3650), online=online,
            schema=[Field(name=c, dtype=Int64 if frame[c].dtype.kind == "i" else Float64)
                    for c in frame.columns if c not in ("cc_num", "ts")],
            source=FileSource(path=str(path), timestamp_field="ts"),
        ))
    store = FeatureStore(config=RepoConfig(
        project=repo.name.replace("-", "_"), registry=str(repo / "registry.db"), provider="local",
        online_store={"type": "sqlite", "path": str(repo / "online.db")},
        entity_key_serialization_version=3,
    ))
    return store, views


def feast_online(data: dict[str, pd.DataFrame], keys: int, calls: int, root: pathlib.Path) -> dict[str, dict[str, float]] | None:
    try:
        from feast import Field
        from feast.on_demand_feature_view import on_demand_feature_view
        from feast.types import Float64
    except ImportError:
        return None
    store, objects = feast_repo(root / "feast", data, online=True)
    views = objects[1:]

    @on_demand_feature_view(
        sources=views,
        schema=[Field(name="km_from_home", dtype=Float64), Field(name="amount_to_limit", dtype=Float64)],
        mode="pandas",
    )
    def card_odfv(inputs: pd.DataFrame) -> pd.DataFrame:
        lat, lon, hlat, hlon = (np.radians(inputs[c]) for c in ("lat", "lon", "home_lat", "home_lon"))
        a = np.sin((hlat - lat) / 2) ** 2 + np.cos(lat) * np.cos(hlat) * np.sin((hlon - lon) / 2) ** 2
        out = pd.DataFrame()
        out["km_from_home"] = 2 * 6371.0 * np.arcsin(np.sqrt(a))
        out["amount_to_limit"] = inputs["amount"] / inputs["credit_limit"]
        return out

    store.apply([*objects, card_odfv])
    for name, frame in data.items():
        store.write_to_online_store(name, frame)
    features = [
        "card_location:lat", "card_location:lon", "card_location:amount",
        "card_profile:home_lat", "card_profile:home_lon", "card_profile:credit_limit",
        "card_spending:avg_amount_1d", "card_spending:count_1d", "card_spending:max_amount_1d",
        "card_odfv:km_from_home", "card_odfv:amount_to_limit",
    ]

    def get(ks: list[int]) -> object:
        return store.get_online_features(features=features, entity_rows=[{"cc_num": k} for k in ks]).to_dict()

    one = latencies(get, keys, calls, 1)
    hundred = latencies(get, keys, max(calls // 20, 100), 100)
    return {"1": one, "100": hundred}


def server(data_dir: pathlib.Path) -> tuple[subprocess.Popen[str], str]:
    binary = os.environ.get("KAIROS_BIN") or shutil.which("kairos")
    if binary is None:
        sys.exit("set KAIROS_BIN to a release kairos binary")
    process = subprocess.Popen(
        [binary, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert process.stdout is not None
    line = next(line for line in process.stdout if line.startswith("kairos listening on "))
    return process, line.split()[-1]


def insert_million(root: pathlib.Path) -> dict[str, float]:
    n = 1_000_000
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {"cc_num": np.arange(n, dtype=np.int64), "ts": EPOCH}
        | {f"f{i}": rng.random(n) for i in range(10)}
    )
    fs = kairos.connect(root / "insert")
    group = fs.create_feature_group("wide", primary_key="cc_num", event_time="ts", df=frame)
    start = time.perf_counter()
    group.insert(frame)  # answers once both stores hold every row
    took = time.perf_counter() - start
    fs.close()
    return {"rows_per_s": n / took, "seconds": took}


def feast_insert_million(root: pathlib.Path) -> dict[str, float] | None:
    """Feast's write of the same 1M rows: its online store (SQLite) and its offline one (the
    Parquet file behind the view)."""
    try:
        import feast  # noqa: F401
    except ImportError:
        return None
    n = 1_000_000
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {"cc_num": np.arange(n, dtype=np.int64), "ts": EPOCH}
        | {f"f{i}": rng.random(n) for i in range(10)}
    )
    # The view's Parquet holds one row: what is timed is the write of all of them.
    store, objects = feast_repo(root / "feast-insert", {"wide": frame.head(1)}, online=True)
    store.apply(objects)
    start = time.perf_counter()
    store.write_to_online_store("wide", frame)
    store.write_to_offline_store("wide", frame)
    took = time.perf_counter() - start
    return {"rows_per_s": n / took, "seconds": took}


def udf_overhead(fs: kairos.Client, keys: int, calls: int) -> dict[str, float]:
    builtin = fs.get_feature_view("cards")
    python = fs.get_feature_view("cards_udf")
    per_call = {}
    for name, view in (("builtin", builtin), ("udf", python)):
        per_call[name] = latencies(lambda k, v=view: v.get_feature_vector({"cc_num": k[0]}), keys, calls, 1)["p50_ms"]
    return {"online_overhead_us": 1e3 * (per_call["udf"] - per_call["builtin"])}


def history(keys: int, versions: int) -> dict[str, pd.DataFrame]:
    """The three groups with `versions` rows per card: its first at the epoch (so every spine
    row finds one: Feast drops a spine row that finds none, Kairos keeps it with nulls), the
    rest spread over ten days."""
    rng = np.random.default_rng(4)
    n = keys * versions
    cc = np.repeat(np.arange(keys, dtype=np.int64), versions)
    offsets = rng.integers(1, 10 * 86400, n)
    offsets[::versions] = 0
    ts = EPOCH + pd.to_timedelta(offsets, unit="s")

    def group(columns: dict[str, np.ndarray]) -> pd.DataFrame:
        return pd.DataFrame({"cc_num": cc, "ts": ts} | columns)

    return {
        "card_location": group({"lat": rng.uniform(-60, 60, n), "lon": rng.uniform(-180, 180, n),
                                "amount": rng.gamma(2, 30, n)}),
        "card_profile": group({"home_lat": rng.uniform(-60, 60, n),
                               "home_lon": rng.uniform(-180, 180, n),
                               "credit_limit": rng.uniform(500, 5000, n)}),
        "card_spending": group({"avg_amount_1d": rng.gamma(2, 30, n),
                                "count_1d": rng.integers(0, 50, n).astype(np.int64),
                                "max_amount_1d": rng.gamma(3, 40, n)}),
    }


FEATURES = ["lat", "lon", "amount", "home_lat", "home_lon", "credit_limit",
            "avg_amount_1d", "count_1d", "max_amount_1d"]


def training_data(
    root: pathlib.Path, keys: int, versions: int, spine_rows: int, memory_budget: int | None
) -> dict[str, object]:
    """Point-in-time training data for a spine, Kairos's view beside Feast's
    get_historical_features on the same Parquet files; the rows compared."""
    data = history(keys, versions)
    rng = np.random.default_rng(5)
    spine = pd.DataFrame({
        "cc_num": rng.integers(0, keys, spine_rows).astype(np.int64),
        "ts": EPOCH + pd.to_timedelta(rng.integers(86400, 11 * 86400, spine_rows), unit="s"),
    })
    fs = kairos.connect(root / "history")
    for name, frame in data.items():
        group = fs.create_feature_group(name, primary_key="cc_num", event_time="ts", df=frame)
        group.insert(frame)
    view = fs.create_feature_view(
        "history", root="card_location", features=["lat", "lon", "amount"],
        joins=[kairos.Join("card_profile", features=["home_lat", "home_lon", "credit_limit"]),
               kairos.Join("card_spending", features=["avg_amount_1d", "count_1d", "max_amount_1d"])],
    )
    start = time.perf_counter()
    ours = fs.get_historical_features(spine, view, memory_budget=memory_budget)
    kairos_s = time.perf_counter() - start
    fs.close()
    result: dict[str, object] = {"kairos_s": kairos_s, "rows": len(ours)}
    try:
        import feast  # noqa: F401
    except ImportError:
        return result
    store, objects = feast_repo(root / "feast-history", data, online=False)
    store.apply(objects)
    refs = [f"{name}:{c}" for name, frame in data.items() for c in frame.columns if c not in ("cc_num", "ts")]
    start = time.perf_counter()
    theirs = store.get_historical_features(entity_df=spine.rename(columns={"ts": "event_timestamp"}),
                                           features=refs).to_df()
    feast_s = time.perf_counter() - start
    theirs = theirs.rename(columns={"event_timestamp": "ts"})
    keys_order = ["cc_num", "ts"]
    a = ours.sort_values(keys_order).reset_index(drop=True)[keys_order + FEATURES]
    b = theirs.sort_values(keys_order).reset_index(drop=True)[keys_order + FEATURES]
    assert (a["cc_num"].to_numpy() == b["cc_num"].to_numpy()).all(), "the same spine rows"
    differ = np.zeros(len(a), dtype=bool)
    for c in FEATURES:
        differ |= ~np.isclose(a[c].astype(float), b[c].astype(float), equal_nan=True)
    # Two rows of one card at the same time: the engines may each take either (Kairos takes
    # the one written last).
    tied = set()
    for frame in data.values():
        tied |= set(frame.loc[frame.duplicated(["cc_num", "ts"], keep=False), "cc_num"])
    result |= {
        "feast_s": feast_s,
        "ratio": feast_s / kairos_s,
        "identical": not differ.any(),
        "differing_rows": int(differ.sum()),
        "differing_rows_of_cards_with_tied_times": int(a.loc[differ, "cc_num"].isin(tied).sum()),
    }
    return result


def udf_batch(root: pathlib.Path) -> dict[str, float]:
    """Training data over 1M rows with the haversine as the built-in and as the numpy UDF."""
    n = 1_000_000
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "tx": np.arange(n, dtype=np.int64),
            "ts": EPOCH + pd.to_timedelta(np.arange(n), unit="s"),
        }
        | {c: rng.uniform(-60, 60, n) for c in ("lat", "lon", "home_lat", "home_lon")}
    )
    fs = kairos.connect(root / "udf-batch")
    group = fs.create_feature_group("moves", primary_key="tx", event_time="ts", df=frame)
    group.insert(frame)
    took = {}
    for name, function in (("builtin", "haversine"), ("udf", haversine_udf)):
        view = fs.create_feature_view(
            f"moves_{name}",
            root=group,
            features=["lat"],
            on_demand=[kairos.OnDemand("km", function=function,  # type: ignore[arg-type]
                                       inputs=["lat", "lon", "home_lat", "home_lon"])],
        )
        start = time.perf_counter()
        x, _ = view.training_data(return_type="arrow")
        took[name] = time.perf_counter() - start
        assert x.num_rows == n
    fs.close()
    return {
        "builtin_s": took["builtin"],
        "udf_s": took["udf"],
        "overhead_us_per_1M_rows": 1e6 * (took["udf"] - took["builtin"]),
    }


def import_time() -> float:
    runs = []
    for _ in range(7):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import kairos"], check=True)
        runs.append(time.perf_counter() - start)
    baseline = []
    for _ in range(7):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        baseline.append(time.perf_counter() - start)
    return statistics.median(runs) - statistics.median(baseline)


PARTS = ("online", "insert", "udf", "training", "import")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--history-keys", type=int, default=100_000, help="x10 rows per group")
    parser.add_argument("--spine", type=int, default=100_000)
    parser.add_argument("--memory-budget", type=int, help="bytes the join buffers (default 1 GiB)")
    parser.add_argument("--parts", default=",".join(PARTS), help="which of " + ", ".join(PARTS))
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        sys.exit(f"unknown parts: {', '.join(sorted(parts - set(PARTS)))}")
    root = pathlib.Path(tempfile.mkdtemp(prefix="kairos-bench-"))
    try:
        results: dict[str, object] = {}
        if "online" in parts:
            data = frames(args.keys)
            fs = kairos.connect(root / "embedded")
            view = kairos_view(fs, data, udf=False)
            kairos_view(fs, {}, udf=True)
            results["kairos embedded"] = kairos_online(fs, view, args.keys, args.calls)
            results["udf"] = udf_overhead(fs, args.keys, args.calls)
            fs.close()
            process, url = server(root / "served")
            try:
                remote = kairos.connect(url)
                results["kairos remote"] = kairos_online(
                    remote, kairos_view(remote, data, udf=False), args.keys, args.calls
                )
            finally:
                process.terminate()
                process.wait()
            results["feast"] = feast_online(data, args.keys, args.calls, root)
        if "insert" in parts:
            results["insert 1M"] = insert_million(root)
            results["feast insert 1M"] = feast_insert_million(root)
        if "udf" in parts:
            results["udf 1M rows"] = udf_batch(root)
        if "training" in parts:
            results["training data"] = training_data(
                root, args.history_keys, 10, args.spine, args.memory_budget
            )
        if "import" in parts:
            results["import kairos s"] = import_time()
        for name, value in results.items():
            print(f"{name}: {value}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
