//! `kairos model …`: the model registry, on the client (in process on the data dir, or the
//! server at `--url`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use kairos_client::{Artifact, Client};

use crate::config::Config;
use crate::fg::print_json;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Register a model: its definition (JSON or TOML: name, framework, signature, metrics,
    /// lineage) and its artifact file become the model's next version.
    Register {
        /// The definition file.
        definition: PathBuf,
        /// The artifact (an ONNX graph, or a model Kairos trained).
        #[arg(long)]
        artifact: PathBuf,
    },
    /// Every version of every model.
    List,
    /// One model version (the latest unless --version).
    Describe {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Delete one model version: its definition and its artifact.
    Delete {
        name: String,
        #[arg(long)]
        version: u32,
    },
}

pub async fn run(command: ModelCommand, config: &Config, url: Option<&str>) -> anyhow::Result<()> {
    let client = crate::client::open(config, url).await?;
    let result = run_on(command, &client).await;
    client.close().await?;
    result
}

async fn run_on(command: ModelCommand, client: &Client) -> anyhow::Result<()> {
    match command {
        ModelCommand::Register {
            definition,
            artifact,
        } => {
            let read = |path: &Path| {
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
            };
            let text = String::from_utf8(read(&definition)?)
                .with_context(|| format!("{} is not UTF-8 text", definition.display()))?;
            let file_name = artifact
                .file_name()
                .and_then(|f| f.to_str())
                .with_context(|| format!("{} has no file name", artifact.display()))?
                .to_owned();
            let artifact = Artifact {
                file_name,
                bytes: read(&artifact)?.into(),
            };
            let model = client
                .register_model(&text, artifact)
                .await
                .with_context(|| definition.display().to_string())?;
            print_json(&model)
        }
        ModelCommand::List => print_json(&client.list_models().await?),
        ModelCommand::Describe { name, version } => {
            print_json(&client.describe_model(&name, version).await?)
        }
        ModelCommand::Delete { name, version } => {
            client.delete_model(&name, version).await?;
            eprintln!("deleted model {name} v{version}");
            Ok(())
        }
    }
}
