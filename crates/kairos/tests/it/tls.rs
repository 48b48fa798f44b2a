//! TLS on the one port: a server with a certificate in its configuration answers HTTPS and
//! gRPC over TLS (HTTP/2 by ALPN), refuses plain HTTP, and the CLI reaches it with `--ca-cert`.
//! Also the connection limits: a client that sends nothing loses its connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kairos serve` with `config` and returns it with the address it announced.
fn serve(data_dir: &Path, config: &Path) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .env("KAIROS_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    std::thread::spawn(move || for _ in lines {});
    let url = line
        .strip_prefix("kairos listening on ")
        .unwrap()
        .to_string();
    (Running(child), url)
}

/// A self-signed certificate for 127.0.0.1 and a `kairos.toml` serving TLS with it, in `dir`;
/// returns the certificate's path (the CA clients trust) and the configuration's.
fn tls_config(dir: &Path) -> (PathBuf, PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let config = dir.join("kairos.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntls = {{ cert = {:?}, key = {:?} }}\n",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
    )
    .unwrap();
    (cert_path, config)
}

#[tokio::test]
async fn https_and_grpc_over_tls_share_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, config) = tls_config(dir.path());
    let (_server, url) = serve(&dir.path().join("data"), &config);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client.get(format!("{url}/v2/health/ready")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "never ready over TLS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let groups = client
        .get(format!("{url}/v1/feature-groups"))
        .send()
        .await
        .unwrap();
    assert_eq!(groups.status(), 200);
    assert_eq!(
        groups.version(),
        reqwest::Version::HTTP_2,
        "ALPN chose HTTP/2"
    );

    // gRPC over the same TLS port: ServerLive, one empty message in gRPC's framing.
    let live = client
        .post(format!("{url}/inference.GRPCInferenceService/ServerLive"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    // ServerLiveResponse { live: true }: field 1, varint 1.
    assert_eq!(
        live.bytes().await.unwrap().as_ref(),
        &[0, 0, 0, 0, 2, 0x08, 0x01]
    );

    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(url.replace("https://", "http://") + "/healthz")
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // The CLI with the CA certificate, and without it.
    let cli = |ca: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kairos"));
        command.args(["--url", &url]);
        if let Some(ca) = ca {
            command.arg("--ca-cert").arg(ca);
        }
        command
            .args(["fg", "list"])
            .env("KAIROS_LOG", "warn")
            .output()
            .unwrap()
    };
    let trusted = cli(Some(&cert));
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(
        !cli(None).status.success(),
        "an unknown certificate is not trusted"
    );
}

/// NVIDIA's tritonclient over HTTPS and gRPC with TLS, sending the API key as a header. Skipped
/// where tritonclient is not installed, unless `KAIROS_REQUIRE_INTEROP=1` (as in CI).
#[tokio::test]
async fn tritonclient_reaches_a_server_with_tls_and_keys() {
    if !crate::deployments::tritonclient_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (cert, config) = tls_config(dir.path());
    let issued = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .arg("--data-dir")
        .arg(&data)
        .args(["auth", "create", "--name", "triton", "--scope", "read"])
        .output()
        .unwrap();
    assert!(issued.status.success());
    let issued: serde_json::Value = serde_json::from_slice(&issued.stdout).unwrap();
    let token = issued["token"].as_str().unwrap().to_string();
    let (_server, url) = serve(&data, &config);
    let address = url.trim_start_matches("https://").to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tritonclient_tls_check.py");
    let run = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(address)
            .arg(cert)
            .arg(token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn a_server_with_unreadable_tls_files_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kairos.toml");
    std::fs::write(
        &config,
        "[server]\ntls = { cert = \"/nonexistent.pem\", key = \"/nonexistent.key\" }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.tls.cert"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn silent_and_slow_clients_lose_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kairos.toml");
    std::fs::write(
        &config,
        "[server]\nheader_timeout_secs = 1\nmax_connections = 4\n",
    )
    .unwrap();
    let (_server, url) = serve(&dir.path().join("data"), &config);
    let addr = url.strip_prefix("http://").unwrap().to_string();
    let closed_within = |mut stream: std::net::TcpStream, limit: Duration| {
        stream.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 64];
        let started = Instant::now();
        // The server closes (0 bytes, or a reset), or answers 408, before the limit.
        match stream.read(&mut buf) {
            Ok(n) => started.elapsed() < limit && (n == 0 || buf[..n].starts_with(b"HTTP/1.1 4")),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };
    // A connection that never sends a byte.
    let silent = std::net::TcpStream::connect(&addr).unwrap();
    assert!(
        closed_within(silent, Duration::from_secs(5)),
        "a silent client kept its connection"
    );
    // Headers that trickle in and never end.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    assert!(
        closed_within(slow, Duration::from_secs(5)),
        "slow headers kept their connection"
    );
    // Past the cap, connections are closed as they arrive, and the server still answers once
    // they are gone.
    let held: Vec<_> = (0..4)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let extra = std::net::TcpStream::connect(&addr).unwrap();
    assert!(
        closed_within(extra, Duration::from_secs(2)),
        "a connection past the cap was kept"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server stopped answering: {answer}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
