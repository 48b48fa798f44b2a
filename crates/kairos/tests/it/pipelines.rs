//! The golden restart test: a pipeline run straight through, and the same pipeline on another
//! data dir killed with SIGKILL at random points and resumed each time, leave identical offline
//! and online contents in the output feature group. And the scale-out test: two workers share
//! a Kafka topic's partitions, one is killed, the other takes its partitions over — as a
//! `kairos pipeline worker` beside a server, and as two replicas of a cluster.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

const CARDS: usize = 500;

fn kairos(data_dir: &Path) -> Command {
    kairos_with(data_dir, &[])
}

/// The CLI on `data_dir` with `env` set (a cluster's configuration, say).
fn kairos_with(data_dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kairos"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env("KAIROS_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied());
    command
}

/// Events in time order but for a shuffle within the allowed out-of-orderness.
fn write_events(path: &Path, n: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut out = String::from("cc_num,ts,amount\n");
    let t0 = 1_714_550_400_000i64; // milliseconds
    let mut rows: Vec<(i64, usize, f64)> = (0..n)
        .map(|i| {
            let t = t0 + (i as i64) * 250;
            let jitter = rng.random_range(0..30_000);
            (
                t + jitter,
                rng.random_range(0..CARDS),
                rng.random_range(100..100_000) as f64 / 100.0,
            )
        })
        .collect();
    // Arrival order: event time plus up to 30 s of delay.
    rows.sort_by_cached_key(|r| r.0 - rng.random_range(0..30_000));
    for (t, card, amount) in rows {
        out.push_str(&format!(
            "{},{t},{amount}\n",
            4_000_000_000_000_000u64 + card as u64
        ));
    }
    std::fs::write(path, out).unwrap();
}

fn write_spec(dir: &Path, events: &Path) -> std::path::PathBuf {
    let source = format!("kind = \"file\"\npath = \"{}\"", events.display());
    write_spec_reading(dir, "card_5m.toml", &source)
}

fn write_spec_reading(dir: &Path, file: &str, source: &str) -> std::path::PathBuf {
    let spec = format!(
        r#"
name = "card_5m"
checkpoint_interval = "40ms"
[source]
{source}
[input]
key = "cc_num"
event_time = "ts"
columns = [
  {{ name = "cc_num", type = "int64" }},
  {{ name = "ts", type = "timestamp" }},
  {{ name = "amount", type = "float64" }},
]
[window]
kind = "hopping"
size = "5m"
slide = "1m"
out_of_orderness = "1m"
[output]
feature_group = "card_5m"
[[aggregations]]
name = "avg_amount"
agg = "avg"
column = "amount"
[[aggregations]]
name = "n"
agg = "count"
[[aggregations]]
name = "p90_amount"
agg = "approx_quantile"
column = "amount"
q = 0.9
[[aggregations]]
name = "last_amounts"
agg = "last_n"
column = "amount"
n = 4
"#
    );
    let path = dir.join(file);
    std::fs::write(&path, spec).unwrap();
    path
}

/// The group's offline rows without ingestion time and offset, sorted; and its online rows.
fn contents(data_dir: &Path) -> (Vec<String>, String) {
    contents_with(data_dir, &[])
}

fn contents_with(data_dir: &Path, env: &[(&str, &str)]) -> (Vec<String>, String) {
    let out = kairos_with(data_dir, env)
        .args(["fg", "read", "card_5m"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut offline: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut row: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).unwrap();
            row.remove("_ingested_at");
            row.remove("_offset");
            serde_json::Value::Object(row).to_string()
        })
        .collect();
    offline.sort();
    let keys: Vec<String> = (0..CARDS)
        .map(|c| (4_000_000_000_000_000u64 + c as u64).to_string())
        .collect();
    let out = kairos_with(data_dir, env)
        .args(["fg", "get", "card_5m"])
        .args(&keys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (offline, String::from_utf8(out.stdout).unwrap())
}

fn check_clean(data_dir: &Path) {
    check_clean_with(data_dir, &[]);
}

