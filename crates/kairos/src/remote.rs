//! The CLI's untyped requests to a server (`--url`), for the commands not yet on the typed
//! client ([`kairos_client::Client`]): requests built here, sent on the client's connections,
//! answered as JSON.

use bytes::Bytes;
use reqwest::{Method, RequestBuilder, Response};

use crate::config::Config;

/// A client of the server at `url`, with the configured API key and CA certificate
/// ([`crate::client::remote_options`]).
pub fn connect(url: &str, config: &Config) -> anyhow::Result<Remote> {
    let options = crate::client::remote_options(config)?;
    Ok(Remote(kairos_client::Remote::connect(url, &options)?))
}

/// A server's REST API, untyped.
#[derive(Debug, Clone)]
pub struct Remote(kairos_client::Remote);

impl Remote {
    /// A client of the server at `base` with no key and the system's CA certificates.
    pub fn new(base: &str) -> Self {
        let options = kairos_client::RemoteOptions::default();
        Remote(kairos_client::Remote::connect(base, &options).expect("no options to refuse"))
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.0.request(method, path)
    }

    /// Sends and turns an error response into an error with the server's message.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        Ok(self.0.send(request).await?)
    }

    pub async fn json(&self, request: RequestBuilder) -> anyhow::Result<serde_json::Value> {
        Ok(self.0.json(request).await?)
    }

    pub async fn bytes(&self, request: RequestBuilder) -> anyhow::Result<Bytes> {
        Ok(self.0.bytes(request).await?)
    }
}
