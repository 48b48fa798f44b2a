//! How long a change made through one replica takes to act on another: two servers this
//! command starts on one PostgreSQL catalog (or one cluster configuration); an API key made
//! (then revoked) through the first, and the time until the second lets it in (then turns it
//! away); and, when asked, a deployment applied again through the first, and the time until
//! the second serves the new revision (its model loaded from the shared storage).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::StatusCode;
use serde_json::json;

use super::soak::Server;

#[derive(Debug, clap::Args)]
pub struct ReplicasArgs {
    /// The PostgreSQL database both servers keep their catalog in (it must exist).
    #[arg(long, required_unless_present = "config")]
    catalog_url: Option<String>,
    /// A cluster configuration both servers start with (catalog, storage, online store), in
    /// place of --catalog-url.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Also apply this deployment again through the first server, trial by trial (it must
    /// exist, with its model and features, under the configuration).
    #[arg(long, requires = "config")]
    deployment: Option<String>,
    /// Keys made and revoked, one at a time.
    #[arg(long, default_value_t = 30)]
    trials: usize,
}

/// How often the second replica is asked whether the change reached it.
const POLL: Duration = Duration::from_millis(5);
/// A change that has not reached the other replica by then is a failure, not a figure.
const GIVE_UP: Duration = Duration::from_secs(30);

pub async fn run(args: &ReplicasArgs) -> anyhow::Result<()> {
    let config = args.config.as_ref().map(|c| c.display().to_string());
    let env: Vec<(&str, &str)> = match (&args.catalog_url, &config) {
        (_, Some(config)) => vec![("KAIROS_CONFIG", config.as_str())],
        (Some(url), None) => vec![("KAIROS_CATALOG_URL", url.as_str())],
        (None, None) => bail!("give --catalog-url or --config"),
    };
    let (a, b) = (Server::start(&env)?, Server::start(&env)?);
    let client = reqwest::Client::new();
    // The first key, made while the servers are still open on loopback.
    let admin = create_key(&client, &a.url, None, "bench-admin", "admin").await?;
    wait_for(&client, &b.url, None, StatusCode::UNAUTHORIZED).await?;

    let (mut made, mut revoked) = (Vec::new(), Vec::new());
    for trial in 0..args.trials {
        // A replica looks for changes on a tick: each trial starts at another phase of it,
        // evenly spread, so the figures are the distribution a change at any moment sees
        // rather than one phase's.
        let phase = kairos_serve::FOLLOW_EVERY.mul_f64(trial as f64 / args.trials as f64);
        tokio::time::sleep(phase).await;
        let start = Instant::now();
        let key = create_key(
            &client,
            &a.url,
            Some(&admin.token),
            &format!("bench-{trial}"),
            "read",
        )
        .await?;
        wait_for(&client, &b.url, Some(&key.token), StatusCode::OK).await?;
        made.push(start.elapsed());

        tokio::time::sleep(phase).await;
        let start = Instant::now();
        let answer = client
            .delete(format!("{}/v1/auth/keys/{}", a.url, key.id))
            .bearer_auth(&admin.token)
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!("revoking a key answered {}", answer.status());
        }
        wait_for(&client, &b.url, Some(&key.token), StatusCode::UNAUTHORIZED).await?;
        revoked.push(start.elapsed());
    }
    let mut report = json!({
        "trials": args.trials,
        "key_made_on_a_accepted_on_b_ms": summary(&mut made),
        "key_revoked_on_a_refused_on_b_ms": summary(&mut revoked),
        "key_reload_interval_ms": kairos_serve::FOLLOW_EVERY.as_millis(),
    });
    if let Some(name) = &args.deployment {
        let mut served = Vec::new();
        for trial in 0..args.trials {
            let phase = kairos_serve::FOLLOW_EVERY.mul_f64(trial as f64 / args.trials as f64);
            tokio::time::sleep(phase).await;
            served.push(redeploy(&client, &a.url, &b.url, &admin.token, name).await?);
        }
        report["deployment_applied_on_a_served_on_b_ms"] = summary(&mut served);
        eprintln!(
            "a deployment applied again on one replica is served on the other after p50 {:.0} ms, \
             p99 {:.0} ms",
            report["deployment_applied_on_a_served_on_b_ms"]["p50"]
                .as_f64()
                .unwrap_or(0.0),
            report["deployment_applied_on_a_served_on_b_ms"]["p99"]
                .as_f64()
                .unwrap_or(0.0),
        );
    }
    eprintln!(
        "a key made on one replica is accepted on the other after p50 {:.0} ms, p99 {:.0} ms; \
         revoked, refused after p50 {:.0} ms, p99 {:.0} ms",
        report["key_made_on_a_accepted_on_b_ms"]["p50"]
            .as_f64()
            .unwrap_or(0.0),
        report["key_made_on_a_accepted_on_b_ms"]["p99"]
            .as_f64()
            .unwrap_or(0.0),
        report["key_revoked_on_a_refused_on_b_ms"]["p50"]
            .as_f64()
            .unwrap_or(0.0),
        report["key_revoked_on_a_refused_on_b_ms"]["p99"]
            .as_f64()
            .unwrap_or(0.0),
    );
    println!("{report}");
    Ok(())
}

