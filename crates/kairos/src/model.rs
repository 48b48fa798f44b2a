//! `kairos model …`: the model registry, in process on the data dir, or list, describe and
//! delete against `--url`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use kairos_catalog::Catalog;
use kairos_model::{Artifacts, Model, ModelSpec};
use kairos_store::Storage;

use reqwest::Method;

use crate::config::Config;
use crate::fg::print_json;
use crate::remote::Remote;

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
    if let Some(url) = url {
        return run_remote(command, &crate::remote::connect(url, config)?).await;
    }
    let data_dir = &config.store.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let catalog = kairos_catalog::open(config.store.catalog.url.as_deref(), data_dir)?;
    let artifacts = Artifacts::new(&Storage::open(
        config.store.storage.url.as_deref(),
        data_dir,
    )?);
    match command {
        ModelCommand::Register {
            definition,
            artifact,
        } => print_json(&register(catalog.as_ref(), &artifacts, &definition, &artifact).await?),
        ModelCommand::List => print_json(&catalog.list_models()?),
        ModelCommand::Describe { name, version } => print_json(
            &catalog
                .get_model(&name, version)?
                .with_context(|| not_found(&name, version))?,
        ),
        ModelCommand::Delete { name, version } => {
            if !catalog.delete_model(&name, version)? {
                bail!(not_found(&name, Some(version)));
            }
            artifacts.delete(&name, version).await?;
            eprintln!("deleted model {name} v{version}");
            Ok(())
        }
    }
}

async fn run_remote(command: ModelCommand, remote: &Remote) -> anyhow::Result<()> {
    let value = match command {
        ModelCommand::Register {
            definition,
            artifact,
        } => {
            let read = |path: &Path| {
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
            };
            let file_name = artifact
                .file_name()
                .and_then(|f| f.to_str())
                .with_context(|| format!("{} has no file name", artifact.display()))?
                .to_owned();
            let form = reqwest::multipart::Form::new()
                .part(
                    "definition",
                    reqwest::multipart::Part::bytes(read(&definition)?),
                )
                .part(
                    "artifact",
                    reqwest::multipart::Part::bytes(read(&artifact)?).file_name(file_name),
                );
            remote
                .json(remote.request(Method::POST, "/v1/models").multipart(form))
                .await?
        }
        ModelCommand::List => {
            remote
                .json(remote.request(Method::GET, "/v1/models"))
                .await?
        }
        ModelCommand::Describe { name, version } => {
            let mut request = remote.request(Method::GET, &format!("/v1/models/{name}"));
            if let Some(v) = version {
                request = request.query(&[("version", v)]);
            }
            remote.json(request).await?
        }
        ModelCommand::Delete { name, version } => {
            remote
                .send(remote.request(
                    Method::DELETE,
                    &format!("/v1/models/{name}/versions/{version}"),
                ))
                .await?;
            eprintln!("deleted model {name} v{version}");
            return Ok(());
        }
    };
    print_json(&value)
}

fn not_found(name: &str, version: Option<u32>) -> String {
    match version {
        Some(v) => format!("model '{name}' v{v} not found"),
        None => format!("model '{name}' not found"),
    }
}

/// Reads and checks the definition and registers it with the artifact's bytes.
async fn register(
    catalog: &dyn Catalog,
    artifacts: &Artifacts,
    definition: &Path,
    artifact: &Path,
) -> anyhow::Result<Model> {
    let text = std::fs::read_to_string(definition)
        .with_context(|| format!("cannot read {}", definition.display()))?;
    let mut spec = ModelSpec::parse(&text).with_context(|| definition.display().to_string())?;
    let file_name = artifact
        .file_name()
        .and_then(|f| f.to_str())
        .with_context(|| format!("{} has no file name", artifact.display()))?;
    if spec.artifact.is_empty() {
        spec.artifact = file_name.to_owned();
    }
    let bytes =
        std::fs::read(artifact).with_context(|| format!("cannot read {}", artifact.display()))?;
    Ok(kairos_deploy::training::register(catalog, artifacts, &spec, bytes).await?)
}
