//! Monitoring benchmarks: drift statistics over a large current window, and the streaming
//! drift detectors' updates per second beside River's on the same streams in the same run.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use kairos_monitor::detectors::{Adwin, Ddm, DriftDetector, PageHinkley, Signal};
use kairos_monitor::drift::{DriftOptions, Samples, dataset_drift};
use rand::{Rng, SeedableRng};

#[derive(Debug, clap::Args)]
pub struct DriftArgs {
    /// Rows in the reference and in the current sample each.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Numerical columns (a quarter of them shifted in the current sample).
    #[arg(long, default_value_t = 16)]
    numerical: usize,
    /// Categorical columns (twelve values each; one in four shifted).
    #[arg(long, default_value_t = 4)]
    categorical: usize,
    /// Timed runs after one warm-up.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut impl Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

pub fn drift(args: &DriftArgs) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let start = Instant::now();
    let numerical: Vec<(Vec<f64>, Vec<f64>)> = (0..args.numerical)
        .map(|i| {
            let shift = if i % 4 == 0 { 0.3 } else { 0.0 };
            let reference = (0..args.rows).map(|_| normal(&mut rng)).collect();
            let current = (0..args.rows).map(|_| normal(&mut rng) + shift).collect();
            (reference, current)
        })
        .collect();
    let values: Vec<String> = (0..12).map(|v| format!("value_{v}")).collect();
    let categorical: Vec<(Vec<String>, Vec<String>)> = (0..args.categorical)
        .map(|i| {
            let skew = if i % 4 == 0 { 3 } else { 0 };
            let mut draw = |skew: usize| {
                (0..args.rows)
                    .map(|_| {
                        let v = rng.random_range(0..12 + skew);
                        values[v.min(11)].clone()
                    })
                    .collect::<Vec<_>>()
            };
            (draw(0), draw(skew))
        })
        .collect();
    println!(
        "{} rows × {} columns ({} numerical, {} categorical) in each sample, made in {:.1} s",
        args.rows,
        args.numerical + args.categorical,
        args.numerical,
        args.categorical,
        start.elapsed().as_secs_f64()
    );
    let columns = || {
        let mut columns: Vec<(String, Samples<'_>)> = numerical
            .iter()
            .enumerate()
            .map(|(i, (r, c))| {
                (
                    format!("n{i}"),
                    Samples::Numerical {
                        reference: r,
                        current: c,
                    },
                )
            })
            .collect();
        columns.extend(categorical.iter().enumerate().map(|(i, (r, c))| {
            (
                format!("c{i}"),
                Samples::Categorical {
                    reference: r,
                    current: c,
                },
            )
        }));
        columns
    };
    let options = DriftOptions::default();
    let mut times = Vec::new();
    for run in 0..=args.runs {
        let start = Instant::now();
        let drift = dataset_drift(columns(), &options)?;
        let seconds = start.elapsed().as_secs_f64();
        if run == 0 {
            println!(
                "drifted columns: {} of {} ({})",
                drift.drifted_columns,
                drift.columns.len(),
                drift
                    .columns
                    .iter()
                    .filter(|c| c.drifted)
                    .map(|c| format!("{} {} {:.3}", c.column, c.method.name(), c.score))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        } else {
            times.push(seconds);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "drift of every column (KS, Wasserstein, PSI, Jensen–Shannon, chi-squared, histograms), \
         {} threads: best {:.3} s, median {:.3} s over {} runs",
        rayon::current_num_threads(),
        times[0],
        times[times.len() / 2],
        times.len()
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DetectorArgs {
    /// Values per stream.
    #[arg(long, default_value_t = 2_000_000)]
    updates: usize,
    /// Run River's detectors on the same streams (needs `pip install river`).
    #[arg(long)]
    river: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A Gaussian stream whose mean moves every quarter, and an error stream (0/1) whose rate does.
fn streams(updates: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let means = [0.0, 1.0, 0.2, 3.0];
    let rates = [0.02, 0.06, 0.02, 0.2];
    let quarter = updates.div_ceil(4);
    let gaussian = (0..updates)
        .map(|i| means[i / quarter] + normal(&mut rng))
        .collect();
    let errors = (0..updates)
        .map(|i| f64::from(rng.random::<f64>() < rates[i / quarter]))
        .collect();
    (gaussian, errors)
}

fn time_detector(mut detector: impl DriftDetector, stream: &[f64]) -> (f64, Vec<usize>) {
    let start = Instant::now();
    let mut drifts = Vec::new();
    for (i, x) in stream.iter().enumerate() {
        if detector.update(*x) == Signal::Drift {
            drifts.push(i);
        }
    }
    (start.elapsed().as_secs_f64(), drifts)
}

pub fn detectors(args: &DetectorArgs) -> anyhow::Result<()> {
    let (gaussian, errors) = streams(args.updates, args.seed);
    let dir = tempfile_dir()?;
    write_f64(&dir.join("gaussian.f64"), &gaussian)?;
    write_f64(&dir.join("errors.f64"), &errors)?;
    let ours = [
        (
            "adwin",
            time_detector(Adwin::new(Default::default()), &gaussian),
        ),
        (
            "page_hinkley",
            time_detector(PageHinkley::new(Default::default()), &gaussian),
        ),
        ("ddm", time_detector(Ddm::new(Default::default()), &errors)),
    ];
    let river = if args.river {
        let output = Command::new("python3")
            .arg("-c")
            .arg(include_str!("river_detectors.py"))
            .arg(&dir)
            .output()
            .context("cannot run python3")?;
        if !output.status.success() {
            bail!(
                "River's run failed (pip install river):\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Some(serde_json::from_slice::<serde_json::Value>(&output.stdout)?)
    } else {
        None
    };
    std::fs::remove_dir_all(&dir).ok();
    println!("{} updates per stream", args.updates);
    if let Some(r) = &river {
        println!("River {}", r["river"].as_str().unwrap_or("?"));
    }
    println!(
        "{:<14} {:>16} {:>16} {:>8}  detections",
        "detector", "Kairos updates/s", "River updates/s", "ratio"
    );
    for (name, (seconds, drifts)) in &ours {
        let rate = args.updates as f64 / seconds;
        let (river_rate, same) = match &river {
            Some(r) => {
                let result = &r["results"][*name];
                let river_drifts: Vec<usize> = result["drifts"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_u64())
                            .map(|v| v as usize)
                            .collect()
                    })
                    .unwrap_or_default();
                let rate = result["updates"].as_f64().unwrap_or(0.0)
                    / result["seconds"].as_f64().unwrap_or(f64::NAN);
                (Some(rate), Some(river_drifts == *drifts))
            }
            None => (None, None),
        };
        println!(
            "{:<14} {:>16.0} {:>16} {:>8}  {} {}",
            name,
            rate,
            river_rate.map_or("–".into(), |r| format!("{r:.0}")),
            river_rate.map_or("–".into(), |r| format!("{:.1}×", rate / r)),
            drifts.len(),
            match same {
                Some(true) => "(the same indices as River)",
                Some(false) => "(DIFFERENT from River's)",
                None => "",
            }
        );
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("kairos-bench-detectors-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Little-endian doubles, as Python's `array('d')` reads them.
fn write_f64(path: &Path, values: &[f64]) -> anyhow::Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
