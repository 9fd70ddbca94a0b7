//! The shipped `config/nats-server.conf`: a real `nats-server` started with that very file, rl-v2
//! under its own user, and each producer and the operator under theirs. Allowed traffic flows;
//! a forbidden publish is refused by the server and changes nothing in rl-v2.

mod common;

use async_nats::{Client, ConnectOptions, Event};
use common::*;
use futures::StreamExt;
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (user, environment variable the configuration reads its password from, password).
const USERS: [(&str, &str, &str); 4] = [
    ("rl_v2", "RL_V2_NATS_PASSWORD", "rl-v2-secret"),
    ("signals", "SIGNALS_NATS_PASSWORD", "signals-secret"),
    ("execution", "EXECUTION_NATS_PASSWORD", "execution-secret"),
    ("operator", "OPERATOR_NATS_PASSWORD", "operator-secret"),
];

fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _, _)| *u == user)
        .map(|(_, _, p)| *p)
        .expect("a configured user")
}

/// A JetStream server started with the shipped configuration; it reads the passwords from the
/// environment it inherits from this process.
fn secured_server() -> NatsServer {
    for (_, var, secret) in USERS {
        std::env::set_var(var, secret);
    }
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/nats-server.conf");
    NatsServer::start_with_args(true, &["-c", conf.to_str().unwrap()])
}

