//! `rl-v2 simulate --outcomes --save-checkpoint` then `rl-v2 evaluate`: the worked example's
//! commands, deterministic output, and bad input that stops nothing but is counted.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn rl_v2(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rl-v2"))
        .args(args)
        .current_dir(dir)
        .env("RL_V2__CHECKPOINT__DIR", dir.join("no-checkpoint-here"))
        .output()
        .expect("rl-v2 runs")
}

#[test]
fn a_simulated_log_evaluates_the_same_twice_and_unreadable_lines_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim = rl_v2(
        d,
        &[
            "simulate",
            "--cycles",
            "3000",
            "--evaluation-cycles",
            "50",
            "--quiet",
            "--json",
            "--outcomes",
            "outcomes.jsonl",
            "--save-checkpoint",
            "trained",
        ],
    );
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    let lines = std::fs::read_to_string(d.join("outcomes.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 6000, "one outcome per Q-update");

    let args = [
        "evaluate",
        "outcomes.jsonl",
        "--checkpoint",
        "trained",
        "--json",
        "--bootstrap",
        "50",
    ];
    let first = rl_v2(d, &args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = rl_v2(d, &args);
    assert_eq!(
        first.stdout, second.stdout,
        "same log, same seed, same report"
    );
    let report: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(report["trades"], 3000);
    assert_eq!(report["targets"][1]["target"], "greedy trained");
    let greedy = &report["targets"][1]["agents"][0];
    assert!(greedy["dr"]["low"].as_f64() <= greedy["dr"]["high"].as_f64());

    // A truncated line and a line that is not an outcome: counted, reported, not fatal.
    let mut damaged = lines.clone();
    damaged.push_str("{\"decision_id\": \"x\"\nnot json\n");
    std::fs::write(d.join("damaged.jsonl"), damaged).unwrap();
    let out = rl_v2(
        d,
        &["evaluate", "damaged.jsonl", "--json", "--bootstrap", "10"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["skipped"]["unreadable"], 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged.jsonl:6001"));
}

#[test]
fn bad_arguments_exit_2_and_a_missing_log_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("empty.jsonl"), "").unwrap();
    for args in [
        &["evaluate"][..],
        &["evaluate", "empty.jsonl", "--bootstrap", "0"],
        &["evaluate", "empty.jsonl", "--clip", "-1"],
    ] {
        let out = rl_v2(d, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = rl_v2(d, &["evaluate", "missing.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.jsonl"));
    let out = rl_v2(d, &["evaluate", "empty.jsonl"]);
    assert_eq!(out.status.code(), Some(1), "no usable outcome");
}
