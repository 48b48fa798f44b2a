//! `kairos monitor …`: monitors of deployments — applied, run, their history and HTML report —
//! on the client: in process on the data dir, or against a running server with `--url` (which
//! also runs them on their schedules).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use kairos_client::Client;
use kairos_monitor::{History, MonitorSpec};

use crate::config::Config;
use crate::fg::print_json;

#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Apply a monitor definition (TOML or JSON: deployment, window, schedule, reference,
    /// drift thresholds, labels, alert webhook, retrain policy).
    Apply { file: PathBuf },
    /// Every monitor's definition.
    List,
    /// Evaluate a monitor now: drift, label metrics, alerts (and a retraining on an alert
    /// when its policy says so); the scores go to its history.
    Run { name: String },
    /// Retrain now: a challenger on fresh data, promoted only if it wins by the margin.
    Retrain { name: String },
    /// Every score and retraining decision of a monitor, oldest first.
    History {
        name: String,
        /// The whole history as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Write one self-contained HTML report of a deployment's monitor.
    Report {
        deployment: String,
        /// The monitor, when the deployment has several.
        #[arg(long)]
        monitor: Option<String>,
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
    },
    /// Delete a monitor (its history stays).
    Delete { name: String },
}

pub async fn run(
    command: MonitorCommand,
    config: &Config,
    url: Option<&str>,
) -> anyhow::Result<()> {
    let client = crate::client::open(config, url).await?;
    let result = run_on(command, &client).await;
    client.close().await?;
    result
}

async fn run_on(command: MonitorCommand, client: &Client) -> anyhow::Result<()> {
    match command {
        MonitorCommand::Apply { file } => {
            print_json(&client.apply_monitor(&read_spec(&file)?).await?)
        }
        MonitorCommand::List => print_json(&client.list_monitors().await?),
        MonitorCommand::Run { name } => print_json(&client.run_monitor(&name).await?),
        MonitorCommand::Retrain { name } => print_json(&client.retrain(&name).await?),
        MonitorCommand::History { name, json } => {
            let history = client.monitor_history(&name).await?;
            if json {
                print_json(&history)
            } else {
                print_history(&history);
                Ok(())
            }
        }
        MonitorCommand::Report {
            deployment,
            monitor,
            out,
        } => {
            let html = client
                .monitoring_report(&deployment, monitor.as_deref())
                .await?;
            write_report(&out, &html)
        }
        MonitorCommand::Delete { name } => {
            client.delete_monitor(&name).await?;
            eprintln!("deleted monitor {name}");
            Ok(())
        }
    }
}

fn read_spec(file: &Path) -> anyhow::Result<MonitorSpec> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    MonitorSpec::parse(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| file.display().to_string())
}

fn write_report(out: &Path, html: &str) -> anyhow::Result<()> {
    std::fs::write(out, html).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("wrote {} ({} KB)", out.display(), html.len() / 1024);
    Ok(())
}

/// Runs as rows (time, alerts, drift share, quality), then the retraining decisions.
fn print_history(history: &History) {
    let mut runs: Vec<(&str, i64)> = Vec::new();
    for s in &history.scores {
        if runs.last().is_none_or(|(id, _)| *id != s.run_id) {
            runs.push((&s.run_id, s.at));
        }
    }
    let value = |run: &str, metric: &str| {
        history
            .scores
            .iter()
            .find(|s| s.run_id == run && s.metric == metric)
            .and_then(|s| s.value)
    };
    let show = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
    println!(
        "{:<24} {:>6} {:>11} {:>10} {:>9} {:>7} {:>9}",
        "run at", "alerts", "drift share", "prediction", "PR-AUC", "recall", "labelled"
    );
    for (run, at) in &runs {
        let at = chrono::DateTime::from_timestamp_micros(*at)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        println!(
            "{:<24} {:>6} {:>11} {:>10} {:>9} {:>7} {:>9}",
            at,
            show(value(run, "run:alerts")).trim_end_matches(".000"),
            show(value(run, "dataset:drift_share")),
            show(value(run, "prediction:prediction")),
            show(value(run, "quality:pr_auc")),
            show(value(run, "quality:recall")),
            value(run, "quality:labelled").map_or("–".into(), |v| format!("{v:.0}")),
        );
    }
    if history.decisions.is_empty() {
        println!("\nno retraining yet");
        return;
    }
    println!("\nretraining decisions:");
    for d in &history.decisions {
        println!(
            "  {} {:?}: {} v{} → {} ({})",
            d.at,
            d.outcome,
            d.model,
            d.champion_version,
            d.challenger_version
                .map_or("no challenger".to_string(), |v| format!("v{v}")),
            d.reason
        );
    }
}
