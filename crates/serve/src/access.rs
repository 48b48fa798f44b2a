//! The gate every routed request passes, in one place: the `Host` a browser was pointed at, the
//! `Origin` it comes from, the content type the route declares, the caller's key and the scope
//! the route needs. [`rule`] maps every route to what it needs; a route it does not know needs
//! `admin`, so a forgotten route fails closed.
//!
//! A refusal never reaches a handler, so it changes nothing. It is answered in the shape of the
//! route's protocol (the `/v1` error body, the V2 `{"error"}`, or a gRPC status) and counted on
//! `/metrics` by reason.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kairos_auth::{Denial, Keys, Need, Principal, Scope, Target};
use kairos_store::FeatureStore;

use crate::error::ApiError;
use crate::telemetry;

/// Who may reach the server from where: the operator's settings.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// Host names (no port) that requests may be addressed to, besides the loopback names and
    /// the listen address; `*` allows any. Refusing the others defeats DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`https://console.example.com`) allowed to call the API; CORS is answered
    /// for them and for nobody else.
    pub allowed_origins: Vec<String>,
    /// Serve callers from other machines even while no API key is configured.
    pub insecure: bool,
}

/// The most bytes a JSON body may have (definitions, lookups, predictions).
const JSON_LIMIT: usize = 16 << 20;
/// What a route without a body may still be sent.
const EMPTY_LIMIT: usize = 64 << 10;

/// The access state of a running server: the keys, and the policy it was started with.
#[derive(Debug)]
pub struct Access {
    pub(crate) keys: Keys,
    pub(crate) store: FeatureStore,
    policy: AccessPolicy,
    /// Request bodies being read at once, in KiB: four of the largest batch. A body reserves
    /// its declared size (or its route's limit) before it is read, so concurrent uploads
    /// cannot take the memory.
    buffered: Arc<tokio::sync::Semaphore>,
    max_batch_bytes: usize,
    /// Lower-case host names requests may name, port left off.
    hosts: Vec<String>,
    any_host: bool,
}

impl Access {
    /// Reads the keys from the catalog again (one was made or revoked elsewhere).
    pub(crate) fn reload_keys(&self) -> Result<(), String> {
        self.keys
            .reload(self.store.catalog())
            .map_err(|e| format!("cannot reload the API keys: {e}"))
    }

    /// Loads the keys from the store's catalog. `listen` is the bound address, whose host is
    /// always allowed.
    pub fn new(
        store: FeatureStore,
        policy: AccessPolicy,
        listen: Option<SocketAddr>,
    ) -> Result<Access, kairos_auth::AuthError> {
        let keys = Keys::load(store.catalog())?;
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|h| h.to_string())
            .collect();
        if let Some(addr) = listen.filter(|a| !a.ip().is_unspecified()) {
            hosts.push(addr.ip().to_string());
        }
        hosts.extend(
            policy
                .allowed_hosts
                .iter()
                .filter(|h| *h != "*")
                .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase()),
        );
        let any_host = policy.allowed_hosts.iter().any(|h| h == "*");
        let max_batch_bytes = store.config().max_batch_bytes;
        let buffered_kib = (4 * max_batch_bytes / 1024).clamp(1, u32::MAX as usize >> 1);
        Ok(Access {
            keys,
            store,
            policy,
            buffered: Arc::new(tokio::sync::Semaphore::new(buffered_kib)),
            max_batch_bytes,
            hosts,
            any_host,
        })
    }

    /// Whether callers need a key.
    pub fn enforced(&self) -> bool {
        self.keys.enforced()
    }

    /// CORS for the allowed browser origins (preflights answered, responses marked), or none
    /// when no origin is allowed: then browsers keep other sites from reading any answer.
    pub(crate) fn cors(&self) -> Option<tower_http::cors::CorsLayer> {
        use tower_http::cors::{AllowOrigin, CorsLayer};
        let origins: Vec<HeaderValue> = self
            .policy
            .allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        (!origins.is_empty()).then(|| {
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        })
    }

    /// Refuses to serve other machines with no key configured (Redis's protected mode).
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), String> {
        if addr.ip().is_loopback() || self.policy.insecure || self.enforced() {
            return Ok(());
        }
        Err(format!(
            "refusing to listen on {addr}: no API key is configured, so anyone who can reach this \
             address could read and change everything. Create a key first (`kairos auth create \
             --name admin --scope admin`), listen on a loopback address, or pass --insecure"
        ))
    }

    fn host_allowed(&self, headers: &HeaderMap, request: &Request) -> bool {
        if self.any_host {
            return true;
        }
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()));
        let Some(authority) = authority else {
            // HTTP/1.0 without a Host: no browser sends that.
            return true;
        };
        let host = strip_port(authority).to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let allowed = |origin: &str| self.policy.allowed_origins.iter().any(|o| o == origin);
        match headers.get(header::ORIGIN).map(|o| o.to_str()) {
            Some(Ok(origin)) => allowed(origin),
            Some(Err(_)) => false,
            // Without an Origin, a browser still says where a request comes from.
            None => !matches!(
                headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()),
                Some("cross-site" | "same-site")
            ),
        }
    }
}

