//! The Python example client (nats-py, pinned) against the service in its default JetStream
//! mode. The virtual environment lives under `target/python-venv` and is reused across runs.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn venv() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/python-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(made.success(), "python3 -m venv failed");
    }
    let installed = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(root.join("examples/python/requirements.txt"))
        .status()
        .expect("pip runs");
    assert!(installed.success(), "pip install failed");
    python
}

#[tokio::test]
async fn python_client_publishes_like_the_stack_and_reads_both_decisions() {
    let python = tokio::task::spawn_blocking(venv).await.unwrap();
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let service = Service::start(&server.url(), &dir.path().join("data"), &[]);
    service.ready(&client).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/rl_client.py");
    let url = server.url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(["--url", &url, "--symbol", "ethusdt", "--timeout", "20"])
            .output()
            .expect("client runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("RL_META_STRATEGY_DECISION: "), "{stdout}");
    assert!(stdout.contains("RL_POSITION_SIZING_DECISION: "), "{stdout}");
    assert!(stdout.contains("\"symbol\": \"ETHUSDT\""), "{stdout}");
    let s = stats_until(&client, |s| s["counters"]["updates"] == 2).await;
    assert_eq!(total(&s["counters"]["rejects"]), 0);
}
