//! The authorisation walk: every route of the OpenAPI document, the V2 protocol and gRPC
//! refuses an anonymous caller and a caller without the scope it needs, and lets the right key
//! through. What each route needs is written out here again, independently of the server's
//! own table, so a route the table forgets or misfiles fails this test.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use kairos_auth::{KeySpec, Keys, Scope};
use kairos_serve::{Access, AccessPolicy};
use kairos_store::{FeatureStore, StoreConfig};
use tower::ServiceExt;
use utoipa::OpenApi;

struct Server {
    app: Router,
    admin: String,
    reader: String,
    writer: String,
    /// read and write, limited to feature group `mine` and deployment `mine`.
    limited: String,
    _dir: tempfile::TempDir,
}

async fn server(policy: AccessPolicy, with_keys: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = FeatureStore::open(StoreConfig {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .await
    .unwrap();
    let keys = Keys::load(store.catalog()).unwrap();
    let issue = |scopes: &[Scope], limited: bool| {
        if !with_keys {
            return String::new();
        }
        let mine = limited.then(|| vec!["mine".to_string()]);
        let spec = KeySpec {
            name: "walk".into(),
            scopes: scopes.to_vec(),
            feature_groups: mine.clone(),
            deployments: mine,
        };
        keys.create(store.catalog(), spec).unwrap().token
    };
    let admin = issue(&[Scope::Admin], false);
    let reader = issue(&[Scope::Read], false);
    let writer = issue(&[Scope::Write], false);
    let limited = issue(&[Scope::Read, Scope::Write], true);
    let deployments = Arc::new(kairos_deploy::Deployments::new(store.clone()).unwrap());
    let pipelines = Arc::new(kairos_pipeline::Pipelines::new(store.clone()));
    let monitors = kairos_monitor::Monitors::new(deployments.clone());
    let recommenders = kairos_recommend::Recommenders::new(store.clone());
    let access = Arc::new(Access::new(store, policy, None).unwrap());
    let app = kairos_serve::router(pipelines, deployments, monitors, recommenders, access);
    Server {
        app,
        admin,
        reader,
        writer,
        limited,
        _dir: dir,
    }
}

/// The scope a route needs, as the README's security section states it; `None` for the open
/// probes.
fn needed(method: &Method, path: &str) -> Option<Scope> {
    const OPEN: &[&str] = &[
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/v2/health/live",
        "/v2/health/ready",
    ];
    const READ_POSTS: &[&str] = &[
        "/online",
        "/nearest",
        "/vectors",
        "/predict",
        "/recommend",
        "/infer",
    ];
    const WRITE_POSTS: &[&str] = &["/rows", "/events", "/interactions"];
    if OPEN.contains(&path) {
        return None;
    }
    if path.starts_with("/v1/auth") {
        return Some(Scope::Admin);
    }
    match *method {
        Method::GET => Some(Scope::Read),
        Method::POST if READ_POSTS.iter().any(|s| path.ends_with(s)) => Some(Scope::Read),
        Method::POST if WRITE_POSTS.iter().any(|s| path.ends_with(s)) => Some(Scope::Write),
        _ => Some(Scope::Admin),
    }
}

/// Every route: the OpenAPI document's, then the V2 protocol's, with `{…}` parameters filled
/// with `value`.
fn routes(value: &str) -> Vec<(Method, String)> {
    let doc = kairos_serve::ApiDoc::openapi();
    let mut routes = Vec::new();
    for (path, item) in doc.paths.paths {
        let methods = [
            (Method::GET, item.get.is_some()),
            (Method::POST, item.post.is_some()),
            (Method::DELETE, item.delete.is_some()),
            (Method::PUT, item.put.is_some()),
        ];
        for (method, present) in methods {
            if present {
                routes.push((method, path.clone()));
            }
        }
    }
    for path in [
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{m}",
        "/v2/models/{m}/ready",
        "/v2/models/{m}/config",
        "/v2/models/{m}/versions/1",
        "/v2/models/{m}/versions/1/ready",
        "/v2/models/{m}/versions/1/config",
        "/metrics",
    ] {
        routes.push((Method::GET, path.into()));
    }
    for path in ["/v2/models/{m}/infer", "/v2/models/{m}/versions/1/infer"] {
        routes.push((Method::POST, path.into()));
    }
    let fill = |path: &str| {
        let mut out = String::new();
        let mut rest = path;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').unwrap() + start;
            let name = &rest[start + 1..end];
            // Versions and dataset numbers are numbers in every route.
            out.push_str(if name == "version" || name == "td" {
                "1"
            } else {
                value
            });
            rest = &rest[end + 1..];
        }
        out + rest
    };
    routes.into_iter().map(|(m, p)| (m, fill(&p))).collect()
}

async fn status(app: &Router, method: &Method, path: &str, key: Option<&str>) -> StatusCode {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1:7070");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.status()
}

#[tokio::test]
async fn every_route_refuses_anonymous_and_under_scoped_callers() {
    let s = server(AccessPolicy::default(), true).await;
    let routes = routes("other");
    assert!(
        routes.len() > 60,
        "the walk found only {} routes",
        routes.len()
    );
    let keys = [
        (Scope::Admin, &s.admin),
        (Scope::Read, &s.reader),
        (Scope::Write, &s.writer),
    ];
    for (method, path) in &routes {
        let need = needed(method, path);
        let anonymous = status(&s.app, method, path, None).await;
        let forged = status(&s.app, method, path, Some("kairos_0000_0000")).await;
        match need {
            None => {
                assert_ne!(anonymous, StatusCode::UNAUTHORIZED, "{method} {path}");
                continue;
            }
            Some(_) => {
                assert_eq!(
                    anonymous,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} anonymous"
                );
                assert_eq!(
                    forged,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} forged key"
                );
            }
        }
        let need = need.unwrap();
        for (scope, key) in keys {
            let got = status(&s.app, method, path, Some(key)).await;
            let allowed = scope == Scope::Admin || scope == need;
            if allowed {
                assert!(
                    got != StatusCode::UNAUTHORIZED && got != StatusCode::FORBIDDEN,
                    "{method} {path} with a {scope} key: {got}"
                );
            } else {
                assert_eq!(
                    got,
                    StatusCode::FORBIDDEN,
                    "{method} {path} with a {scope} key"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_limited_key_reaches_only_its_own_groups_and_deployments() {
    let s = server(AccessPolicy::default(), true).await;
    let mine = routes("mine");
    for (method, path) in routes("other") {
        let need = needed(&method, &path);
        if need == Some(Scope::Read) || need == Some(Scope::Write) {
            let got = status(&s.app, &method, &path, Some(&s.limited)).await;
            // Server-wide information is any key's to read.
            if path == "/metrics" || path == "/v2" {
                assert_ne!(got, StatusCode::FORBIDDEN, "{method} {path}");
            } else {
                assert_eq!(
                    got,
                    StatusCode::FORBIDDEN,
                    "{method} {path} outside the limits"
                );
            }
        }
    }
    let reached: Vec<_> = mine
        .iter()
        .filter(|(method, path)| {
            matches!(needed(method, path), Some(Scope::Read | Scope::Write))
                && (path.starts_with("/v1/feature-groups/mine")
                    || path.starts_with("/v1/deployments/mine")
                    || path.starts_with("/v1/recommenders/mine")
                    || path.starts_with("/v2/models/mine"))
        })
        .collect();
    assert!(reached.len() > 15, "{reached:?}");
    for (method, path) in reached {
        let got = status(&s.app, method, path, Some(&s.limited)).await;
        assert!(
            got != StatusCode::FORBIDDEN && got != StatusCode::UNAUTHORIZED,
            "{method} {path}: {got}"
        );
    }
}

#[tokio::test]
async fn grpc_calls_need_a_key_and_answer_in_grpc() {
    let s = server(AccessPolicy::default(), true).await;
    let call = |method: &str, key: Option<&str>| {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("/inference.GRPCInferenceService/{method}"))
            .header("host", "127.0.0.1")
            .header("content-type", "application/grpc");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        s.app.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    let grpc_status = |r: &axum::response::Response| {
        r.headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let denied = call("ModelInfer", None).await.unwrap();
    assert_eq!(
        grpc_status(&denied).as_deref(),
        Some("16"),
        "UNAUTHENTICATED"
    );
    let denied = call("ModelMetadata", Some(&s.writer)).await.unwrap();
    assert_eq!(
        grpc_status(&denied).as_deref(),
        Some("7"),
        "PERMISSION_DENIED"
    );
    let live = call("ServerLive", None).await.unwrap();
    assert_ne!(grpc_status(&live).as_deref(), Some("16"));
}

#[tokio::test]
async fn browsers_on_other_sites_and_rebound_names_are_refused() {
    // No keys: the open, loopback-only mode a laptop runs in.
    let s = server(AccessPolicy::default(), false).await;
    let send = |builder: axum::http::request::Builder, body: &'static str| {
        s.app
            .clone()
            .oneshot(builder.body(Body::from(body)).unwrap())
    };
    let post = |path: &str| {
        Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("host", "127.0.0.1:7070")
    };
    // DNS rebinding: the page's own name in Host.
    let rebound = Request::builder()
        .uri("/v1/feature-groups")
        .header("host", "attacker.example:7070");
    assert_eq!(
        send(rebound, "").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // A cross-site page posting without a preflight.
    let cross = post("/v1/feature-groups").header("origin", "https://attacker.example");
    assert_eq!(
        send(cross, "{}").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let fetch = post("/v1/feature-groups").header("sec-fetch-site", "cross-site");
    assert_eq!(
        send(fetch, "{}").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // Simple content types where the route declares another.
    for (path, content_type, body) in [
        ("/v1/feature-groups", "text/plain", "{}"),
        (
            "/v1/feature-groups/g/rows?format=csv",
            "text/plain",
            "a\n1\n",
        ),
        ("/v1/pipelines", "text/plain", "{}"),
        (
            "/v1/deployments",
            "application/x-www-form-urlencoded",
            "a=1",
        ),
        ("/v1/pipelines/p/start", "text/plain", "x"),
    ] {
        let request = post(path).header("content-type", content_type);
        let response = send(request, body).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{path} as {content_type}"
        );
    }
    // The same server answers its own machine's clients.
    let ok = Request::builder()
        .uri("/v1/feature-groups")
        .header("host", "localhost:7070");
    assert_eq!(send(ok, "").await.unwrap().status(), StatusCode::OK);
    let json = post("/v1/feature-groups").header("content-type", "application/json");
    assert_eq!(
        send(json, "{}").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );

    // An operator's allowed name and origin pass.
    let policy = AccessPolicy {
        allowed_hosts: vec!["kairos.internal".into()],
        allowed_origins: vec!["https://console.example".into()],
        insecure: false,
    };
    let s = server(policy, false).await;
    let request = Request::builder()
        .uri("/v1/feature-groups")
        .header("host", "kairos.internal")
        .header("origin", "https://console.example");
    let response = s
        .app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://console.example"
    );
    // Its preflight is answered; another origin's is not allowed.
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/feature-groups")
            .header("host", "kairos.internal")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .body(Body::empty())
            .unwrap()
    };
    let allowed = s
        .app
        .clone()
        .oneshot(preflight("https://console.example"))
        .await
        .unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert!(
        allowed
            .headers()
            .contains_key("access-control-allow-methods")
    );
    let other = s
        .app
        .clone()
        .oneshot(preflight("https://attacker.example"))
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn bodies_over_a_routes_limit_are_refused_declared_or_not() {
    let s = server(AccessPolicy::default(), false).await;
    let post = |length: Option<usize>, body: Vec<u8>| {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/v1/feature-groups")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json");
        if let Some(n) = length {
            request = request.header("content-length", n.to_string());
        }
        s.app
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
    };
    // Declared: refused before any of it is read (the body here is empty).
    let declared = post(Some(2 << 30), Vec::new()).await.unwrap();
    assert_eq!(declared.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Not declared: the read stops at the limit of a JSON route (16 MiB).
    let streamed = post(None, vec![b' '; 17 << 20]).await.unwrap();
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let small = post(None, b"{}".to_vec()).await.unwrap();
    assert_eq!(
        small.status(),
        StatusCode::BAD_REQUEST,
        "a small body reaches the handler"
    );
}