/// `host:port`, `[v6]:port` or `host` → the host.
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// What a route's body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// No body is read.
    Empty,
    /// `application/json`.
    Json,
    /// A batch of rows: CSV, JSON lines, Parquet or Arrow IPC, by Content-Type (or `?format=`
    /// with no Content-Type or `application/octet-stream`).
    Batch,
    /// Stream events: JSON lines or CSV, as the stream's source says.
    Events,
    /// `multipart/form-data` (a model's definition and artifact).
    Multipart,
    /// A V2 inference request: JSON, or JSON followed by binary tensors.
    Inference,
    /// gRPC's own framing.
    Grpc,
}

impl BodyKind {
    /// The most bytes a body of this kind may have; `None` for gRPC, whose messages tonic
    /// limits itself.
    fn limit(self, max_batch_bytes: usize) -> Option<usize> {
        match self {
            BodyKind::Empty => Some(EMPTY_LIMIT),
            BodyKind::Json => Some(JSON_LIMIT.min(max_batch_bytes)),
            BodyKind::Batch | BodyKind::Events | BodyKind::Multipart | BodyKind::Inference => {
                Some(max_batch_bytes)
            }
            BodyKind::Grpc => None,
        }
    }
}

/// What a route needs: a scope over a target (none for the open probes), and its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule<'a> {
    pub need: Option<Need<'a>>,
    pub body: BodyKind,
}

