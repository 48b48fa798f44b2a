//! The CLI's client for a running server (`--url`): the same operations as in process, over
//! the REST API.

use anyhow::{Context, bail};
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response};

use crate::config::Config;

/// How long an idle connection to the server is kept for reuse.
const IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// A client of the server at `url`, sending the configured API key (`--api-key`,
/// `KAIROS_API_KEY` or `client.api_key`) with every request and trusting the configured CA
/// certificate (`--ca-cert`, `KAIROS_CA_CERT` or `client.ca_cert`) beside the system's.
pub fn connect(url: &str, config: &Config) -> anyhow::Result<Remote> {
    // Idle connections are let go before the server would close them (its header timeout,
    // 10 s by default), so a request never races a closing connection.
    let mut builder = reqwest::Client::builder().pool_idle_timeout(IDLE);
    if let Some(key) = &config.client.api_key {
        let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the API key holds characters a header cannot carry")?;
        value.set_sensitive(true);
        builder = builder.default_headers(HeaderMap::from_iter([(AUTHORIZATION, value)]));
    }
    if let Some(path) = &config.client.ca_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    Ok(Remote {
        base: url.trim_end_matches('/').to_string(),
        http: builder.build()?,
    })
}

/// A REST client for one server.
#[derive(Debug, Clone)]
pub struct Remote {
    base: String,
    http: reqwest::Client,
}

impl Remote {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Sends and turns an error response into an error with the server's message.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach kairos at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_string();
        bail!("{status}: {message}")
    }

    pub async fn json(&self, request: RequestBuilder) -> anyhow::Result<serde_json::Value> {
        Ok(self.send(request).await?.json().await?)
    }

    pub async fn bytes(&self, request: RequestBuilder) -> anyhow::Result<Bytes> {
        Ok(self.send(request).await?.bytes().await?)
    }
}
