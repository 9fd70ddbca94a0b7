//! What writing one checkpoint of a large table costs: peak RSS while writing against the RSS
//! the table holds at rest, and the writer's CPU time. Each size runs in a child process of its
//! own (`rl-v2 bench --write-memory-child STATES`), so no other scenario's peak is counted.

use serde::{Deserialize, Serialize};
use std::time::Instant;

use rl_v2_core::engine::EngineConfig;
use rl_v2_service::checkpoint::CheckpointStore;

/// One checkpoint write of a table of `states` states.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteMemory {
    /// Visited states in the meta table.
    pub states: usize,
    /// RSS with the table loaded, before the write, KiB.
    pub steady_kib: u64,
    /// Peak RSS during the write, KiB.
    pub peak_kib: u64,
    /// peak ÷ steady.
    pub ratio: f64,
    /// CPU time of the write (user + system), milliseconds.
    pub cpu_ms: f64,
    /// Wall time of the write, milliseconds.
    pub wall_ms: f64,
    /// Bytes written (checkpoint and both tables).
    pub bytes: u64,
}

/// The child side: builds the table, writes one checkpoint into a temporary directory and
/// measures it.
pub fn child(states: usize) -> Result<WriteMemory, String> {
    let engine =
        super::engine_with_states(states, &EngineConfig::default()).map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = CheckpointStore::new(dir.path());
    let steady_kib = status_kib("VmRSS:");
    reset_peak()?;
    let (cpu, wall) = (cpu_ms(), Instant::now());
    store.write(engine.state()).map_err(|e| e.to_string())?;
    let (cpu_ms, wall_ms) = (cpu_ms() - cpu, wall.elapsed().as_secs_f64() * 1e3);
    let peak_kib = status_kib("VmHWM:");
    let bytes = std::fs::read_dir(dir.path())
        .map_err(|e| e.to_string())?
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    Ok(WriteMemory {
        states,
        steady_kib,
        peak_kib,
        ratio: peak_kib as f64 / steady_kib.max(1) as f64,
        cpu_ms,
        wall_ms,
        bytes,
    })
}

/// The parent side: one child per size.
pub fn measure(sizes: &[usize]) -> Result<Vec<WriteMemory>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    sizes
        .iter()
        .map(|states| {
            let out = std::process::Command::new(&exe)
                .args(["bench", "--write-memory-child", &states.to_string()])
                .output()
                .map_err(|e| e.to_string())?;
            serde_json::from_slice(&out.stdout).map_err(|e| {
                format!(
                    "checkpoint write of {states} states: {e}: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        })
        .collect()
}

/// A `/proc/self/status` figure in KiB (0 where /proc is not available).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Resets this process's peak RSS to its current RSS (Linux `clear_refs`, value 5).
fn reset_peak() -> Result<(), String> {
    std::fs::write("/proc/self/clear_refs", "5")
        .map_err(|e| format!("cannot reset the peak RSS through /proc/self/clear_refs: {e}"))
}

/// User + system CPU time of this process so far, milliseconds (`/proc/self/stat`, in clock
/// ticks of 10 ms).
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    ticks as f64 * 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_measured_from_a_reset_peak() {
        let m = child(2_000).unwrap();
        assert_eq!(m.states, 2_000);
        assert!(m.steady_kib > 0 && m.peak_kib > 0, "{m:?}");
        assert!(m.bytes > 2_000 * 60, "{m:?}");
    }
}
