//! Shared harness of the end-to-end tests: spawn the real `shiplog` binary on a free
//! loopback port, talk HTTP to it, stop it (SIGTERM or SIGKILL).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};

pub mod faults;
pub mod security;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_shiplog");

pub struct TestServer {
    pub child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    stderr_path: PathBuf,
}

impl TestServer {
    /// Starts `shiplog serve` on 127.0.0.1 with a free port and waits for its URL line.
    pub fn spawn(data_dir: &Path, extra: &[&str]) -> TestServer {
        Self::spawn_env(data_dir, extra, &[])
    }

    pub fn spawn_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> TestServer {
        std::fs::create_dir_all(data_dir).unwrap();
        let stderr_path = data_dir.with_extension(format!("stderr.{}.log", rand_suffix()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(extra)
            .env("SHIPLOG_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn shiplog");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(url) = line.strip_prefix("shiplog listening on ") {
                    let _ = tx.send(url.trim_end_matches('/').to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "shiplog did not start; stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        };
        TestServer {
            child: Some(child),
            url,
            data_dir: data_dir.to_path_buf(),
            stderr_path,
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("shiplog did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::process::id() as u64 * 1000 + N.fetch_add(1, Ordering::Relaxed)
}

/// The file log's segment files in `<data_dir>/log`, oldest first.
pub fn log_segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data_dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments
}

/// A valid event of `kind` with the given source, id and project: the generator the
/// benchmarks use too (`shiplog_bench::sample`).
#[allow(unused_imports)]
pub use shiplog_bench::sample::sample_event as event;

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Runs read-only SQL through `POST /v1/query` and returns the rows (panics on refusal).
pub async fn query(client: &reqwest::Client, url: &str, sql: &str) -> Vec<Vec<serde_json::Value>> {
    let r = client
        .post(format!("{url}/v1/query"))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(status.is_success(), "{sql}: {body}");
    serde_json::from_value(body["rows"].clone()).unwrap()
}

/// Polls a query until it returns at least `n` rows or `timeout` passes (the projection
/// lags about a second behind the log), and returns the last rows.
pub async fn query_until(
    client: &reqwest::Client,
    url: &str,
    sql: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Vec<serde_json::Value>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let rows = query(client, url, sql).await;
        if rows.len() >= n || std::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET url` and the body as text (panics on a transport error).
pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// `GET url` and the body as JSON (panics on a transport or decode error).
pub async fn get_json<T: serde::de::DeserializeOwned>(client: &reqwest::Client, url: &str) -> T {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The action recorder: a script that rule actions run, writing each call's arguments
/// (one per line) to a file of `dir`, and the calls it recorded.
/// A recording script: each call writes its arguments, NUL-separated, to its own file.
pub fn recorder(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let calls = dir.join("calls");
    std::fs::create_dir_all(&calls).unwrap();
    let script = dir.join("rec.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nf='{}'/call.$$\nprintf '%s\\0' \"$@\" > \"$f.tmp\" && mv \"$f.tmp\" \"$f\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, calls)
}

pub fn recorded(dir: &Path) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap();
        let mut args: Vec<String> = bytes
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        args.pop(); // after the last NUL
        out.push(args);
    }
    out
}

/// An external program a test needs: `$env` when set, else the first of `paths` that
/// exists; the test fails with `missing` (how to install it) when there is none.
pub fn required_tool(env: &str, paths: &[&str], missing: &str) -> std::path::PathBuf {
    std::env::var(env)
        .ok()
        .filter(|p| !p.is_empty())
        .into_iter()
        .chain(paths.iter().map(|p| p.to_string()))
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{missing}"))
}