fn check_clean_with(data_dir: &Path, env: &[(&str, &str)]) {
    let out = kairos_with(data_dir, env)
        .args(["fg", "check", "card_5m"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["clean"], true, "{report:#}");
}

#[test]
fn sigkill_and_resume_leaves_the_stores_as_a_straight_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.csv");
    write_events(&events, 60_000);
    let spec = write_spec(dir.path(), &events);

    let straight = dir.path().join("straight");
    let started = Instant::now();
    let status = kairos(&straight)
        .args(["pipeline", "run"])
        .arg(&spec)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let straight_took = started.elapsed();
    let expected = contents(&straight);
    assert!(expected.0.len() > 1000, "{} rows", expected.0.len());
    check_clean(&straight);

    let killed = dir.path().join("killed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut kills = 0;
    let mut injected = 0;
    loop {
        let mut command = kairos(&killed);
        command
            .args(["pipeline", "run"])
            .arg(&spec)
            .stdout(Stdio::null());
        // Every third run crashes exactly between writing a checkpoint and delivering its
        // rows, or right after delivering them: the moments a random kill rarely hits.
        let fault = match kills % 3 {
            1 => Some(format!("pipeline.after_commit={}", rng.random_range(1..4))),
            2 => Some(format!(
                "pipeline.after_delivery={}",
                rng.random_range(1..4)
            )),
            _ => None,
        };
        if let Some(f) = &fault {
            command.env("KAIROS_FAULTS", f).stderr(Stdio::null());
        }
        let mut child = command.spawn().unwrap();
        let fraction = rng.random_range(0.05..0.6);
        let deadline = Instant::now() + straight_took.mul_f64(fraction);
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                if fault.is_some() && !status.success() {
                    injected += 1;
                    break false;
                }
                assert!(status.success(), "kairos pipeline run failed: {status}");
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if finished {
            break;
        }
        let _ = child.kill(); // SIGKILL (a no-op if a fault already ended it)
        child.wait().unwrap();
        kills += 1;
        assert!(kills < 60, "the pipeline never finished");
    }
    assert!(
        kills >= 3,
        "only {kills} kills; the straight run took {straight_took:?}"
    );
    assert!(injected >= 1, "no injected crash landed in {kills} kills");
    eprintln!("{kills} kills, {injected} at an injected crash point");
    check_clean(&killed);
    let got = contents(&killed);
    assert_eq!(
        got.0.len(),
        expected.0.len(),
        "offline row counts differ after {kills} kills"
    );
    assert!(
        got.0 == expected.0,
        "offline rows differ after {kills} kills"
    );
    assert_eq!(got.1, expected.1, "online rows differ after {kills} kills");
}

/// What `GET /v1/pipelines/card_5m` or a worker's status file says.
fn partitions_and_events(status: &serde_json::Value) -> (Vec<String>, u64) {
    let partitions = status["positions"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    (partitions, status["events"].as_u64().unwrap_or(0))
}

/// Scale-out: the pipeline runs as two workers — the server's own run and a
/// `kairos pipeline worker` process — sharing a two-partition topic on librdkafka's mock
/// cluster. The worker process is killed with SIGKILL; the server's run takes its partition
/// over from the partition's checkpoint (so the state is restored at another parallelism,
/// two workers to one). The feature group ends with exactly the rows a file replay of the same
/// events gives: nothing lost, nothing written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_partitions_are_taken_over_with_no_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let topic = Transactions::new(dir.path());
    let (events, lines) = (&topic.events, &topic.lines);
    let produce = |lines: &[String]| topic.produce(lines);
    let split = lines.len() * 3 / 5;
    produce(&lines[..split]);

    let data_dir = dir.path().join("workers");
    let spec = write_spec_reading(dir.path(), "card_5m_kafka.toml", &topic.source());
    let server = crate::server::Server::start(&data_dir).await;
    let mut worker = kairos(&data_dir)
        .args(["--url", &server.url, "pipeline", "worker", "--id", "w2"])
        .arg(&spec)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let server_status = || async {
        let response = client
            .get(format!("{}/v1/pipelines/card_5m", server.url))
            .send()
            .await
            .unwrap();
        response.json::<serde_json::Value>().await.unwrap()
    };
    let worker_status = || {
        std::fs::read(data_dir.join("pipelines/card_5m/v1/workers/w2/status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .unwrap_or_default()
    };

    // Each worker gets one partition and reads some of it.
    let started = Instant::now();
    loop {
        let (mine, _) = partitions_and_events(&server_status().await);
        let (theirs, their_events) = partitions_and_events(&worker_status());
        if mine.len() == 1 && theirs.len() == 1 && mine != theirs && their_events > 0 {
            break;
        }
        assert!(
            worker.try_wait().unwrap().is_none(),
            "the worker process ended"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the partitions were never shared: server {}, worker {}",
            server_status().await,
            worker_status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap();

    let (rest, flush_at) = with_flush(lines, &lines[split..]);
    produce(&rest);
    let total = (lines.len() + 2) as u64;
    let started = Instant::now();
    loop {
        let (mine, events) = partitions_and_events(&server_status().await);
        if mine.len() == 2 && events == total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the server's run never took over: {}",
            server_status().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = client
        .post(format!("{}/v1/pipelines/card_5m/stop", server.url))
        .send()
        .await
        .unwrap();
    assert!(stopped.status().is_success());
    let status: serde_json::Value = stopped.json().await.unwrap();
    assert_eq!(status["events"], total, "{status:#}");
    assert_eq!(status["late"], 0, "{status:#}");
    server.stop();
    check_clean(&data_dir);
    assert_windows_of_a_replay(dir.path(), events, flush_at, contents(&data_dir).0);
}

/// 24,000 card events in a two-partition topic on librdkafka's mock cluster (hosted by the
/// test), and the same events in a CSV file.
struct Transactions {
    cluster: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    producer: rdkafka::producer::BaseProducer,
    events: std::path::PathBuf,
    lines: Vec<String>,
}

impl Transactions {
    fn new(dir: &Path) -> Transactions {
        let events = dir.join("events.csv");
        write_events(&events, 24_000);
        let lines = std::fs::read_to_string(&events)
            .unwrap()
            .lines()
            .skip(1)
            .map(str::to_owned)
            .collect();
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("transactions", 2, 1).unwrap();
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        Transactions {
            cluster,
            producer,
            events,
            lines,
        }
    }

    /// Sends `lines` (CSV) as JSON messages: a card's events go to one partition, as Kafka's
    /// default partitioner does by key.
    fn produce(&self, lines: &[String]) {
        use rdkafka::producer::{BaseRecord, Producer};
        for line in lines {
            let card = line.split(',').next().unwrap();
            let partition = card.parse::<u64>().unwrap() % 2;
            let message = json_event(line);
            self.producer
                .send(
                    BaseRecord::to("transactions")
                        .key(card)
                        .payload(&message)
                        .partition(partition as i32),
                )
                .unwrap();
        }
        self.producer.flush(Duration::from_secs(10)).unwrap();
    }

    /// A pipeline source reading the topic in a consumer group that notices a dead member
    /// within 3 s.
    fn source(&self) -> String {
        format!(
            "kind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"transactions\"\n\
             properties = {{ \"session.timeout.ms\" = \"3000\", \"heartbeat.interval.ms\" = \"300\" }}",
            self.cluster.bootstrap_servers()
        )
    }
}

/// An event line of the CSV (`cc_num,ts,amount`) as a JSON object.
fn json_event(line: &str) -> String {
    let fields: Vec<&str> = line.split(',').collect();
    format!(
        "{{\"cc_num\": {}, \"ts\": {}, \"amount\": {}}}",
        fields[0], fields[1], fields[2]
    )
}

/// Applies pipeline `card_5m` reading `source` through the server at `url`.
async fn apply_card_5m(client: &reqwest::Client, url: &str, dir: &Path, source: &str) {
    let spec_path = write_spec_reading(dir, "card_5m_replicated.toml", source);
    let spec = kairos_stream::PipelineSpec::parse(
        "card_5m_replicated.toml",
        &std::fs::read_to_string(&spec_path).unwrap(),
    )
    .unwrap();
    let applied = client
        .post(format!("{url}/v1/pipelines"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert!(
        applied.status().is_success(),
        "{}",
        applied.text().await.unwrap()
    );
}

/// Pipeline `card_5m`'s status on the server at `url`.
async fn card_5m_status(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = client
        .get(format!("{url}/v1/pipelines/card_5m"))
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

/// The last replica standing: waits until it holds `partitions` of the source and has counted
/// every event of `events` and the two flush events, stops the pipeline there, and checks the
/// output group in `data_dir`: `check` clean, and exactly the windows a file replay gives.
async fn survivor_ends_as_a_replay(
    survivor: crate::server::Server,
    data_dir: &Path,
    env: &[(&str, &str)],
    partitions: usize,
    events: &Transactions,
    flush_at: i64,
) {
    let client = reqwest::Client::new();
    let total = (events.lines.len() + 2) as u64;
    let started = Instant::now();
    loop {
        let status = card_5m_status(&client, &survivor.url).await;
        let (held, counted) = partitions_and_events(&status);
        if held.len() == partitions && counted == total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the survivor never read every event: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = client
        .post(format!("{}/v1/pipelines/card_5m/stop", survivor.url))
        .send()
        .await
        .unwrap();
    let stopped: serde_json::Value = stopped.json().await.unwrap();
    assert_eq!(stopped["events"], total, "{stopped:#}");
    assert_eq!(stopped["late"], 0, "{stopped:#}");
    survivor.stop();
    check_clean_with(data_dir, env);
    let got = contents_with(data_dir, env).0;
    let beside_the_events = events.events.parent().unwrap();
    assert_windows_of_a_replay(beside_the_events, &events.events, flush_at, got);
}

/// Two replicas of a cluster (a PostgreSQL catalog, a bucket, Redis, and the groups' logs on
/// Kafka — `KAIROS_TEST_*`) run a Kafka-sourced pipeline applied through one of them, sharing
/// the topic's partitions. In each of ten rounds, while events flow, one of them (each in
/// turn) is killed with SIGKILL at a random point; the other takes its partition over from the
/// partition's checkpoint in the bucket; the killed one is started again and takes a partition
/// back from the other's checkpoint. At the end one is killed for good and the other reads
/// the rest. The output group ends with exactly the windows a file replay gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_pipeline_on_two_replicas_survives_kills_of_either() {
    use rand::{Rng, SeedableRng};
    const ROUNDS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let topic = Transactions::new(dir.path());
    let logs = rdkafka::mocking::MockCluster::new(1).unwrap();
    let brokers = logs.bootstrap_servers();
    let Some((cluster, dirs, servers)) =
        two_replicas("pipeline-replicas", dir.path(), &brokers).await
    else {
        return;
    };
    let env = cluster.env();
    let mut servers = servers.map(Some);
    let client = reqwest::Client::new();
    let first = &servers[0].as_ref().expect("running").url;
    apply_card_5m(&client, first, dir.path(), &topic.source()).await;
    // Waits until the replicas running hold the topic's two partitions: one each, or both on
    // the one running.
    let settled = async |servers: &[Option<crate::server::Server>; 2], what: &str| {
        let started = Instant::now();
        loop {
            let mut held = Vec::new();
            for server in servers.iter().flatten() {
                held.push(partitions_and_events(&card_5m_status(&client, &server.url).await).0);
            }
            let settled = match &held[..] {
                [one] => one.len() == 2,
                [a, b] => a.len() == 1 && b.len() == 1 && a != b,
                _ => false,
            };
            if settled {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: the partitions never settled: {held:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    let (rest, flush_at) = with_flush(&topic.lines, &[]);
    let per_round = topic.lines.len().div_ceil(ROUNDS + 1);
    let mut parts = topic.lines.chunks(per_round);
    topic.produce(parts.next().unwrap());
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for round in 0..ROUNDS {
        settled(&servers, &format!("round {round}, both running")).await;
        // The victim dies while the replicas read the round's events.
        topic.produce(parts.next().unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        let victim = round % 2;
        servers[victim].take().unwrap().kill();
        settled(&servers, &format!("round {round}, one killed")).await;
        servers[victim] = Some(crate::server::Server::start_with(&dirs[victim], &env).await);
    }
    settled(&servers, "after the rounds").await;
    servers[0].take().unwrap().kill();
    let survivor = servers[1].take().unwrap();
    topic.produce(&parts.flatten().cloned().chain(rest).collect::<Vec<_>>());
    survivor_ends_as_a_replay(survivor, &dirs[1], &env, 2, &topic, flush_at).await;
    cluster.remove().await;
}

/// Two replicas of a cluster (a PostgreSQL catalog, a bucket and Redis from `KAIROS_TEST_*`,
/// the groups' logs on `brokers`) started on data dirs `a` and `b` under `dir`: the cluster's
/// configuration (to remove at the end), the data dirs and the replicas; `None` where the
/// test engines are not configured.
async fn two_replicas(
    name: &str,
    dir: &Path,
    brokers: &str,
) -> Option<(
    crate::cluster::ClusterConfig,
    [std::path::PathBuf; 2],
    [crate::server::Server; 2],
)> {
    let cluster = crate::cluster::ClusterConfig::create(name, dir, Some(brokers)).await?;
    let dirs = [dir.join("a"), dir.join("b")];
    let env = cluster.env();
    let servers = [
        crate::server::Server::start_with(&dirs[0], &env).await,
        crate::server::Server::start_with(&dirs[1], &env).await,
    ];
    Some((cluster, dirs, servers))
}

/// The windows the same events replayed from a file give, on another data dir: `got` holds
/// every one of them but those of the flush events at `flush_at` (which the file's end closes
/// and Kafka's never does), once.
fn assert_windows_of_a_replay(dir: &Path, events: &Path, flush_at: i64, got: Vec<String>) {
    let replay = dir.join("replay");
    let mut body = std::fs::read_to_string(events).unwrap();
    body.push_str(&format!(
        "4000000000000000,{flush_at},1.0\n4000000000000001,{flush_at},1.0\n"
    ));
    let all_events = dir.join("all_events.csv");
    std::fs::write(&all_events, body).unwrap();
    let spec_dir = dir.join("replay_spec");
    std::fs::create_dir_all(&spec_dir).unwrap();
    let file_spec = write_spec(&spec_dir, &all_events);
    let status = kairos(&replay)
        .args(["pipeline", "run"])
        .arg(&file_spec)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let flush_day = chrono::DateTime::from_timestamp_millis(flush_at)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let closed = |rows: Vec<String>| -> Vec<String> {
        rows.into_iter()
            .filter(|r| !r.contains(&flush_day))
            .collect()
    };
    let expected = closed(contents(&replay).0);
    let got = closed(got);
    assert!(expected.len() > 1000, "{} rows", expected.len());
    assert_eq!(got.len(), expected.len(), "row counts differ");
    assert!(got == expected, "rows differ");
}

/// The rest of the events, and one a day after the last on each partition to close every
/// window; answers them and when the flush events are.
fn with_flush(lines: &[String], rest: &[String]) -> (Vec<String>, i64) {
    let last = lines
        .iter()
        .map(|l| l.split(',').nth(1).unwrap().parse::<i64>().unwrap())
        .max()
        .unwrap();
    let flush_at = last + 86_400_000;
    let mut rest = rest.to_vec();
    rest.push(format!("4000000000000000,{flush_at},1.0"));
    rest.push(format!("4000000000000001,{flush_at},1.0"));
    (rest, flush_at)
}

/// Two replicas of a cluster (as above) and a pipeline with an HTTP source applied through
/// one of them: the stream is a topic of the log's Kafka cluster, so a push to either replica
/// reaches the pipeline, which runs on whichever holds the stream's partition. That replica is
/// killed with SIGKILL half-way; the other takes the partition over from its checkpoint in the
/// bucket, and the pushes go on to it. The output group ends with exactly the windows a file
/// replay gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_pipeline_on_two_replicas_takes_pushes_on_either_and_survives_its_reader_killed() {
    let dir = tempfile::tempdir().unwrap();
    let events = Transactions::new(dir.path());
    let logs = rdkafka::mocking::MockCluster::new(1).unwrap();
    let brokers = logs.bootstrap_servers();
    let Some((cluster, dirs, servers)) = two_replicas("pipeline-http", dir.path(), &brokers).await
    else {
        return;
    };
    let env = cluster.env();
    let mut servers = Vec::from(servers);
    let client = reqwest::Client::new();
    let source = "kind = \"http\"\nstream = \"transactions\"";
    apply_card_5m(&client, &servers[0].url, dir.path(), source).await;
    // Pushes of 500 events at a time, as JSON lines, to `url`; a replica that has not seen
    // the pipeline yet refuses the stream, and is asked again.
    let push = async |url: &str, lines: &[String]| {
        for chunk in lines.chunks(500) {
            let body: String = chunk.iter().map(|l| json_event(l) + "\n").collect();
            let started = Instant::now();
            loop {
                let answer = client
                    .post(format!("{url}/v1/streams/transactions/events"))
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                if answer.status().is_success() {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "push refused: {}",
                    answer.text().await.unwrap()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // The first part pushed to both, alternately; one replica reads the stream's partition.
    let split = events.lines.len() * 3 / 5;
    for (i, part) in events.lines[..split].chunks(2_000).enumerate() {
        push(&servers[i % 2].url, part).await;
    }
    let started = Instant::now();
    let reader = loop {
        let mut reading = Vec::new();
        for (i, server) in servers.iter().enumerate() {
            let status = card_5m_status(&client, &server.url).await;
            let (partitions, events) = partitions_and_events(&status);
            if !partitions.is_empty() && events > 0 {
                reading.push(i);
            }
        }
        if let [reader] = reading[..] {
            break reader;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no one replica reads the stream: {reading:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    servers.remove(reader).kill();
    let survivor = servers.remove(0);
    let survivor_dir = &dirs[1 - reader];

    let (rest, flush_at) = with_flush(&events.lines, &events.lines[split..]);
    push(&survivor.url, &rest).await;
    survivor_ends_as_a_replay(survivor, survivor_dir, &env, 1, &events, flush_at).await;
    cluster.remove().await;
}

/// Two replicas of a cluster (as above) run a Kafka-sourced pipeline applied through one of
/// them. Stopped through the other, it stops on both; the first, restarted, leaves it
/// stopped; started again through either, it runs on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_stopped_through_one_replica_stops_on_every_replica_and_stays_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let topic = Transactions::new(dir.path());
    let logs = rdkafka::mocking::MockCluster::new(1).unwrap();
    let brokers = logs.bootstrap_servers();
    let Some((cluster, dirs, servers)) = two_replicas("pipeline-stop", dir.path(), &brokers).await
    else {
        return;
    };
    let env = cluster.env();
    let mut servers = Vec::from(servers);
    let client = reqwest::Client::new();
    apply_card_5m(&client, &servers[0].url, dir.path(), &topic.source()).await;
    // Waits until pipeline `card_5m` is in `state` on every replica.
    let everywhere = async |servers: &[crate::server::Server], state: &str| {
        let started = Instant::now();
        loop {
            let mut states = Vec::new();
            for server in servers {
                states.push(card_5m_status(&client, &server.url).await["state"].clone());
            }
            if states.iter().all(|s| s == state) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "not {state} on every replica: {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    everywhere(&servers, "running").await;

    let stopped = client
        .post(format!("{}/v1/pipelines/card_5m/stop", servers[1].url))
        .send()
        .await
        .unwrap();
    assert!(stopped.status().is_success());
    everywhere(&servers, "stopped").await;
    // Stopped everywhere already: a second stop is refused.
    let again = client
        .post(format!("{}/v1/pipelines/card_5m/stop", servers[0].url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), reqwest::StatusCode::CONFLICT);

    servers.remove(0).stop();
    servers.insert(0, crate::server::Server::start_with(&dirs[0], &env).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = card_5m_status(&client, &servers[0].url).await["state"].clone();
    assert_ne!(
        state, "running",
        "a restarted replica ran a stopped pipeline"
    );

    let started = client
        .post(format!("{}/v1/pipelines/card_5m/start", servers[0].url))
        .send()
        .await
        .unwrap();
    assert!(started.status().is_success());
    everywhere(&servers, "running").await;
    for server in servers {
        server.stop();
    }
    cluster.remove().await;
}
