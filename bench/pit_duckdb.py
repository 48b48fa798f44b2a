"""DuckDB's ASOF JOIN on the files `kairos bench pit-data` wrote, and the check that it and
Kairos produce the same rows.

    python3 bench/pit_duckdb.py join DIR OUT.parquet [GROUPS]   # timed, prints one JSON line
    python3 bench/pit_duckdb.py check KAIROS.parquet DUCKDB.parquet [GROUPS]

Needs `pip install duckdb`.
"""

import json
import sys
import time

import duckdb


def feature_columns(groups):
    return [f"g{g}_f{f}" for g in range(1, groups + 1) for f in (1, 2)]


def join(directory, out, groups):
    con = duckdb.connect()
    select = ", ".join(f"g{g}.f{f} AS g{g}_f{f}" for g in range(1, groups + 1) for f in (1, 2))
    joins = " ".join(
        f"ASOF LEFT JOIN '{directory}/g{g}.parquet' g{g} ON s.key = g{g}.key AND s.ts >= g{g}.ts"
        for g in range(1, groups + 1)
    )
    query = f"COPY (SELECT s.id, s.key, s.ts, {select} FROM '{directory}/spine.parquet' s {joins}) TO '{out}' (FORMAT parquet)"
    started = time.perf_counter()
    con.execute(query)
    seconds = time.perf_counter() - started
    rows = con.execute(f"SELECT count(*) FROM '{directory}/spine.parquet'").fetchone()[0]
    print(json.dumps({
        "engine": f"duckdb {duckdb.__version__}",
        "spine_rows": rows,
        "total_seconds": seconds,
        "spine_rows_per_second": rows / seconds,
    }))


def check(kairos, duck, groups):
    con = duckdb.connect()
    columns = ", ".join(["id", "key", "epoch_us(ts) AS ts"] + feature_columns(groups))
    counts = [con.execute(f"SELECT count(*) FROM '{p}'").fetchone()[0] for p in (kairos, duck)]
    only_kairos = con.execute(f"SELECT count(*) FROM (SELECT {columns} FROM '{kairos}' EXCEPT ALL SELECT {columns} FROM '{duck}')").fetchone()[0]
    only_duck = con.execute(f"SELECT count(*) FROM (SELECT {columns} FROM '{duck}' EXCEPT ALL SELECT {columns} FROM '{kairos}')").fetchone()[0]
    matched = con.execute(f"SELECT count(*) FROM '{kairos}' WHERE g1_f1 IS NOT NULL").fetchone()[0]
    identical = counts[0] == counts[1] and only_kairos == 0 and only_duck == 0
    print(json.dumps({
        "rows": counts, "only_in_kairos": only_kairos, "only_in_duckdb": only_duck,
        "kairos_rows_with_a_g1_match": matched, "identical": identical,
    }))
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    command = sys.argv[1]
    groups = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    if command == "join":
        join(sys.argv[2], sys.argv[3], groups)
    elif command == "check":
        check(sys.argv[2], sys.argv[3], groups)
    else:
        sys.exit(f"unknown command {command}")