/// Applies deployment `name` again through `a` (a new revision of the same definition) and
/// waits until `b` serves that revision; returns how long that took.
async fn redeploy(
    client: &reqwest::Client,
    a: &str,
    b: &str,
    admin: &str,
    name: &str,
) -> anyhow::Result<Duration> {
    let current: serde_json::Value = client
        .get(format!("{a}/v1/deployments/{name}"))
        .bearer_auth(admin)
        .send()
        .await?
        .json()
        .await?;
    if current.get("revision").is_none() {
        bail!("deployment '{name}' is not there: {current}");
    }
    // The status carries the definition's fields.
    let spec = json!({
        "name": name,
        "model": current["model"],
        "model_version": current["model_version"],
        "threshold": current["threshold"],
        "slo": current["slo"],
        "inference_log": current["inference_log"],
    });
    let start = Instant::now();
    let answer = client
        .post(format!("{a}/v1/deployments"))
        .bearer_auth(admin)
        .json(&spec)
        .send()
        .await?;
    let status = answer.status();
    let applied: serde_json::Value = answer.json().await?;
    if !status.is_success() {
        bail!("applying deployment '{name}' answered {status}: {applied}");
    }
    let revision = applied["revision"].clone();
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let on_b: serde_json::Value = client
            .get(format!("{b}/v1/deployments/{name}"))
            .bearer_auth(admin)
            .send()
            .await?
            .json()
            .await?;
        if on_b["revision"] == revision {
            return Ok(start.elapsed());
        }
        if Instant::now() > deadline {
            bail!("the other replica did not serve revision {revision} within {GIVE_UP:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

struct Key {
    id: String,
    token: String,
}

async fn create_key(
    client: &reqwest::Client,
    url: &str,
    admin: Option<&str>,
    name: &str,
    scope: &str,
) -> anyhow::Result<Key> {
    let mut request = client
        .post(format!("{url}/v1/auth/keys"))
        .json(&json!({ "name": name, "scopes": [scope] }));
    if let Some(admin) = admin {
        request = request.bearer_auth(admin);
    }
    let answer = request.send().await?;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await?;
    if !status.is_success() {
        bail!("making a key answered {status}: {body}");
    }
    let field = |name: &str| {
        body[name]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("the new key's answer has no {name}: {body}"))
    };
    Ok(Key {
        id: field("id")?,
        token: field("token")?,
    })
}

/// Asks `url` with `key` until it answers `expected`.
async fn wait_for(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    expected: StatusCode,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let mut request = client.get(format!("{url}/v1/feature-groups"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if request.send().await?.status() == expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the other replica did not answer {expected} within {GIVE_UP:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// p50, p99 and max in milliseconds.
pub(crate) fn summary(samples: &mut [Duration]) -> serde_json::Value {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e3
    };
    json!({ "p50": at(0.5), "p99": at(0.99), "max": at(1.0) })
}
