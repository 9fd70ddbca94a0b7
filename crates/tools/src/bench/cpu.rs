//! CPU time of the service under test, from the kernel's accounting of its own threads: the
//! service runs on a runtime whose threads all carry its name (`bench-rl-v2` or
//! `bench-baseline`, so `perf report --comm bench-rl-v2` shows rl-v2 alone), and their user +
//! system time is read from `/proc/self/task/*/stat`. The load generator and the broker are not
//! counted.

use std::time::Duration;

/// Names of the threads of the services under test (at most 15 bytes, the kernel's limit).
pub const RL_V2_THREADS: &str = "bench-rl-v2";
/// See [`RL_V2_THREADS`].
pub const BASELINE_THREADS: &str = "bench-baseline";

/// A runtime for a service under test whose threads are all named `name`: two workers, as the
/// machine's service would have, and blocking threads kept alive so that their CPU time is
/// still counted when the run ends.
pub fn service_runtime(name: &str) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .thread_keep_alive(Duration::from_secs(3_600))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the service's runtime: {e}"))
}

/// User + system CPU time of the threads named `name` alive, milliseconds (0 where /proc is not
/// available).
pub fn service_cpu_ms(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ticks: u64 = tasks
        .filter_map(|task| {
            let dir = task.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            (comm.trim_end() == name)
                .then(|| thread_ticks(&std::fs::read_to_string(dir.join("stat")).ok()?))
                .flatten()
        })
        .sum();
    ticks as f64 * 1e3 / CLOCK_TICKS_PER_SEC
}

/// Clock ticks per second of `/proc`'s times (`USER_HZ`, 100 on Linux).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// utime + stime of a `/proc/<pid>/task/<tid>/stat` line.
fn thread_ticks(stat: &str) -> Option<u64> {
    // The fields after the command name, which is in parentheses and may hold spaces; utime
    // and stime are the 14th and 15th fields, the 12th and 13th after it.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_are_read_after_the_command_name() {
        let stat = "42 (bench) service) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 4 0 10";
        assert_eq!(thread_ticks(stat), Some(10));
    }

    /// About a second of CPU on this machine, whatever else runs beside it.
    fn work() -> u64 {
        let mut x = 1u64;
        for i in 0..1_000_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31) ^ i);
        }
        x
    }

    #[test]
    fn the_service_runtime_is_counted_and_nothing_else() {
        let runtime = service_runtime(RL_V2_THREADS).unwrap();
        let before = service_cpu_ms(RL_V2_THREADS);
        std::hint::black_box(work());
        let outside = service_cpu_ms(RL_V2_THREADS) - before;
        let before = service_cpu_ms(RL_V2_THREADS);
        runtime.block_on(async { tokio::spawn(async { work() }).await.unwrap() });
        let inside = service_cpu_ms(RL_V2_THREADS) - before;
        runtime.shutdown_background();
        assert_eq!(outside, 0.0, "work on the test's own thread was counted");
        assert!(
            inside >= 100.0,
            "{inside} ms counted for the work on the service's runtime"
        );
    }
}
