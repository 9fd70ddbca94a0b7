//! `rl-v2 bench` end to end on a small load: every part runs, nothing is lost, and the report
//! holds the ratios the README quotes. (The figures themselves come from release builds.)

use serde_json::Value;
use std::process::Command;

#[test]
fn a_small_bench_runs_every_part_and_loses_no_decision() {
    let out = Command::new(env!("CARGO_BIN_EXE_rl-v2"))
        .args([
            "bench",
            "--events",
            "3000",
            "--seconds",
            "1",
            "--rate",
            "1500",
            "--repeat",
            "1",
            "--checkpoint-states",
            "2000",
            "--memory-events",
            "3000",
            "30000",
            "--stack-symbols",
            "50",
            "--stack-window",
            "100",
            "--write-memory-states",
            "2000,20000",
            "--failover-ttl",
            "1",
            "--json",
        ])
        .output()
        .expect("rl-v2 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    for mode in ["core", "jetstream", "stack_core", "stack_jetstream"] {
        for side in ["baseline", "rl_v2"] {
            let m = &r[mode][side];
            assert_eq!(m["lost_at_saturation"], 0, "{mode} {side}: {m}");
            assert_eq!(m["lost_at_rate"], 0, "{mode} {side}: {m}");
            assert!(
                m["decisions_per_sec"].as_f64() > Some(0.0),
                "{mode} {side}: {m}"
            );
            assert!(m["p99_ms"].as_f64() > Some(0.0), "{mode} {side}: {m}");
            assert!(
                m["cpu_us_per_decision"].as_f64() > Some(0.0),
                "{mode} {side}: the service's own CPU time is counted: {m}"
            );
        }
        assert!(r[mode]["throughput_ratio"].as_f64() > Some(0.0));
        assert!(r[mode]["cpu_ratio"].as_f64() > Some(0.0));
    }
    assert_eq!(r["stack_core"]["shape"]["nested"], true);
    assert_eq!(r["stack_core"]["shape"]["history"], 20);
    assert_eq!(r["core"]["shape"]["nested"], false);
    assert_eq!(r["checkpoint"]["states"], 2000);
    assert!(r["checkpoint"]["with"]["p99_ms"].as_f64() > Some(0.0));
    let requested = &r["checkpoint"]["requested"];
    assert_eq!(requested["lost_at_rate"], 0, "{requested}");
    assert!(
        r["checkpoint"]["checkpoint_requests_answered"].as_u64() > Some(0),
        "{}",
        r["checkpoint"]
    );
    let writes = r["write_memory"]
        .as_array()
        .expect("checkpoint write memory");
    assert_eq!(writes.len(), 2, "{writes:?}");
    for (w, states) in writes.iter().zip([2000, 20000]) {
        assert_eq!(w["states"], states, "{w}");
        let (steady, peak) = (w["steady_kib"].as_u64(), w["peak_kib"].as_u64());
        assert!(steady > Some(0) && peak >= steady, "{w}");
        assert!(w["bytes"].as_u64() > Some(states * 60 * 4), "{w}");
    }
    let failover = &r["failover"];
    assert_eq!(
        failover["runs_ms"].as_array().map(Vec::len),
        Some(1),
        "{failover}"
    );
    // The lease runs out within its TTL; the follower tries every TTL/8.
    let took = failover["median_ms"].as_f64().unwrap();
    assert!(took > 0.0 && took < 1_000.0 + 1_000.0, "{failover}");
    let small = r["memory"]["small"][1].as_u64().unwrap();
    let large = r["memory"]["large"][1].as_u64().unwrap();
    assert!(
        small > 0 && large > 0,
        "peak RSS read from /proc: {}",
        r["memory"]
    );
}
