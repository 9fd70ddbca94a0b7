//! Test-only fault points of the checkpoint writer, set by environment variables, so tests can
//! crash or stall a checkpoint write at an exact step instead of by luck. Unset (as in
//! production) they do nothing.
//!
//! * `RL_V2_FAULT_CHECKPOINT_ABORT_AFTER_STEP=k` aborts the process (as `kill -9` would stop
//!   it: no unwinding, no final checkpoint) right after step `k` (1 ..=
//!   [`WRITE_STEPS`](crate::checkpoint::WRITE_STEPS)) of the first checkpoint write that reaches
//!   it. The steps, for `checkpoint.json` then each Python-format table: temporary file written,
//!   temporary file synced, renamed into place, directory synced.
//! * `RL_V2_FAULT_CHECKPOINT_FAIL_AFTER_STEP=k` makes every write fail right after step `k` with "no space
//!   left on device" (ENOSPC), as a full disk would.
//! * `RL_V2_FAULT_CHECKPOINT_HOLD_WHILE=path` holds every write, before its first step, for as
//!   long as `path` exists.

use std::path::PathBuf;
use std::time::Duration;

use crate::checkpoint::{Step, WRITE_STEPS};

/// Variable: abort the process after this step of a checkpoint write.
pub const ABORT_AFTER_STEP: &str = "RL_V2_FAULT_CHECKPOINT_ABORT_AFTER_STEP";
/// Variable: fail every checkpoint write with ENOSPC right after this step.
pub const FAIL_AFTER_STEP: &str = "RL_V2_FAULT_CHECKPOINT_FAIL_AFTER_STEP";
/// Variable: hold every checkpoint write while this path exists.
pub const HOLD_WHILE: &str = "RL_V2_FAULT_CHECKPOINT_HOLD_WHILE";

/// How often a held write looks for its file again.
const HOLD_POLL: Duration = Duration::from_millis(10);
/// `ENOSPC` on Linux.
const ENOSPC: i32 = 28;

/// The fault points in force.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPoints {
    abort_after: Option<u32>,
    fail_after: Option<u32>,
    hold_while: Option<PathBuf>,
}

impl FaultPoints {
    /// The fault points the environment sets; an error names a variable whose value is not a
    /// step number.
    pub fn from_env() -> Result<Self, String> {
        let step = |name: &str| -> Result<Option<u32>, String> {
            match std::env::var(name) {
                Err(_) => Ok(None),
                Ok(v) => match v.trim().parse::<u32>() {
                    Ok(k) if (1..=WRITE_STEPS).contains(&k) => Ok(Some(k)),
                    _ => Err(format!(
                        "{name} = {v:?} is not a step number in 1..={WRITE_STEPS}"
                    )),
                },
            }
        };
        let faults = Self {
            abort_after: step(ABORT_AFTER_STEP)?,
            fail_after: step(FAIL_AFTER_STEP)?,
            hold_while: std::env::var_os(HOLD_WHILE).map(PathBuf::from),
        };
        if faults != Self::default() {
            tracing::warn!(?faults, "checkpoint fault points set (for tests only)");
        }
        Ok(faults)
    }

    /// Blocks while the hold file exists. Blocking: call it off the async runtime.
    pub fn hold(&self) {
        if let Some(path) = &self.hold_while {
            while path.exists() {
                std::thread::sleep(HOLD_POLL);
            }
        }
    }

    /// Called after each step of a write: aborts or fails where told to.
    pub fn after_step(&self, step: Step) -> std::io::Result<()> {
        if self.abort_after == Some(step.number) {
            eprintln!(
                "{ABORT_AFTER_STEP}: aborting after step {} ({:?} {})",
                step.number, step.kind, step.file
            );
            std::process::abort();
        }
        if self.fail_after == Some(step.number) {
            return Err(std::io::Error::from_raw_os_error(ENOSPC));
        }
        Ok(())
    }
}
