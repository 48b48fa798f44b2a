# The engines a cluster runs on, started on loopback for CI (`.ci/run`) and for a development
# cluster (`scripts/cluster`): Debian's PostgreSQL and Redis, moto's S3 server. Sourced, not
# run. Each start waits until its engine answers; each stop is quiet about what is not running.

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)

# initdb refuses to run as root: the database cluster belongs to the postgres user then.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# pg_start DIR PORT: a PostgreSQL cluster in DIR (made if missing) on 127.0.0.1:PORT, its
# socket in DIR; the superuser `kairos`, trusted on loopback.
pg_start() {
    local dir=$1 port=$2
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_pg "$PG_BIN/initdb" -D "$dir/data" --auth=trust -U kairos >/dev/null
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
        -o "-p $port -c listen_addresses=127.0.0.1 -k $dir" start >/dev/null
}

pg_stop() {
    as_pg "$PG_BIN/pg_ctl" -D "$1/data" -m fast stop >/dev/null 2>&1 || true
}

# redis_start DIR PORT: one Redis server, in memory only.
redis_start() {
    local dir=$1 port=$2
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --pidfile "$dir/redis-$port.pid" --dir "$dir"
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.1; done
    echo "redis-server on port $port did not start" >&2
    return 1
}

# redis_cluster_start DIR PORT...: a Redis Cluster of one master per port, no replicas.
redis_cluster_start() {
    local dir=$1 port nodes=()
    shift
    for port in "$@"; do
        mkdir -p "$dir/$port"
        (cd "$dir/$port" && redis-server --port "$port" --bind 127.0.0.1 \
            --cluster-enabled yes --cluster-config-file nodes.conf --save '' --appendonly no \
            --daemonize yes --pidfile "$dir/$port/redis.pid")
        nodes+=("127.0.0.1:$port")
    done
    for port in "$@"; do
        for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
    for _ in $(seq 100); do
        redis-cli -p "$1" cluster info | grep -q 'cluster_state:ok' && return
        sleep 0.1
    done
    echo "the Redis Cluster on ports $* did not come up" >&2
    return 1
}

# redis_stop PORT...: shuts each server down, keeping nothing.
redis_stop() {
    local port
    for port in "$@"; do
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
}

# s3_start PORT BUCKET: moto's S3 server (it enforces conditional PUT, which Delta commits rely
# on) with BUCKET made; prints its pid. The endpoint is http://127.0.0.1:PORT.
s3_start() {
    local port=$1 bucket=$2
    python3 -m moto.server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    local pid=$!
    python3 - "http://127.0.0.1:$port/$bucket" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="PUT"))
        break
    except OSError:
        time.sleep(0.1)
else:
    raise SystemExit("moto's S3 server did not start")
PY
    echo "$pid"
}
