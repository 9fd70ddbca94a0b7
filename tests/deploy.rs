//! The deployment files: the compose file is valid and wires what the README promises, and the
//! Dockerfile builds the way CI does.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The NATS users' passwords the compose file reads from the environment (or `.env`).
const PASSWORDS: [&str; 4] = [
    "RL_V2_NATS_PASSWORD",
    "SIGNALS_NATS_PASSWORD",
    "EXECUTION_NATS_PASSWORD",
    "OPERATOR_NATS_PASSWORD",
];

/// `docker-compose config` of `file` with the passwords in `env` only.
fn compose_config(file: &str, env: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("docker-compose");
    // The project directory's own .env must not decide what this test sees.
    let empty = tempfile::NamedTempFile::new().unwrap();
    cmd.arg("--env-file").arg(empty.path());
    cmd.arg("-f").arg(root().join(file)).arg("config");
    for var in PASSWORDS {
        cmd.env_remove(var);
    }
    for var in env {
        cmd.env(var, format!("secret-of-{var}"));
    }
    cmd.output()
        .expect("docker-compose is installed (Debian package docker-compose; .ci/run installs it)")
}

#[test]
fn docker_compose_config_accepts_the_compose_file() {
    let out = compose_config("docker-compose.yml", &PASSWORDS);
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
        "/config/nats-server.conf:/etc/nats/nats-server.conf:ro",
        "RL_V2__NATS__USER: rl_v2",
        "RL_V2__NATS__PASSWORD: secret-of-RL_V2_NATS_PASSWORD",
        "SIGNALS_NATS_PASSWORD: secret-of-SIGNALS_NATS_PASSWORD",
        "127.0.0.1:9464:9464",
    ] {
        assert!(yaml.contains(needle), "`{needle}` missing from:\n{yaml}");
    }
}

#[test]
fn docker_compose_refuses_to_start_without_a_password_naming_it() {
    for missing in PASSWORDS {
        let others: Vec<&str> = PASSWORDS.into_iter().filter(|v| *v != missing).collect();
        let out = compose_config("docker-compose.yml", &others);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted without {missing}");
        assert!(stderr.contains(missing), "{missing} not named: {stderr}");
    }
}

#[test]
fn the_example_env_file_names_every_password_the_compose_file_reads() {
    let example = std::fs::read_to_string(root().join(".env.example")).unwrap();
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    for var in PASSWORDS {
        assert!(
            example.contains(&format!("{var}=")),
            "{var} missing from .env.example"
        );
        assert!(
            compose.contains(var),
            "{var} missing from docker-compose.yml"
        );
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

#[test]
fn docker_compose_config_accepts_the_hot_standby_compose_file() {
    let out = compose_config("docker-compose.ha.yml", &PASSWORDS);
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{yaml}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "nats-1:",
        "nats-2:",
        "nats-3:",
        "image: nats:2.15-alpine",
        "--cluster_name",
        "nats://nats-2:6222,nats://nats-3:6222",
        "nats://nats-1:6222,nats://nats-3:6222",
        "nats://nats-1:6222,nats://nats-2:6222",
        "RL_V2__NATS__URL: nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222",
        "RL_V2__DELIVERY__STREAM_REPLICAS: '3'",
        "RL_V2__HA__INSTANCE_ID: rl-v2-a",
        "RL_V2__HA__INSTANCE_ID: rl-v2-b",
        "RL_V2__NATS__PASSWORD: secret-of-RL_V2_NATS_PASSWORD",
        "rl-v2-a-data:/app/data",
        "rl-v2-b-data:/app/data",
        "127.0.0.1:9465:9464",
        "/config/nats-server.conf:/etc/nats/nats-server.conf:ro",
    ] {
        assert!(yaml.contains(needle), "`{needle}` missing from:\n{yaml}");
    }
    // Both instances run with the hot standby (the YAML writer picks the quotes).
    let enabled = yaml
        .lines()
        .filter(|l| l.trim().starts_with("RL_V2__HA__ENABLED:") && l.contains("true"))
        .count();
    assert_eq!(enabled, 2, "{yaml}");
    for missing in PASSWORDS {
        let others: Vec<&str> = PASSWORDS.into_iter().filter(|v| *v != missing).collect();
        let out = compose_config("docker-compose.ha.yml", &others);
        assert!(!out.status.success(), "accepted without {missing}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(missing), "{missing} not named: {stderr}");
    }
}