/// A client logged in as `user`, with the errors the server sent it.
async fn login(url: &str, user: &str) -> (Client, Arc<Mutex<Vec<String>>>) {
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = errors.clone();
    let client = ConnectOptions::with_user_and_password(user.into(), password(user).into())
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let Event::ServerError(e) = event {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
    (client, errors)
}

/// Waits until the server has told `errors`' client of a refused publish to `subject`.
async fn refused(errors: &Arc<Mutex<Vec<String>>>, subject: &str) {
    let told = || {
        errors.lock().unwrap().iter().any(|e| {
            let e = e.to_lowercase();
            e.contains("permissions violation") && e.contains(&subject.to_lowercase())
        })
    };
    tokio::time::timeout(WAIT, async {
        while !told() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no permissions violation for {subject}: {errors:?}"));
}

async fn next_json(sub: &mut async_nats::Subscriber) -> Value {
    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a message in time")
        .expect("subscription open");
    serde_json::from_slice(&msg.payload).expect("JSON")
}

#[tokio::test]
async fn only_the_right_users_may_speak_and_a_forbidden_publish_changes_nothing() {
    let server = secured_server();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        &url,
        &dir.path().join("data"),
        &[
            ("RL_V2__NATS__USER", "rl_v2"),
            ("RL_V2__NATS__PASSWORD", password("rl_v2")),
        ],
    );
    let (operator, _) = login(&url, "operator").await;
    service.ready(&operator).await;
    let (signals, signal_errors) = login(&url, "signals").await;
    let (execution, execution_errors) = login(&url, "execution").await;
    let mut meta = execution
        .subscribe("RL_META_STRATEGY_DECISION")
        .await
        .unwrap();
    let mut control = operator.subscribe("RL_V2_CONTROL").await.unwrap();
    execution.flush().await.unwrap();
    operator.flush().await.unwrap();

    // Allowed: a prediction from the signal service is decided and reaches the execution service.
    signals
        .publish(
            "PREDICTION_GENERATED",
            prediction("BTCUSDT", 0.7, "ok-1").into(),
        )
        .await
        .unwrap();
    assert_eq!(next_json(&mut meta).await["trace_id"], "ok-1");

    // Forbidden: the signal service forges a close and a decision; the execution service sends
    // a control command and asks for a checkpoint.
    signals
        .publish("POSITION_CLOSED", close("BTCUSDT", 50.0, "forged").into())
        .await
        .unwrap();
    let forged = r#"{"decision_id":"meta_strategy-999","trace_id":"forged"}"#;
    signals
        .publish("RL_META_STRATEGY_DECISION", forged.into())
        .await
        .unwrap();
    execution
        .publish("RL_V2_CONTROL", r#"{"command":"halt"}"#.into())
        .await
        .unwrap();
    let checkpoint = execution.request("rl_v2.checkpoint", "".into());
    let answered = tokio::time::timeout(Duration::from_secs(3), checkpoint).await;
    assert!(
        !matches!(answered, Ok(Ok(_))),
        "the execution service got a checkpoint written"
    );
    refused(&signal_errors, "POSITION_CLOSED").await;
    refused(&signal_errors, "RL_META_STRATEGY_DECISION").await;
    refused(&execution_errors, "RL_V2_CONTROL").await;
    refused(&execution_errors, "rl_v2.checkpoint").await;

    // Nothing got through: the next decision the execution service sees is the one for the
    // signal service's next prediction (sent on the same connection after the forgery), and
    // the next control command the operator's own.
    signals
        .publish(
            "PREDICTION_GENERATED",
            prediction("BTCUSDT", 0.6, "ok-2").into(),
        )
        .await
        .unwrap();
    assert_eq!(next_json(&mut meta).await["trace_id"], "ok-2");
    operator
        .publish("RL_V2_CONTROL", r#"{"command":"status"}"#.into())
        .await
        .unwrap();
    assert_eq!(next_json(&mut control).await["command"], "status");

    // rl-v2 saw no close and wrote no checkpoint on request; the operator may ask for one.
    let s = stats_until(&operator, |s| {
        s["counters"]["events"]["PREDICTION_GENERATED"] == 2
    })
    .await;
    assert!(
        s["service"]["messages_by_subject"]
            .get("POSITION_CLOSED")
            .is_none(),
        "{s}"
    );
    assert_eq!(
        s["meta_agent_stats"]["q_learning_stats"]["update_count"], 0,
        "{s}"
    );
    assert_eq!(s["service"]["checkpoint_requests"], 0, "{s}");
    let reply = request(&operator, "rl_v2.checkpoint", String::new()).await;
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(stats(&operator).await["service"]["checkpoint_requests"], 1);
}

#[tokio::test]
async fn a_producer_may_use_the_decide_endpoint_for_its_own_events_only() {
    let server = secured_server();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        &url,
        &dir.path().join("data"),
        &[
            ("RL_V2__NATS__USER", "rl_v2"),
            ("RL_V2__NATS__PASSWORD", password("rl_v2")),
        ],
    );
    let (operator, _) = login(&url, "operator").await;
    service.ready(&operator).await;
    let (signals, errors) = login(&url, "signals").await;

    let decided = request(
        &signals,
        "rl_v2.decide.PREDICTION_GENERATED",
        prediction("ETHUSDT", 0.8, "rpc-1"),
    )
    .await;
    assert_eq!(decided["agent"], "meta_strategy", "{decided}");
    assert_eq!(decided["trace_id"], "rpc-1", "{decided}");

    let close = signals.request(
        "rl_v2.decide.POSITION_CLOSED",
        close("ETHUSDT", 9.0, "rpc-forged").into(),
    );
    let answered = tokio::time::timeout(Duration::from_secs(3), close).await;
    assert!(!matches!(answered, Ok(Ok(_))), "a forged close was decided");
    refused(&errors, "rl_v2.decide.POSITION_CLOSED").await;
    let s = stats(&operator).await;
    assert!(
        s["counters"]["events"].get("POSITION_CLOSED").is_none(),
        "{s}"
    );
}

#[tokio::test]
async fn instances_under_the_rl_v2_user_elect_a_leader_and_refuse_a_plain_one() {
    for (_, var, secret) in USERS {
        std::env::set_var(var, secret);
    }
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/nats-server.conf");
    // Key-value buckets need the current server, whatever the suite runs against.
    let server =
        NatsServer::launch_with(&pinned_server_bin(), true, &["-c", conf.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("{e}"));
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let as_rl_v2 = [
        ("RL_V2__NATS__USER", "rl_v2"),
        ("RL_V2__NATS__PASSWORD", password("rl_v2")),
    ];
    let ha = |id: &'static str| {
        let mut env = as_rl_v2.to_vec();
        env.extend([
            ("RL_V2__HA__ENABLED", "true"),
            ("RL_V2__HA__LEASE_TTL_SECS", "2"),
            ("RL_V2__HA__INSTANCE_ID", id),
        ]);
        env
    };
    let _a = Service::start(&url, &dir.path().join("a"), &ha("a"));
    let (operator, _) = login(&url, "operator").await;
    instance_until(&operator, "a", |s| s["instance"]["role"] == "leader").await;
    let _b = Service::start(&url, &dir.path().join("b"), &ha("b"));
    instance_until(&operator, "b", |s| {
        s["instance"]["role"] == "follower" && s["instance"]["leader"] == "a"
    })
    .await;

    let (execution, _) = login(&url, "execution").await;
    let mut meta = execution
        .subscribe("RL_META_STRATEGY_DECISION")
        .await
        .unwrap();
    execution.flush().await.unwrap();
    let (signals, _) = login(&url, "signals").await;
    signals
        .publish(
            "PREDICTION_GENERATED",
            prediction("BTCUSDT", 0.7, "ha-1").into(),
        )
        .await
        .unwrap();
    let decided = next_json(&mut meta).await;
    assert_eq!(decided["trace_id"], "ha-1");
    assert!(decided["epoch"].as_u64() > Some(0), "{decided}");

    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let mut env = as_rl_v2.to_vec();
    env.push(("RL_V2__NATS__URL", &url));
    let (code, text) = serve_until_exit(&plain, &env);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("already serves stream"), "{text}");
}

/// Runs `rl-v2 control ARGS` as `user`: (exit code, stdout and stderr).
fn control_as(url: &str, user: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rl-v2"))
        .arg("control")
        .args(args)
        .env("RL_V2__NATS__URL", url)
        .env("RL_V2__NATS__USER", user)
        .env("RL_V2__NATS__PASSWORD", password(user))
        .env_remove("RUST_LOG")
        .output()
        .expect("rl-v2 control runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn only_the_operator_may_change_the_trading_state() {
    let server = secured_server();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        &url,
        &dir.path().join("data"),
        &[
            ("RL_V2__NATS__USER", "rl_v2"),
            ("RL_V2__NATS__PASSWORD", password("rl_v2")),
        ],
    );
    let (operator, _) = login(&url, "operator").await;
    service.ready(&operator).await;
    let mut changes = operator.subscribe("RL_V2_TRADING_STATE").await.unwrap();
    let mut refusals = operator.subscribe("RL_V2_RISK_REFUSED").await.unwrap();
    operator.flush().await.unwrap();

    // A trader and a signal service try to halt the stack: the server refuses both.
    let (execution, execution_errors) = login(&url, "execution").await;
    let halt = r#"{"command":"halt","reason":"forged","who":"execution"}"#;
    execution
        .publish("RL_V2_CONTROL", halt.into())
        .await
        .unwrap();
    refused(&execution_errors, "RL_V2_CONTROL").await;
    let (code, text) = control_as(
        &url,
        "signals",
        &["--timeout", "5", "halt", "--reason", "x"],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("refused"), "{text}");
    let s = stats(&operator).await;
    assert_eq!(s["trading_state"], "ACTIVE", "{s}");
    assert_eq!(s["counters"]["control_commands"], 0, "{s}");
    assert!(s["control"]["last_command"].is_null(), "{s}");

    // The operator may; rl-v2 may publish the change and its refusals.
    let (code, text) = control_as(
        &url,
        "operator",
        &["halt", "--reason", "drill", "--who", "ops"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("trading state: HALTED"), "{text}");
    let change = next_json(&mut changes).await;
    assert_eq!(
        (&change["new"], &change["who"]),
        (&"HALTED".into(), &"ops".into())
    );
    let (signals, _) = login(&url, "signals").await;
    signals
        .publish(
            "PREDICTION_GENERATED",
            prediction("BTCUSDT", 0.7, "halted-1").into(),
        )
        .await
        .unwrap();
    let refusal = next_json(&mut refusals).await;
    assert_eq!(
        (&refusal["reason"], &refusal["trace_id"]),
        (&"trading_halted".into(), &"halted-1".into())
    );
}
