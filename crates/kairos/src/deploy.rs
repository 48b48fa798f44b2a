//! `kairos deploy …`: deployments, applied to the data dir (a server loads them when it starts)
//! or to a running server with `--url` (swapped in at once).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use kairos_deploy::{Deployments, PredictRequest};
use kairos_model::DeploymentSpec;
use kairos_store::FeatureStore;
use reqwest::Method;

use crate::config::Config;
use crate::fg::print_json;
use crate::remote::Remote;

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
    match url {
        Some(url) => run_remote(command, &crate::remote::connect(url, config)?).await,
        None => {
            let store = FeatureStore::open(config.store.clone()).await?;
            let result = run_local(command, &store).await;
            store.close().await;
            result
        }
    }
}

async fn run_local(command: DeployCommand, store: &FeatureStore) -> anyhow::Result<()> {
    let deployments = Deployments::new(store.clone())?;
    // Reading a status or predicting needs the deployments loaded; applying and deleting not.
    if matches!(
        command,
        DeployCommand::List | DeployCommand::Status { .. } | DeployCommand::Predict { .. }
    ) {
        deployments.start_all().await;
    }
    let result = async {
        match command {
            DeployCommand::Apply { file } => {
                print_json(&deployments.apply(read_spec(&file)?).await?)
            }
            DeployCommand::Delete { name } => {
                deployments.delete(&name).await?;
                eprintln!("deleted deployment {name}");
                Ok(())
            }
            DeployCommand::List => {
                let statuses = deployments
                    .list()
                    .iter()
                    .map(|l| deployments.status(&l.deployment.spec.name))
                    .collect::<Result<Vec<_>, _>>()?;
                print_json(&statuses)
            }
            DeployCommand::Status { name } => print_json(&deployments.status(&name)?),
            DeployCommand::Predict {
                name,
                entries,
                request,
                features,
            } => print_json(
                &deployments
                    .predict(
                        &name,
                        predict_request(&entries, request.as_deref(), features)?,
                    )
                    .await?,
            ),
        }
    }
    .await;
    deployments.close().await;
    result
}

async fn run_remote(command: DeployCommand, remote: &Remote) -> anyhow::Result<()> {
    let value = match command {
        DeployCommand::Apply { file } => {
            let spec = read_spec(&file)?;
            remote
                .json(remote.request(Method::POST, "/v1/deployments").json(&spec))
                .await?
        }
        DeployCommand::List => {
            remote
                .json(remote.request(Method::GET, "/v1/deployments"))
                .await?
        }
        DeployCommand::Status { name } => {
            remote
                .json(remote.request(Method::GET, &format!("/v1/deployments/{name}")))
                .await?
        }
        DeployCommand::Delete { name } => {
            remote
                .send(remote.request(Method::DELETE, &format!("/v1/deployments/{name}")))
                .await?;
            eprintln!("deleted deployment {name}");
            return Ok(());
        }
        DeployCommand::Predict {
            name,
            entries,
            request,
            features,
        } => {
            let body = serde_json::json!({
                "entries": parse_entries(&entries)?,
                "request": request.as_deref().map(serde_json::from_str::<serde_json::Value>).transpose()
                    .context("--request is not JSON")?,
                "return_features": features,
            });
            remote
                .json(
                    remote
                        .request(Method::POST, &format!("/v1/deployments/{name}/predict"))
                        .json(&body),
                )
                .await?
        }
    };
    print_json(&value)
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
