//! The vector index on real vectors with exact ground truth (texmex `.fvecs`/`.ivecs`, e.g.
//! MNIST's 9,000 base and 1,000 query images): build time, then recall@k against queries per
//! second on one thread for each `ef`, beside hnswlib built and queried alike in the same run;
//! and, with `--filters`, the filtered search's two paths (the graph walk and the exact scan)
//! across selectivities, which is where the index's `exact_below` comes from.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use kairos_vector::{HnswIndex, IndexConfig, Metric, SearchOptions, SearchPath};

#[derive(Debug, clap::Args)]
pub struct AnnArgs {
    /// A folder with `*base.fvecs`, `*query.fvecs` and `*groundtruth*.ivecs` (exact L2 ids).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 10)]
    k: usize,
    #[arg(long, default_value_t = 16)]
    m: usize,
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// The `ef` values to measure.
    #[arg(long, value_delimiter = ',', default_value = "10,12,16,20,32,48,64,96")]
    ef: Vec<usize>,
    /// Timed passes over the queries per `ef`; the best counts.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Build and query hnswlib alike in the same run (needs `pip install hnswlib numpy`).
    #[arg(long)]
    hnswlib: bool,
    /// Also time filtered searches by both paths across selectivities.
    #[arg(long)]
    filters: bool,
}

fn read_vecs(path: &Path) -> anyhow::Result<(usize, Vec<[u8; 4]>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let dim = i32::from_le_bytes(bytes[..4].try_into()?) as usize;
    let record = 4 * (dim + 1);
    if bytes.len() % record != 0 {
        bail!(
            "{} is not a .fvecs/.ivecs file of dimension {dim}",
            path.display()
        );
    }
    let values = bytes
        .chunks_exact(record)
        .flat_map(|r| r[4..].chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]));
    Ok((dim, values.collect()))
}

fn find(dir: &Path, part: &str, ext: &str) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.contains(part) && name.ends_with(ext) && !name.contains("dist")
        })
        .with_context(|| format!("no *{part}*{ext} in {}", dir.display()))
}

struct Point {
    ef: usize,
    recall: f64,
    qps: f64,
}

