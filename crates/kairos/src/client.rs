//! The client the commands run on: in process on the data dir, or the server at `--url`.

use anyhow::Context;
use kairos_client::{Client, Embedded, Remote, RemoteOptions};

use crate::config::Config;

/// The server at `url`, or else the store the configuration names, opened in this process.
pub async fn open(config: &Config, url: Option<&str>) -> anyhow::Result<Client> {
    Ok(match url {
        Some(url) => Client::Remote(Remote::connect(url, &remote_options(config)?)?),
        None => Client::Embedded(Embedded::open(config.store.clone()).await?),
    })
}

/// How to reach a server: the configured API key (`--api-key`, `KAIROS_API_KEY` or
/// `client.api_key`) and CA certificate (`--ca-cert`, `KAIROS_CA_CERT` or `client.ca_cert`).
pub fn remote_options(config: &Config) -> anyhow::Result<RemoteOptions> {
    let ca_cert_pem = match &config.client.ca_cert {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?,
        ),
        None => None,
    };
    Ok(RemoteOptions {
        api_key: config.client.api_key.clone(),
        ca_cert_pem,
    })
}
