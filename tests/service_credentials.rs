//! Credentials: in the URL or in the settings, against a real nats-server that requires them;
//! secrets never logged; a refusal is an ERROR and a stop, not an endless retry; contradictions
//! stop start-up with exit 2 naming the key.

mod common;

use common::*;

const USER: &str = "alice";
const PASSWORD: &str = "pw-5f2b9c1e-secret";
const TOKEN: &str = "tok-8d1e77aa-secret";

async fn client_with(url: &str, opts: async_nats::ConnectOptions) -> async_nats::Client {
    opts.connect(url).await.expect("test client connects")
}

/// Runs `rl-v2 serve` with `env` in a fresh data directory until it exits.
fn serve_to_exit(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    serve_until_exit(dir.path(), env)
}

#[tokio::test]
async fn user_and_password_in_the_url_authenticate_and_are_never_logged() {
    let server = NatsServer::start_with_args(false, &["--user", USER, "--pass", PASSWORD]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://{USER}:{PASSWORD}@127.0.0.1:{}", server.port());
    let mut service = Service::start(
        &url,
        &dir.path().join("data"),
        &[
            ("RL_V2__DELIVERY__MODE", "core"),
            // Everything, the NATS client's debug lines included, must keep the secret.
            ("RL_V2__LOG__LEVEL", "debug,async_nats=debug"),
        ],
    );
    let client = client_with(
        &server.url(),
        async_nats::ConnectOptions::with_user_and_password(USER.into(), PASSWORD.into()),
    )
    .await;
    service.ready(&client).await;
    let reply = request(
        &client,
        "PREDICTION_GENERATED",
        prediction("BTCUSDT", 0.7, "t1"),
    )
    .await;
    assert_eq!(reply["agent"], "meta_strategy", "{reply}");
    service.signal("TERM");
    assert!(service.wait().await.success());
    let log = service.log_text();
    assert!(log.contains("connected to NATS"), "{log}");
    assert!(!log.contains(PASSWORD), "the password was logged:\n{log}");
    assert!(log.contains(&format!("{USER}:***@")), "{log}");
}

#[tokio::test]
async fn a_token_in_the_url_authenticates() {
    let server = NatsServer::start_with_args(false, &["--auth", TOKEN]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://{TOKEN}@127.0.0.1:{}", server.port());
    let service = Service::start(
        &url,
        &dir.path().join("data"),
        &[("RL_V2__DELIVERY__MODE", "core")],
    );
    let client = client_with(
        &server.url(),
        async_nats::ConnectOptions::with_token(TOKEN.into()),
    )
    .await;
    service.ready(&client).await;
    let log = service.log_text();
    assert!(!log.contains(TOKEN), "the token was logged:\n{log}");
}

#[tokio::test]
async fn a_wrong_password_is_an_error_with_the_servers_reason_and_exit_1() {
    let server = NatsServer::start_with_args(false, &["--user", USER, "--pass", PASSWORD]);
    let wrong = "wrong-0c4d-secret";
    let url = format!("nats://{USER}:{wrong}@127.0.0.1:{}", server.port());
    let (code, log) = serve_to_exit(&[
        ("RL_V2__NATS__URL", &url),
        ("RL_V2__DELIVERY__MODE", "core"),
    ]);
    assert_eq!(code, Some(1), "{log}");
    let refusal = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("not retrying"))
        .unwrap_or_else(|| panic!("no ERROR line saying it stops:\n{log}"));
    assert!(
        refusal.to_lowercase().contains("authorization violation"),
        "the server's reason is missing: {refusal}"
    );
    assert!(!log.contains(wrong), "the password was logged:\n{log}");
    // Settings credentials that the server refuses: the same.
    let (code, log) = serve_to_exit(&[
        ("RL_V2__NATS__URL", &server.url()),
        ("RL_V2__NATS__USER", USER),
        ("RL_V2__NATS__PASSWORD", wrong),
        ("RL_V2__DELIVERY__MODE", "core"),
    ]);
    assert_eq!(code, Some(1), "{log}");
    assert!(!log.contains(wrong), "{log}");
}

#[test]
fn contradictory_credentials_stop_start_up_with_exit_2_naming_the_key() {
    // Nothing listens there: a service that accepted these would retry for ever.
    let nowhere = "127.0.0.1:9";
    for (env, key) in [
        (
            vec![
                ("RL_V2__NATS__URL", format!("nats://{nowhere}")),
                ("RL_V2__NATS__TOKEN", TOKEN.to_string()),
                ("RL_V2__NATS__USER", USER.to_string()),
                ("RL_V2__NATS__PASSWORD", PASSWORD.to_string()),
            ],
            "`nats.token`",
        ),
        (
            vec![
                (
                    "RL_V2__NATS__URL",
                    format!("nats://{USER}:{PASSWORD}@{nowhere}"),
                ),
                ("RL_V2__NATS__USER", USER.to_string()),
                ("RL_V2__NATS__PASSWORD", "another-password".to_string()),
            ],
            "`nats.user`",
        ),
        (
            vec![
                (
                    "RL_V2__NATS__URL",
                    format!("nats://{USER}:{PASSWORD}@{nowhere}"),
                ),
                ("RL_V2__NATS__TOKEN", TOKEN.to_string()),
            ],
            "`nats.token`",
        ),
        (
            vec![(
                "RL_V2__NATS__URL",
                format!("nats://{USER}:{PASSWORD}@{nowhere},nats://{USER}:other@{nowhere}"),
            )],
            "`nats.url`",
        ),
    ] {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, out) = serve_to_exit(&env);
        assert_eq!(code, Some(2), "{env:?}: {out}");
        assert!(out.contains(key), "{env:?} should name {key}: {out}");
        assert!(!out.contains(PASSWORD) && !out.contains(TOKEN), "{out}");
    }
}
