//! The golden restart test: a pipeline run straight through, and the same pipeline on another
//! data dir killed with SIGKILL at random points and resumed each time, leave identical offline
//! and online contents in the output feature group.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

const CARDS: usize = 500;

fn kairos(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kairos"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env("KAIROS_LOG", "warn")
        .env("RUST_BACKTRACE", "0");
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
    let spec = format!(
        r#"
name = "card_5m"
checkpoint_interval = "40ms"
[source]
kind = "file"
path = "{}"
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
"#,
        events.display()
    );
    let path = dir.join("card_5m.toml");
    std::fs::write(&path, spec).unwrap();
    path
}

/// The group's offline rows without ingestion time and offset, sorted; and its online rows.
fn contents(data_dir: &Path) -> (Vec<String>, String) {
    let out = kairos(data_dir)
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
    let out = kairos(data_dir)
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
    let out = kairos(data_dir)
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