/// The one map from a route to what it needs. `param` reads the route's path parameters.
pub(crate) fn rule<'a>(
    method: &Method,
    route: &str,
    uri_path: &'a str,
    param: impl Fn(&str) -> Option<&'a str>,
) -> Rule<'a> {
    use BodyKind::*;
    use Scope::*;
    let open = |body| Rule { need: None, body };
    let needs = |scope, target, body| Rule {
        need: Some(Need::new(scope, target)),
        body,
    };
    let group = || Target::FeatureGroup(param("name").unwrap_or_default());
    let deployment = |p| Target::Deployment(param(p).unwrap_or_default());
    let defs = Target::Definitions;
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let delete = method == Method::DELETE;
    match route {
        "/healthz" | "/readyz" | "/openapi.json" | "/v2/health/live" | "/v2/health/ready"
            if get =>
        {
            open(Empty)
        }
        "/metrics" | "/v2" if get => needs(Read, Target::Server, Empty),

        "/v1/auth/keys" if post => needs(Admin, defs, Json),
        "/v1/auth/keys" if get => needs(Admin, defs, Empty),
        "/v1/auth/keys/{id}" if delete => needs(Admin, defs, Empty),

        "/v1/feature-groups" if post => needs(Admin, defs, Json),
        "/v1/feature-groups" if get => needs(Read, defs, Empty),
        "/v1/feature-groups/{name}" if get => needs(Read, group(), Empty),
        "/v1/feature-groups/{name}" if delete => needs(Admin, group(), Empty),
        "/v1/feature-groups/{name}/rows" if post => needs(Write, group(), Batch),
        "/v1/feature-groups/{name}/online" if get => needs(Read, group(), Empty),
        "/v1/feature-groups/{name}/online" | "/v1/feature-groups/{name}/nearest" if post => {
            needs(Read, group(), Json)
        }
        "/v1/feature-groups/{name}/offline" | "/v1/feature-groups/{name}/check" if get => {
            needs(Read, group(), Empty)
        }
        "/v1/feature-groups/{name}/compact" if post => needs(Admin, group(), Empty),

        "/v1/feature-views" | "/v1/feature-views/{name}/training-datasets" if post => {
            needs(Admin, defs, Json)
        }
        "/v1/feature-views"
        | "/v1/feature-views/{name}"
        | "/v1/feature-views/{name}/training-datasets/{td}"
        | "/v1/feature-views/{name}/training-datasets/{td}/data"
            if get =>
        {
            needs(Read, defs, Empty)
        }
        "/v1/feature-views/{name}" if delete => needs(Admin, defs, Empty),
        "/v1/feature-views/{name}/vectors" if post => needs(Read, defs, Json),

        "/v1/train" if post => needs(Admin, defs, Json),
        "/v1/models" if post => needs(Admin, defs, Multipart),
        "/v1/models" | "/v1/models/{name}" if get => needs(Read, defs, Empty),
        "/v1/models/{name}/versions/{version}" if delete => needs(Admin, defs, Empty),

        "/v1/pipelines" if post => needs(Admin, defs, Json),
        "/v1/pipelines" | "/v1/pipelines/{name}" if get => needs(Read, defs, Empty),
        "/v1/pipelines/{name}/start" | "/v1/pipelines/{name}/stop" if post => {
            needs(Admin, defs, Empty)
        }
        "/v1/streams/{stream}/events" if post => needs(Write, defs, Events),

        "/v1/deployments" if post => needs(Admin, defs, Json),
        "/v1/deployments" if get => needs(Read, defs, Empty),
        "/v1/deployments/{name}" | "/v1/deployments/{name}/monitoring/report" if get => {
            needs(Read, deployment("name"), Empty)
        }
        "/v1/deployments/{name}" if delete => needs(Admin, deployment("name"), Empty),
        "/v1/deployments/{name}/predict" if post => needs(Read, deployment("name"), Json),

        "/v1/monitors" if post => needs(Admin, defs, Json),
        "/v1/monitors" | "/v1/monitors/{name}" | "/v1/monitors/{name}/history" if get => {
            needs(Read, defs, Empty)
        }
        "/v1/monitors/{name}" if delete => needs(Admin, defs, Empty),
        "/v1/monitors/{name}/run" | "/v1/monitors/{name}/retrain" if post => {
            needs(Admin, defs, Empty)
        }

        "/v1/recommenders" if post => needs(Admin, defs, Json),
        "/v1/recommenders" if get => needs(Read, defs, Empty),
        "/v1/recommenders/{name}" if get => needs(Read, deployment("name"), Empty),
        "/v1/recommenders/{name}/recommend" if post => needs(Read, deployment("name"), Json),
        "/v1/recommenders/{name}/interactions" if post => needs(Write, deployment("name"), Json),

        "/v2/models/{model}"
        | "/v2/models/{model}/ready"
        | "/v2/models/{model}/config"
        | "/v2/models/{model}/versions/{version}"
        | "/v2/models/{model}/versions/{version}/ready"
        | "/v2/models/{model}/versions/{version}/config"
            if get =>
        {
            needs(Read, deployment("model"), Empty)
        }
        "/v2/models/{model}/infer" | "/v2/models/{model}/versions/{version}/infer" if post => {
            needs(Read, deployment("model"), Inference)
        }

        // gRPC names its model in the message: the handler checks the deployment itself with
        // the principal this layer hands it (see `grpc::authorize`).
        crate::grpc::ROUTE => match uri_path.rsplit('/').next().unwrap_or_default() {
            "ServerLive" | "ServerReady" => open(Grpc),
            _ => needs(Read, Target::Server, Grpc),
        },

        _ => needs(Admin, defs, Empty),
    }
}

/// Why a request was turned away before its handler.
#[derive(Debug)]
enum Refusal {
    Host,
    Origin,
    /// No key is configured and the caller is on another machine.
    Protected,
    ContentType(String),
    Denied(Denial),
    TooLarge(usize),
    /// Too many bodies are being read at once.
    Busy,
}

