"""The streaming benchmark's peer: Bytewax's windowing operators on the same events file.

10-minute tumbling windows of amount per card (count, sum → avg, max), event time from `ts`
(epoch milliseconds), 30 seconds allowed out of order — the same aggregation `kairos bench
stream` runs. Writes rows as `cc_num,window_start_us,window_end_us,avg,count,max`, sorted, the
format Kairos writes, so the two files can be compared with `cmp`.

Usage: python3 bench/stream_bytewax.py run EVENTS.csv OUT.csv
       python3 bench/stream_bytewax.py check KAIROS.csv BYTEWAX.csv
`check` asks for the same windows, counts and maxima, and averages equal to 1e-12 relative
(the engines may add a window's amounts in different orders, which moves the last bit).
Needs: pip install bytewax (measured with 0.21.1).
"""

import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.connectors.files import CSVSource, FileSink
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
LENGTH = timedelta(minutes=10)


def parse(row):
    ts = EPOCH + timedelta(milliseconds=int(row["ts"]))
    return row["cc_num"], (ts, float(row["amount"]))


def build():
    return (0, 0.0, float("-inf"))


def fold(acc, event):
    _, amount = event
    n, total, high = acc
    return (n + 1, total + amount, max(high, amount))


def merge(a, b):
    return (a[0] + b[0], a[1] + b[1], max(a[2], b[2]))


def main(events, out):
    flow = Dataflow("card_10m")
    rows = op.input("events", flow, CSVSource(Path(events)))
    keyed = op.map("parse", rows, parse)
    clock = win.EventClock(lambda e: e[0], wait_for_system_duration=timedelta(seconds=30))
    windower = win.TumblingWindower(length=LENGTH, align_to=EPOCH)
    windows = win.fold_window("fold", keyed, clock, windower, build, fold, merge)

    def line(item):
        card, (window_id, (n, total, high)) = item
        start_us = window_id * int(LENGTH.total_seconds()) * 1_000_000
        end_us = start_us + int(LENGTH.total_seconds()) * 1_000_000
        return card, f"{card},{start_us},{end_us},{total / n!r},{n},{high!r}"

    unsorted = out + ".unsorted"
    op.output("out", op.map("line", windows.down, line), FileSink(Path(unsorted)))
    started = time.perf_counter()
    run_main(flow)
    elapsed = time.perf_counter() - started
    with open(unsorted) as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    Path(unsorted).unlink()
    lines.sort(key=lambda l: (int(l.split(",")[0]), int(l.split(",")[1])))
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    events_n = sum(1 for _ in open(events)) - 1
    print(
        f"bytewax: {events_n} events in {elapsed:.2f} s = {events_n / elapsed:.0f} events/s "
        f"(one worker); {len(lines)} window rows",
        file=sys.stderr,
    )


def check(a_path, b_path):
    a = [l.split(",") for l in open(a_path).read().split()]
    b = [l.split(",") for l in open(b_path).read().split()]
    if len(a) != len(b):
        sys.exit(f"DIFFERENT: {len(a)} rows vs {len(b)} rows")
    last_bit = 0
    for x, y in zip(a, b):
        same_window = x[0:3] == y[0:3] and x[4] == y[4] and float(x[5]) == float(y[5])
        ax, ay = float(x[3]), float(y[3])
        if not same_window or abs(ax - ay) > 1e-12 * max(abs(ax), abs(ay)):
            sys.exit(f"DIFFERENT: {x} vs {y}")
        last_bit += ax != ay
    print(f"same {len(a)} window rows ({last_bit} averages differ in the last bits only)")


if __name__ == "__main__":
    if sys.argv[1] == "run":
        main(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
