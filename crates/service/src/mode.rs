//! Which delivery mode wrote the checkpoint directory, so that a switch between modes is
//! recognised for what it is.
//!
//! In core mode `last_applied_seq` counts rl-v2's own events; in JetStream mode it is a stream
//! sequence. The two cannot be compared: a core-mode checkpoint taken into JetStream mode would
//! either look "ahead of the stream" or silently skip the stream's first events. So the service
//! records its mode beside the checkpoint (`delivery_mode.json`), and a JetStream start on a
//! directory last served in core mode is refused with that reason, unless
//! `delivery.accept_stream_reset` says to keep the learned state and start at the stream's end:
//! then the checkpoint is rewritten with the stream's last sequence before the record says
//! JetStream, so a crash at any point of the switch never applies the stream's older events.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::ServiceError;

/// File name of the record, in `checkpoint.dir`.
pub const FILE: &str = "delivery_mode.json";

/// The mode that last served a checkpoint directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ModeRecord {
    /// Core mode: sequences are rl-v2's own count.
    Core,
    /// JetStream mode on `stream`.
    Jetstream {
        /// The stream consumed.
        stream: String,
    },
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The record in `dir`, if there is a readable one.
pub fn read(dir: &Path) -> Option<ModeRecord> {
    let bytes = std::fs::read(path(dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes the record atomically (temporary file, rename).
pub fn write(dir: &Path, record: &ModeRecord) -> Result<(), ServiceError> {
    let target = path(dir);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let io = |e: std::io::Error| {
        ServiceError::Checkpoint(crate::checkpoint::CheckpointError::Io {
            path: target.clone(),
            source: e,
        })
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let body = serde_json::to_vec(record).unwrap_or_default();
    std::fs::write(&tmp, body).map_err(io)?;
    std::fs::rename(&tmp, &target).map_err(io)
}

/// What a JetStream start does about the directory's previous mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Nothing to do: same mode, or nothing applied yet.
    None,
    /// From core mode, accepted: the engine's `last_applied_seq` becomes this stream
    /// sequence (the stream's end), and consumption starts after it.
    FromCore {
        /// The stream's last sequence.
        last_seq: u64,
    },
}

/// Decides a JetStream start on a directory whose record is `previous`. Pure, so its rules are
/// unit-tested.
pub fn jetstream_start(
    previous: Option<&ModeRecord>,
    last_applied_seq: u64,
    stream_last_seq: u64,
    accept_stream_reset: bool,
    stream: &str,
    dir: &Path,
) -> Result<Switch, ServiceError> {
    if previous != Some(&ModeRecord::Core) || last_applied_seq == 0 {
        return Ok(Switch::None);
    }
    if !accept_stream_reset {
        return Err(ServiceError::JetStream(format!(
            "the checkpoint in {} was written in core mode: its last_applied_seq {last_applied_seq} \
             counts the events rl-v2 saw over core NATS, not sequences of stream {stream} (which \
             ends at {stream_last_seq}), so it cannot say where in the stream to resume. Set \
             delivery.accept_stream_reset = true (RL_V2__DELIVERY__ACCEPT_STREAM_RESET=true) to keep \
             the learned state and consume from the stream's next event, or start JetStream mode \
             with an empty checkpoint directory",
            dir.display()
        )));
    }
    Ok(Switch::FromCore {
        last_seq: stream_last_seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_directory_is_refused_in_jetstream_mode_with_that_reason() {
        let dir = Path::new("/data");
        let core = Some(&ModeRecord::Core);
        let err = jetstream_start(core, 500, 120, false, "RL", dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("core mode") && err.contains("500"), "{err}");
        assert!(err.contains("delivery.accept_stream_reset"), "{err}");
        assert_eq!(
            jetstream_start(core, 500, 120, true, "RL", dir).unwrap(),
            Switch::FromCore { last_seq: 120 }
        );
        assert_eq!(
            jetstream_start(core, 0, 120, false, "RL", dir).unwrap(),
            Switch::None
        );
        let js = ModeRecord::Jetstream {
            stream: "RL".into(),
        };
        assert_eq!(
            jetstream_start(Some(&js), 500, 120, false, "RL", dir).unwrap(),
            Switch::None
        );
        assert_eq!(
            jetstream_start(None, 500, 120, false, "RL", dir).unwrap(),
            Switch::None
        );
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let rec = ModeRecord::Jetstream { stream: "S".into() };
        write(dir.path(), &rec).unwrap();
        assert_eq!(read(dir.path()), Some(rec));
        write(dir.path(), &ModeRecord::Core).unwrap();
        assert_eq!(read(dir.path()), Some(ModeRecord::Core));
    }
}