impl Refusal {
    fn reason(&self) -> &'static str {
        match self {
            Refusal::Host => "host",
            Refusal::Origin => "origin",
            Refusal::Protected => "protected_mode",
            Refusal::ContentType(_) => "content_type",
            Refusal::Denied(d) => d.code(),
            Refusal::TooLarge(_) => "payload_too_large",
            Refusal::Busy => "busy",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Refusal::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::Denied(d) if d.is_unauthenticated() => StatusCode::UNAUTHORIZED,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Busy => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::Host => "the Host header names no host this server answers to; add it to \
                              server.allowed_hosts"
                .into(),
            Refusal::Origin => "cross-origin requests are refused unless their Origin is in \
                                server.allowed_origins"
                .into(),
            Refusal::Protected => "protected mode: no API key is configured, so only callers on \
                                   this machine are served; create a key or start with --insecure"
                .into(),
            Refusal::ContentType(m) => m.clone(),
            Refusal::Denied(d) => d.to_string(),
            Refusal::TooLarge(limit) => {
                format!("the body is over this route's limit of {limit} bytes; split it")
            }
            Refusal::Busy => "the server is reading as many request bodies as it holds at \
                              once; retry in a moment"
                .into(),
        }
    }

    /// The refusal in the route's protocol.
    fn respond(self, route: &str) -> Response {
        metrics::counter!(telemetry::REFUSED, "reason" => self.reason()).increment(1);
        let (status, message) = (self.status(), self.message());
        let mut response = if route == crate::grpc::ROUTE {
            let status = match status {
                StatusCode::UNAUTHORIZED => tonic::Status::unauthenticated(message),
                StatusCode::UNSUPPORTED_MEDIA_TYPE => tonic::Status::invalid_argument(message),
                StatusCode::PAYLOAD_TOO_LARGE => tonic::Status::resource_exhausted(message),
                StatusCode::SERVICE_UNAVAILABLE => tonic::Status::unavailable(message),
                _ => tonic::Status::permission_denied(message),
            };
            status.into_http::<axum::body::Body>()
        } else if route.starts_with("/v2") {
            crate::v2::V2Error::new(status, message).into_response()
        } else {
            ApiError::new(status, self.reason(), message).into_response()
        };
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The content types a body kind accepts; `None` when the request's is one of them.
fn content_type_refusal(
    kind: BodyKind,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<String> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"));
    let mime = declared.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let mime = mime.as_deref();
    // The types a browser sends cross-site without asking first (no CORS preflight).
    let simple = matches!(
        mime,
        Some("text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data")
    );
    let json = |m: &str| {
        m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
    };
    let ok = match kind {
        BodyKind::Empty | BodyKind::Inference => !simple,
        BodyKind::Json => mime.is_some_and(json),
        BodyKind::Batch => match mime {
            None | Some("application/octet-stream") => {
                query.is_some_and(|q| q.split('&').any(|p| p.starts_with("format=")))
            }
            Some(m) => kairos_types::Format::from_content_type(m).is_some(),
        },
        // The stream's source says the format; a type, when sent, must be one of its formats.
        BodyKind::Events => matches!(
            mime,
            None | Some(
                "application/x-ndjson"
                    | "application/jsonl"
                    | "application/json"
                    | "text/csv"
                    | "application/octet-stream"
            )
        ),
        BodyKind::Multipart => mime == Some("multipart/form-data"),
        BodyKind::Grpc => mime.is_some_and(|m| m.starts_with("application/grpc")),
    };
    if ok {
        return None;
    }
    let expected = match kind {
        BodyKind::Empty | BodyKind::Inference => "no form or text/plain body",
        BodyKind::Json => "application/json",
        BodyKind::Batch => {
            "text/csv, application/x-ndjson, application/vnd.apache.parquet or \
             application/vnd.apache.arrow.stream (or ?format= with application/octet-stream)"
        }
        BodyKind::Events => "application/x-ndjson or text/csv",
        BodyKind::Multipart => "multipart/form-data",
        BodyKind::Grpc => "application/grpc",
    };
    Some(format!(
        "Content-Type: expected {expected}, got '{}'",
        declared.unwrap_or("none")
    ))
}

/// The middleware: checks a routed request and hands its handlers the [`Principal`].
pub(crate) async fn gate(
    State(access): State<Arc<Access>>,
    route: MatchedPath,
    params: RawPathParams,
    mut request: Request,
    next: Next,
) -> Response {
    let route = route.as_str().to_owned();
    let headers = request.headers().clone();
    if !access.host_allowed(&headers, &request) {
        return Refusal::Host.respond(&route);
    }
    if !access.origin_allowed(&headers) {
        return Refusal::Origin.respond(&route);
    }
    let path = request.uri().path().to_owned();
    let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| v);
    let rule = rule(request.method(), &route, &path, param);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("?"));
    let principal = match access.keys.authenticate(authorization) {
        Ok(principal) => principal,
        Err(denial) if rule.need.is_some() => return Refusal::Denied(denial).respond(&route),
        // The open probes answer whatever key comes with them.
        Err(_) => Principal::Open,
    };
    if !access.policy.insecure && !access.enforced() {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if peer.is_some_and(|ip: IpAddr| !ip.is_loopback()) {
            return Refusal::Protected.respond(&route);
        }
    }
    if let Some(need) = rule.need
        && let Err(denial) = principal.check(need)
    {
        tracing::info!(key = principal.key_id(), %route, %denial, "request denied");
        return Refusal::Denied(denial).respond(&route);
    }
    // Only a caller who may use the route learns what body it takes.
    if let Some(message) = content_type_refusal(rule.body, &headers, request.uri().query()) {
        return Refusal::ContentType(message).respond(&route);
    }
    // A declared oversize is refused before a byte of it is read; an undeclared one stops
    // at the limit as it streams in.
    let Some(limit) = rule.body.limit(access.max_batch_bytes) else {
        request.extensions_mut().insert(principal);
        return next.run(request).await;
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Refusal::TooLarge(limit).respond(&route);
    }
    // A body of unknown length may grow to the limit; a route without one reserves nothing.
    let expected = match (declared, rule.body) {
        (Some(n), _) => n,
        (None, BodyKind::Empty) => 0,
        (None, _) => limit,
    };
    let _reserved = if expected > 0 {
        let kib = expected.div_ceil(1024) as u32;
        match access.buffered.clone().try_acquire_many_owned(kib) {
            Ok(permit) => Some(permit),
            Err(_) => return Refusal::Busy.respond(&route),
        }
    } else {
        None
    };
    request.extensions_mut().insert(principal);
    let request =
        request.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, limit)));
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_ports() {
        assert_eq!(strip_port("localhost:7070"), "localhost");
        assert_eq!(strip_port("[::1]:7070"), "::1");
        assert_eq!(strip_port("[::1]"), "::1");
        assert_eq!(strip_port("example.com"), "example.com");
    }

    #[test]
    fn simple_cross_site_types_are_refused_where_a_route_declares_another() {
        let headers = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            h
        };
        let refused =
            |kind, ct: &str, query| content_type_refusal(kind, &headers(ct), query).is_some();
        assert!(refused(BodyKind::Json, "text/plain", None));
        assert!(!refused(
            BodyKind::Json,
            "application/json; charset=utf-8",
            None
        ));
        assert!(refused(BodyKind::Batch, "text/plain", Some("format=csv")));
        assert!(!refused(BodyKind::Batch, "text/csv", None));
        assert!(!refused(
            BodyKind::Batch,
            "application/octet-stream",
            Some("format=csv")
        ));
        assert!(refused(
            BodyKind::Empty,
            "application/x-www-form-urlencoded",
            None
        ));
        assert!(refused(BodyKind::Events, "text/plain", None));
        assert!(!refused(
            BodyKind::Multipart,
            "multipart/form-data; boundary=x",
            None
        ));
        assert!(content_type_refusal(BodyKind::Empty, &HeaderMap::new(), None).is_none());
        assert!(content_type_refusal(BodyKind::Json, &HeaderMap::new(), None).is_some());
    }
}