pub fn ann(args: &AnnArgs) -> anyhow::Result<()> {
    let (base_path, query_path, truth_path) = (
        find(&args.data, "base", ".fvecs")?,
        find(&args.data, "query", ".fvecs")?,
        find(&args.data, "groundtruth", ".ivecs")?,
    );
    let (dim, base) = read_vecs(&base_path)?;
    let base: Vec<f32> = base.into_iter().map(f32::from_le_bytes).collect();
    let (_, queries) = read_vecs(&query_path)?;
    let queries: Vec<f32> = queries.into_iter().map(f32::from_le_bytes).collect();
    let (truth_width, truth) = read_vecs(&truth_path)?;
    let truth: Vec<Vec<u64>> = truth
        .chunks_exact(truth_width)
        .map(|row| {
            row[..args.k]
                .iter()
                .map(|&b| i32::from_le_bytes(b) as u64)
                .collect()
        })
        .collect();
    let n = base.len() / dim;
    println!(
        "{n} base vectors and {} queries of {dim} dimensions, k = {}",
        queries.len() / dim,
        args.k
    );

    let mut config = IndexConfig::new(dim, Metric::L2);
    config.hnsw.m = args.m;
    config.hnsw.ef_construction = args.ef_construction;
    let index = HnswIndex::new(config)?;
    let items: Vec<(u64, &[f32])> = base
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, v)| (i as u64, v))
        .collect();
    let start = Instant::now();
    index.upsert(&items)?;
    let build = start.elapsed().as_secs_f64();

    let mut points = Vec::new();
    for &ef in &args.ef {
        let mut best = f64::INFINITY;
        let mut hits = 0;
        for _ in 0..args.runs.max(1) {
            hits = 0;
            let start = Instant::now();
            for (query, truth) in queries.chunks_exact(dim).zip(&truth) {
                let found = index.search(
                    query,
                    args.k,
                    SearchOptions {
                        ef: Some(ef),
                        ..Default::default()
                    },
                )?;
                hits += found
                    .neighbours
                    .iter()
                    .filter(|n| truth.contains(&n.key))
                    .count();
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        points.push(Point {
            ef,
            recall: hits as f64 / (truth.len() * args.k) as f64,
            qps: truth.len() as f64 / best,
        });
    }

    let peer = if args.hnswlib {
        let efs = args
            .ef
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let output = Command::new("python3")
            .arg("-c")
            .arg(include_str!("hnswlib_ann.py"))
            .args([&base_path, &query_path, &truth_path].map(|p| p.as_os_str().to_owned()))
            .args([args.k, args.m, args.ef_construction].map(|v| v.to_string()))
            .arg(&efs)
            .arg(args.runs.to_string())
            .output()
            .context("cannot run python3")?;
        if !output.status.success() {
            bail!(
                "hnswlib's run failed (pip install hnswlib numpy):\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let result: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let points = result["points"]
            .as_array()
            .context("hnswlib printed no points")?
            .iter()
            .map(|p| Point {
                ef: p["ef"].as_u64().unwrap_or(0) as usize,
                recall: p["recall"].as_f64().unwrap_or(0.0),
                qps: p["qps"].as_f64().unwrap_or(0.0),
            })
            .collect::<Vec<_>>();
        Some((
            result["hnswlib"].as_str().unwrap_or("?").to_owned(),
            result["build_s"].as_f64().unwrap_or(0.0),
            points,
        ))
    } else {
        None
    };

    println!(
        "\nbuild (M = {}, ef_construction = {}, one thread)",
        args.m, args.ef_construction
    );
    println!("  kairos   {build:.2} s");
    if let Some((version, peer_build, _)) = &peer {
        println!(
            "  hnswlib  {peer_build:.2} s  (hnswlib {version}; kairos/hnswlib time {:.2})",
            build / peer_build
        );
    }
    println!("\nrecall@{} and queries/s, one thread", args.k);
    println!(
        "  {:>5}  {:>12} {:>10}  {:>12} {:>10}",
        "ef", "kairos rec.", "q/s", "hnswlib rec.", "q/s"
    );
    for (i, point) in points.iter().enumerate() {
        let other = peer.as_ref().and_then(|(_, _, p)| p.get(i));
        println!(
            "  {:>5}  {:>12.4} {:>10.0}  {:>12} {:>10}",
            point.ef,
            point.recall,
            point.qps,
            other.map_or("–".into(), |o| format!("{:.4}", o.recall)),
            other.map_or("–".into(), |o| format!("{:.0}", o.qps)),
        );
    }
    if let Some((_, _, peer_points)) = &peer {
        println!("\nat matched recall (the fastest setting of each reaching it)");
        for target in [0.95, 0.99, 0.995] {
            let fastest = |points: &[Point]| {
                points
                    .iter()
                    .filter(|p| p.recall >= target)
                    .max_by(|a, b| a.qps.total_cmp(&b.qps))
                    .map(|p| (p.ef, p.qps))
            };
            match (fastest(&points), fastest(peer_points)) {
                (Some((ef, qps)), Some((peer_ef, peer_qps))) => println!(
                    "  recall ≥ {target}: kairos {qps:.0} q/s (ef {ef}), hnswlib {peer_qps:.0} q/s (ef {peer_ef}): {:.2}×",
                    qps / peer_qps
                ),
                _ => println!("  recall ≥ {target}: not reached by both at these ef values"),
            }
        }
    }
    if args.filters {
        filters(&index, &queries, dim, args.k)?;
    }
    Ok(())
}

/// Filtered searches by the graph walk and by the exact scan, where a share of the keys pass.
fn filters(index: &HnswIndex, queries: &[f32], dim: usize, k: usize) -> anyhow::Result<()> {
    println!(
        "\nfiltered search: keys passing (key mod 1000 below a bound), queries/s and recall@{k} of the walk"
    );
    println!(
        "  {:>8}  {:>10}  {:>10}  {:>8}",
        "passing", "walk q/s", "scan q/s", "walk rec."
    );
    for per_mille in [2u64, 5, 10, 20, 50, 100, 200, 250, 300, 400, 500] {
        let passes = move |key: u64| key % 1000 < per_mille;
        let mut timings = [0.0f64; 2];
        let mut results: [Vec<Vec<u64>>; 2] = [Vec::new(), Vec::new()];
        for (i, path) in [SearchPath::Graph, SearchPath::Exact]
            .into_iter()
            .enumerate()
        {
            let options = SearchOptions {
                filter: Some(&passes),
                force: Some(path),
                ..Default::default()
            };
            let start = Instant::now();
            for query in queries.chunks_exact(dim) {
                let found = index.search(query, k, options)?;
                results[i].push(found.neighbours.iter().map(|n| n.key).collect());
            }
            timings[i] = start.elapsed().as_secs_f64();
        }
        let hits: usize = results[0]
            .iter()
            .zip(&results[1])
            .map(|(walk, exact)| walk.iter().filter(|key| exact.contains(key)).count())
            .sum();
        let total: usize = results[1].iter().map(Vec::len).sum();
        let count = queries.len() / dim;
        println!(
            "  {:>7.1}%  {:>10.0}  {:>10.0}  {:>8.4}",
            per_mille as f64 / 10.0,
            count as f64 / timings[0],
            count as f64 / timings[1],
            hits as f64 / total as f64
        );
    }
    Ok(())
}
