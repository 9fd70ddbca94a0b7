//! The deployment files: the compose file is valid and wires what the README promises, and the
//! Dockerfile builds the way CI does.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn docker_compose_config_accepts_the_compose_file() {
    let out = Command::new("docker-compose")
        .arg("-f")
        .arg(root().join("docker-compose.yml"))
        .arg("config")
        .output()
        .expect("docker-compose is installed (Debian package docker-compose; .ci/run installs it)");
    // `config` prints the resolved file as YAML; check the parts that matter in it.
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{yaml}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "condition: service_healthy",
        "- rl-v2",
        "- health",
        "RL_V2__NATS__URL: nats://nats:4222",
        "-js",
        "nats-data",
        "rl-v2-data",
        "rl-v2-data:/app/data",
        "/config/default.toml:/app/config/default.toml:ro",
    ] {
        assert!(yaml.contains(needle), "`{needle}` missing from:\n{yaml}");
    }
}

#[test]
fn dockerfile_builds_release_as_a_non_root_user_with_a_data_volume() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(text.contains("cargo build --release --locked --bin rl-v2"));
    assert!(text.matches("FROM ").count() >= 2, "multi-stage");
    assert!(text.contains("USER rl"));
    assert!(text.contains("VOLUME [\"/app/data\"]"));
    assert!(text.contains("HEALTHCHECK") && text.contains("\"health\""));
}

#[test]
fn dockerfile_caches_every_workspace_manifest_in_the_dependency_layer() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let members = std::fs::read_dir(root().join("crates")).unwrap();
    let mut seen = 0;
    for member in members {
        let name = member.unwrap().file_name().into_string().unwrap();
        let copy = format!("COPY crates/{name}/Cargo.toml crates/{name}/");
        assert!(text.contains(&copy), "Dockerfile lacks `{copy}`");
        let source = format!("crates/{name}/src/lib.rs");
        assert!(
            text.contains(&source),
            "Dockerfile lacks a placeholder `{source}`"
        );
        seen += 1;
    }
    assert!(seen >= 3, "the workspace has its three library crates");
    assert!(text.contains("COPY crates crates") && text.contains("COPY config config"));
}
