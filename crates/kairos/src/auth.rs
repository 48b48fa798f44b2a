//! `kairos auth …`: API keys, in the data dir's catalog or through a server (`--url`, with an
//! admin key). A server reloads its keys every few seconds, so a key made or revoked here on
//! its data dir takes effect there too.

use anyhow::Context;
use clap::Subcommand;
use kairos_auth::{KeySpec, Keys, Scope};

use crate::config::Config;
use crate::fg::print_json;

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Issue a key. Its token is printed once; the catalog keeps only a digest of it.
    Create {
        /// Who or what holds the key, for listings.
        #[arg(long)]
        name: String,
        /// read (reads, predictions, recommendations), write (inserts, pushes, interactions)
        /// or admin (definitions, deletes, keys; includes both others). Repeat for several.
        #[arg(long = "scope", value_parser = parse_scope, required = true)]
        scopes: Vec<Scope>,
        /// Limit the key to this feature group (repeat for several).
        #[arg(long = "feature-group")]
        feature_groups: Vec<String>,
        /// Limit the key to this deployment or recommender (repeat for several).
        #[arg(long = "deployment")]
        deployments: Vec<String>,
    },
    /// Every key, revoked ones too (never their secrets).
    List,
    /// Revoke a key for good, by its id.
    Revoke { id: String },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    match s {
        "read" => Ok(Scope::Read),
        "write" => Ok(Scope::Write),
        "admin" => Ok(Scope::Admin),
        other => Err(format!("expected read, write or admin, got '{other}'")),
    }
}

pub async fn run(command: AuthCommand, config: &Config, url: Option<&str>) -> anyhow::Result<()> {
    let issued = match url {
        Some(url) => {
            let client = crate::client::open(config, Some(url)).await?;
            match command {
                AuthCommand::Create { .. } => client.create_key(&spec(command)).await?,
                AuthCommand::List => return print_json(&client.list_keys().await?),
                AuthCommand::Revoke { id } => return print_json(&client.revoke_key(&id).await?),
            }
        }
        // Only the catalog, not the stores: keys are made on the data dir of a server that is
        // running (it reloads them), and the stores are that server's to hold.
        None => {
            let data_dir = &config.store.data_dir;
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("cannot create {}", data_dir.display()))?;
            let catalog = kairos_catalog::open(config.store.catalog.url.as_deref(), data_dir)?;
            let keys = Keys::load(catalog.as_ref())?;
            match command {
                AuthCommand::Create { .. } => keys.create(catalog.as_ref(), spec(command))?,
                AuthCommand::List => return print_json(&keys.list()),
                AuthCommand::Revoke { id } => {
                    return print_json(&keys.revoke(catalog.as_ref(), &id)?);
                }
            }
        }
    };
    print_json(&issued)?;
    eprintln!("Keep the token: it is not shown again.");
    Ok(())
}

fn spec(command: AuthCommand) -> KeySpec {
    let AuthCommand::Create {
        name,
        scopes,
        feature_groups,
        deployments,
    } = command
    else {
        unreachable!("only create has a definition")
    };
    let limit = |names: Vec<String>| (!names.is_empty()).then_some(names);
    KeySpec {
        name,
        scopes,
        feature_groups: limit(feature_groups),
        deployments: limit(deployments),
    }
}
