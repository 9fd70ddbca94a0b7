//! Settings that pass a type check but cannot work stop start-up with exit 2 naming the key
//! (never a panic, never a silent service), and a task that panics takes the service down with
//! a non-zero exit.

mod common;

use common::*;

#[test]
fn settings_that_would_misbehave_exit_2_naming_the_key() {
    // A reachable broker, so that a service that accepted the setting would run.
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let core = ("RL_V2__DELIVERY__MODE", "core");
    for (key, value) in [
        ("log.level", "verbose"),
        ("log.level", "info,rl_v2=loud"),
        ("checkpoint.min_interval_secs", "1e30"),
        ("nats.connect_retry_secs", "1e30"),
        ("delivery.ack_wait_secs", "1e30"),
        ("delivery.decide_timeout_secs", "1e30"),
        ("market.reward_window_secs", "1e30"),
        ("delivery.stream_max_age_secs", "18446744073709551615"),
        ("nats.connect_retry_secs", "-1"),
        ("delivery.ack_wait_secs", "inf"),
        ("ha.lease_ttl_secs", "0.5"),
        ("ha.lease_ttl_secs", "601"),
        ("ha.instance_id", "a.b"),
        ("ha.bucket", "lease*"),
        // The hot standby needs JetStream mode.
        ("ha.enabled", "true"),
    ] {
        let var = format!("RL_V2__{}", key.replace('.', "__").to_uppercase());
        let (code, out) = serve_until_exit(
            dir.path(),
            &[
                ("RL_V2__NATS__URL", server.url().as_str()),
                core,
                (&var, value),
            ],
        );
        assert_eq!(code, Some(2), "{key} = {value}: {out}");
        assert!(
            out.contains(&format!("`{key}`")),
            "{key} = {value} not named: {out}"
        );
        assert!(!out.contains("panicked"), "{key} = {value}: {out}");
    }
}

#[tokio::test]
async fn a_task_that_panics_stops_the_service_with_a_non_zero_exit() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start(
        &server.url(),
        &dir.path().join("data"),
        // Test-only fault injection: the JetStream consumer panics as it starts.
        &[("RL_V2_TEST_PANIC", "jetstream_consumer")],
    );
    let status = service.wait().await;
    let log = service.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("JetStream consumer") && log.contains("panicked"),
        "the log should name the task that panicked:\n{log}"
    );
    assert!(
        log.contains("final checkpoint written"),
        "the state applied so far is still checkpointed:\n{log}"
    );
}
