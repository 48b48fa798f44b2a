#!/usr/bin/env bash
# The streaming benchmarks BENCHMARKS.md records:
#  1. the lecture's aggregation (10-minute tumbling avg, count and max of amount per card) over
#     a replayed events file: Kairos's engine and Bytewax's windowing operators on the same
#     file in the same run, outputs checked equal; then Kairos alone on 10M events, engine only
#     and as a whole pipeline into a feature group;
#  2. freshness (event arrival to visible online) at a sustained rate pushed over HTTP, and
#     produced to Kafka (librdkafka's mock cluster, in the benchmark process).
# Needs: python3 with bytewax (pip install bytewax).
# Bytewax's cost grows with the number of keys: at 100k cards it is given 100k events and
# 300 seconds; the full comparison with equal outputs runs on 1M events over 1,000 cards.
# Usage: bench/stream.sh [events] [freshness-rate] [freshness-seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-10000000}"
RATE="${2:-50000}"
SECONDS_FRESH="${3:-15}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kairos-target}"
cargo build --release -p kairos --bin kairos
KAIROS="$CARGO_TARGET_DIR/release/kairos"
WORK=$(mktemp -d)
cleanup() {
    [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
export KAIROS_LOG=warn

echo "== machine"
echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(lscpu | sed -n 's/^Model name: *//p')"
python3 -c 'import importlib.metadata as m; print("bytewax", m.version("bytewax"))'

echo "== events: $EVENTS over 24 h of event time, 100k cards"
"$KAIROS" bench stream-data --out "$WORK/events.csv" --events "$EVENTS" --cards 100000 --hours 24
"$KAIROS" bench stream-data --out "$WORK/few-cards.csv" --events 1000000 --cards 1000 --hours 24
head -n 100001 "$WORK/events.csv" > "$WORK/first-100k.csv"
du -h "$WORK/events.csv" "$WORK/few-cards.csv"

echo "== same input, same run: Kairos engine vs Bytewax, 1M events over 1,000 cards"
"$KAIROS" bench stream --input "$WORK/few-cards.csv" --output "$WORK/kairos.csv"
python3 bench/stream_bytewax.py run "$WORK/few-cards.csv" "$WORK/bytewax.csv"
python3 bench/stream_bytewax.py check "$WORK/kairos.csv" "$WORK/bytewax.csv"

echo "== same input, same run: the first 100k events of the 100k-card file (Bytewax: 300 s at most)"
"$KAIROS" bench stream --input "$WORK/first-100k.csv"
timeout 300 python3 bench/stream_bytewax.py run "$WORK/first-100k.csv" "$WORK/bytewax-100k.csv" \
    || echo "bytewax: not done after 300 s"

echo "== Kairos, $EVENTS events: engine alone, then the whole pipeline into a feature group"
"$KAIROS" bench stream --input "$WORK/events.csv"
"$KAIROS" --data-dir "$WORK/store" bench stream --input "$WORK/events.csv" --mode store

echo "== freshness at $RATE events/s over HTTP for $SECONDS_FRESH s"
"$KAIROS" --data-dir "$WORK/serve" serve --listen 127.0.0.1:7171 > "$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:7171/healthz >/dev/null && break; sleep 0.1; done
"$KAIROS" bench freshness --url http://127.0.0.1:7171 --rate "$RATE" --seconds "$SECONDS_FRESH"

echo "== freshness at $RATE events/s through Kafka (librdkafka's mock cluster, 4 partitions) for $SECONDS_FRESH s"
"$KAIROS" bench freshness --url http://127.0.0.1:7171 --rate "$RATE" --seconds "$SECONDS_FRESH" --kafka-partitions 4
