//! Starting and stopping a real `kairos serve` on a free loopback port.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    /// Starts `kairos serve` on `data_dir` and waits until it is ready (deployments loaded).
    pub async fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[]).await
    }

    /// Like [`Server::start`], with environment variables set (crash points, say).
    pub async fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kairos"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .envs(env.iter().copied())
            .env("KAIROS_LOG", "warn")
            .env("KAIROS_MAX_BATCH_BYTES", (8 << 20).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kairos binary starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let url = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let line = lines
                .next()
                .expect("kairos prints its address")
                .expect("readable stdout");
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            line.strip_prefix("kairos listening on ")
                .expect("address line")
                .to_string()
        })
        .await
        .unwrap();
        // From here on, Drop reaps the child whatever happens.
        let server = Server { child, url };
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client
                .get(format!("{}/v2/health/ready", server.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("kairos did not become ready at {}", server.url);
    }

    /// What the server's `/metrics` says now.
    pub async fn metrics(&self) -> String {
        let response = reqwest::get(format!("{}/metrics", self.url)).await.unwrap();
        response.text().await.unwrap()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }

    /// Waits for the process to end by itself (a crash point aborting it).
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "kairos exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
