//! Untyped requests to a server, for the benchmarks' load generators, which send bodies of
//! their own making: built here, sent on the client's connections, answered as JSON. The
//! commands go through the typed client ([`kairos_client::Client`]).

use reqwest::{Method, RequestBuilder, Response};

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
}
