//! The REST fuzzer: seeded malformed requests to every route of a running server — bodies of
//! random bytes, cut-off and mistyped JSON, extreme numbers, deep nesting, wrong content types,
//! odd query strings and path names. After each: no 5xx but 503 (busy or loading is an answer),
//! the process alive, and when the request was refused (4xx), nothing changed: every listing and
//! every group's log end are as before. At the end `check` is clean on the group it hammered.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::server::Server;

const REQUESTS_PER_ROUTE: usize = 24;

/// What the server holds, as the API lists it.
async fn state(client: &Client, url: &str) -> Vec<String> {
    let mut listed = Vec::new();
    for path in [
        "/v1/feature-groups",
        "/v1/feature-views",
        "/v1/pipelines",
        "/v1/models",
        "/v1/deployments",
        "/v1/monitors",
        "/v1/recommenders",
        "/v1/auth/keys",
        "/v1/feature-groups/cards",
    ] {
        let text = client
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("the server answers")
            .text()
            .await
            .unwrap();
        listed.push(text);
    }
    listed
}

/// A body meant to break a parser.
fn malformed_body(rng: &mut StdRng) -> (Option<&'static str>, Vec<u8>) {
    let json = Some("application/json");
    let deep = |open: &str, close: &str, n: usize| format!("{}{}", open.repeat(n), close.repeat(n));
    match rng.random_range(0..14) {
        0 => (
            json,
            (0..rng.random_range(0..256))
                .map(|_| rng.random())
                .collect(),
        ),
        1 => (json, b"{\"name\": \"x\", \"columns\": [".to_vec()),
        2 => (json, deep("[", "]", 10_000).into_bytes()),
        3 => (json, deep("{\"a\":", "}", 5_000).into_bytes()),
        4 => (
            json,
            b"{\"name\": 1e999, \"entries\": [1e999, -0, 18446744073709551616]}".to_vec(),
        ),
        5 => (
            json,
            json!({"name": "x".repeat(10_000), "entries": "nope"})
                .to_string()
                .into_bytes(),
        ),
        6 => (json, b"{\"name\": \"a\", \"name\": \"b\"}".to_vec()),
        7 => (
            json,
            json!({"entries": [{"cc_num": "NaN"}, [], null, {"cc_num": 1.5}]})
                .to_string()
                .into_bytes(),
        ),
        8 => (Some("text/csv"), b"cc_num,ts,cc_num\n1,2,3\n".to_vec()),
        9 => (
            Some("text/csv"),
            b"cc_num,ts,amount\n1,99999999999999999999,NaN\n".to_vec(),
        ),
        10 => (
            Some("application/vnd.apache.arrow.stream"),
            vec![0xFF, 0xFF, 0xFF, 0xFF, 0xF0, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0],
        ),
        11 => (
            Some("application/vnd.apache.parquet"),
            b"PAR1\x00\x00\x00\x00PAR1".to_vec(),
        ),
        12 => (Some("text/plain"), b"{}".to_vec()),
        _ => (None, Vec::new()),
    }
}

fn odd_name(rng: &mut StdRng) -> String {
    let names = [
        "cards",
        "nope",
        "..%2F..%2Fetc",
        "%00",
        "a%20b",
        "x",
        "cards%2Fv1",
    ];
    let name = names[rng.random_range(0..names.len())];
    if rng.random_bool(0.1) {
        "n".repeat(2_000)
    } else {
        name.to_string()
    }
}

fn odd_query(rng: &mut StdRng) -> &'static str {
    let queries = [
        "",
        "?version=0",
        "?version=99999999999",
        "?version=-1",
        "?format=nope",
        "?start=1e300&end=-9223372036854775808",
        "?as_of=not-a-time",
        "?wait=later",
        "?producer=p&after=18446744073709551616",
        "?cc_num=4000123412341234&cc_num=1",
    ];
    queries[rng.random_range(0..queries.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_to_every_route_change_nothing_and_crash_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path()).await;
    let url = server.url.clone();
    // A fresh connection per request: a refusal before the body is read ends its connection
    // (hyper will not read a body nobody wants), and a pooled client could pick that
    // connection up again as it closes.
    let client = Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let group = json!({
        "name": "cards",
        "columns": [
            {"name": "cc_num", "type": "int64"},
            {"name": "ts", "type": "timestamp"},
            {"name": "amount", "type": "float64"}
        ],
        "primary_key": ["cc_num"],
        "event_time": "ts"
    });
    let created = client
        .post(format!("{url}/v1/feature-groups"))
        .json(&group)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let inserted = client
        .post(format!("{url}/v1/feature-groups/cards/rows?wait=online"))
        .header("content-type", "text/csv")
        .body("cc_num,ts,amount\n1,2024-05-01T10:00:00Z,5\n2,2024-05-01T10:01:00Z,6\n")
        .send()
        .await
        .unwrap();
    assert_eq!(inserted.status(), StatusCode::OK);
    // Both stores caught up, so the group's positions stay put from here.
    let settled = client
        .get(format!("{url}/v1/feature-groups/cards/check"))
        .send()
        .await;
    assert_eq!(settled.unwrap().status(), StatusCode::OK);

    let doc = kairos_serve::ApiDoc::openapi();
    let mut routes = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, present) in [
            (Method::GET, item.get.is_some()),
            (Method::POST, item.post.is_some()),
            (Method::DELETE, item.delete.is_some()),
        ] {
            if present {
                routes.push((method, path.clone()));
            }
        }
    }
    routes.push((Method::POST, "/v2/models/{name}/infer".into()));
    let mut rng = StdRng::seed_from_u64(18);
    let mut before = state(&client, &url).await;
    let (mut sent, mut refused) = (0, 0);
    for (method, template) in &routes {
        for _ in 0..REQUESTS_PER_ROUTE {
            let mut path = String::new();
            let mut rest = template.as_str();
            while let Some(start) = rest.find('{') {
                path.push_str(&rest[..start]);
                let end = rest[start..].find('}').unwrap() + start;
                let name = odd_name(&mut rng);
                // A delete that succeeds is no refusal; the group under test stays.
                let name = if *method == Method::DELETE && name == "cards" {
                    "nope".to_string()
                } else {
                    name
                };
                path.push_str(&name);
                rest = &rest[end + 1..];
            }
            path.push_str(rest);
            path.push_str(odd_query(&mut rng));
            let (content_type, body) = malformed_body(&mut rng);
            let mut request = client.request(method.clone(), format!("{url}{path}"));
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let response = request.body(body.clone()).send().await;
            let response = response.unwrap_or_else(|e| {
                panic!("{method} {path}: no answer ({e}); the server died or hung")
            });
            sent += 1;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            assert!(
                !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
                "{method} {path} ({content_type:?}, {} bytes): {status} {text}",
                body.len()
            );
            let after = state(&client, &url).await;
            if status.is_client_error() {
                refused += 1;
                assert_eq!(
                    before, after,
                    "a refused {method} {path} changed the state: {text}"
                );
            }
            before = after;
        }
    }
    eprintln!(
        "REST fuzzer: {sent} requests over {} routes, {refused} refused",
        routes.len()
    );
    assert!(sent > 1000, "only {sent} requests");
    assert!(
        refused > sent / 2,
        "{refused} of {sent} refused: the fuzzer is not malformed enough"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
    let check: Value = client
        .get(format!("{url}/v1/feature-groups/cards/check"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(check["clean"], true, "{check}");
    server.stop();
}
