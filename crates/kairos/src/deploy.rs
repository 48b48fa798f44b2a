//! `kairos deploy …`: deployments, applied to the data dir (a server loads them when it starts)
//! or to a running server with `--url` (swapped in at once).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use kairos_client::{Client, DeploymentSpec, PredictRequest};

use crate::config::Config;
use crate::fg::print_json;

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Apply a deployment definition (TOML or JSON: name, model, model_version, threshold,
    /// slo, inference_log): the model is loaded and checked against the feature view it was
    /// trained on, then becomes the deployment's next revision.
    Apply { file: PathBuf },
    /// Every deployment's live revision and status.
    List,
    /// A deployment's revision, model, features, latency percentiles and SLO compliance.
    Status { name: String },
    /// Delete a deployment (its inference log stays).
    Delete { name: String },
    /// Predict for entities: `--entries '[4000123412341234]' --request '{"amount": 12.5, …}'`.
    Predict {
        name: String,
        /// A JSON array of entity keys (objects, arrays in key order, or bare values).
        #[arg(long)]
        entries: String,
        /// A JSON object of request-time values for all entries, or an array of one per entry.
        #[arg(long)]
        request: Option<String>,
        /// Also print each entry's feature vector.
        #[arg(long)]
        features: bool,
    },
}

pub async fn run(command: DeployCommand, config: &Config, url: Option<&str>) -> anyhow::Result<()> {
    let client = crate::client::open(config, url).await?;
    let result = run_on(command, &client).await;
    client.close().await?;
    result
}

async fn run_on(command: DeployCommand, client: &Client) -> anyhow::Result<()> {
    match command {
        DeployCommand::Apply { file } => {
            print_json(&client.apply_deployment(&read_spec(&file)?).await?)
        }
        DeployCommand::Delete { name } => {
            client.delete_deployment(&name).await?;
            eprintln!("deleted deployment {name}");
            Ok(())
        }
        DeployCommand::List => print_json(&client.list_deployments().await?),
        DeployCommand::Status { name } => print_json(&client.deployment_status(&name).await?),
        DeployCommand::Predict {
            name,
            entries,
            request,
            features,
        } => {
            let request = predict_request(&entries, request.as_deref(), features)?;
            print_json(&client.predict(&name, &request).await?)
        }
    }
}

fn read_spec(file: &Path) -> anyhow::Result<DeploymentSpec> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let spec = DeploymentSpec::parse(&text).with_context(|| file.display().to_string())?;
    spec.validate()?;
    Ok(spec)
}

fn parse_entries(entries: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    match serde_json::from_str(entries).context("--entries is not JSON")? {
        serde_json::Value::Array(items) => Ok(items),
        single => Ok(vec![single]),
    }
}

fn predict_request(
    entries: &str,
    request: Option<&str>,
    features: bool,
) -> anyhow::Result<PredictRequest> {
    Ok(PredictRequest {
        id: None,
        entries: parse_entries(entries)?,
        request: request
            .map(serde_json::from_str)
            .transpose()
            .context("--request is not JSON")?,
        return_features: features,
    })
}
