//! Checkpoints: the whole engine state on disk, written atomically, plus the two Q-tables in the
//! Python version's format so its tooling keeps working.
//!
//! Files in the checkpoint directory (default `data/rl_v2`):
//! * `checkpoint.json`: the [`EngineState`], compact JSON with ordered maps, so the same state
//!   always gives the same bytes;
//! * `meta_strategy_q_table.json` and `position_sizing_q_table.json`:
//!   `{"q_table": {state_key: {action_key: q}}, "epsilon": e, "update_count": n}`, spelled as
//!   the Python version spells them (see [`crate::python_format`]).
//!
//! Every file is written to a temporary file in the same directory, synced, renamed over the
//! old one, and the directory is synced, so a crash leaves either the old or the new file.
//!
//! Order and markers keep a crash at any step from counting an update twice:
//! * every file is encoded straight into its temporary file, row by row, so writing holds no
//!   copy of the table in memory; a serialisation failure removes the temporary and never
//!   replaces a good file (a failure in a later file leaves the state a crash between files
//!   leaves, which the next two points make harmless);
//! * `checkpoint.json` is replaced first and the tables after it, so Python-format tables the
//!   Python version left behind stay in place until a checkpoint exists;
//! * the tables rl-v2 writes carry `"written_by": "rl-v2"` (a key the Python loader, which reads
//!   `q_table`, `epsilon` and `update_count`, ignores), and start-up imports only tables without
//!   it: rl-v2's own copies are outputs, never inputs.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub use crate::python_format::PythonTable;
use crate::python_format::PythonTableView;
use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::engine::{Engine, EngineConfig, EngineState, StateError};

/// File name of the engine checkpoint.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
/// File name of the meta-strategy Q-table in the Python format.
pub const META_TABLE_FILE: &str = "meta_strategy_q_table.json";
/// File name of the position-sizing Q-table in the Python format.
pub const SIZING_TABLE_FILE: &str = "position_sizing_q_table.json";

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not valid JSON of the expected shape.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The state could not be serialised; nothing was written.
    #[error("cannot encode {file}: {reason}; nothing was written")]
    Encode {
        /// The file it was meant for.
        file: &'static str,
        /// What went wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl ToString) -> CheckpointError {
    CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The bytes of a checkpoint of `state`.
pub fn encode(state: &EngineState) -> Result<Vec<u8>, CheckpointError> {
    encode_json(CHECKPOINT_FILE, state)
}

/// `value` as compact JSON for `file`, or a typed error: never empty bytes that would replace a
/// good file.
fn encode_json<T: Serialize + ?Sized>(
    file: &'static str,
    value: &T,
) -> Result<Vec<u8>, CheckpointError> {
    serde_json::to_vec(value).map_err(|e| CheckpointError::Encode {
        file,
        reason: e.to_string(),
    })
}

/// Key that marks a Python-format table as written by rl-v2.
pub const WRITTEN_BY_KEY: &str = "written_by";
/// Value of [`WRITTEN_BY_KEY`] in the tables rl-v2 writes.
pub const WRITTEN_BY_RL_V2: &str = "rl-v2";

/// A Python-format table as rl-v2 writes it: the table plus the marker that keeps start-up from
/// importing it.
#[derive(Serialize)]
struct MarkedTable<'a> {
    #[serde(flatten)]
    table: PythonTableView<'a>,
    written_by: &'static str,
}

/// Where checkpoints live, and how to write and read them.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the engine checkpoint.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_FILE)
    }

    /// Writes the checkpoint and both Python-format tables, each atomically. Blocking: run it
    /// off the event loop.
    pub fn write(&self, state: &EngineState) -> Result<PathBuf, CheckpointError> {
        self.write_with(state, &mut |_| Ok(()))
    }

    /// As [`Self::write`], calling `after_step` after each of its [`WRITE_STEPS`] steps; an error
    /// from it stops the write there, as a failure of that step would. Each file is encoded
    /// straight into its temporary file; `checkpoint.json` is replaced first, then the tables.
    pub fn write_with(
        &self,
        state: &EngineState,
        after_step: &mut dyn FnMut(Step) -> std::io::Result<()>,
    ) -> Result<PathBuf, CheckpointError> {
        let meta = MarkedTable {
            table: PythonTableView::of(&state.meta),
            written_by: WRITTEN_BY_RL_V2,
        };
        let sizing = MarkedTable {
            table: PythonTableView::of(&state.sizing),
            written_by: WRITTEN_BY_RL_V2,
        };
        let files: [(&'static str, Encoder); FILES_PER_CHECKPOINT] = [
            (CHECKPOINT_FILE, &|out| serde_json::to_writer(out, state)),
            (META_TABLE_FILE, &|out| serde_json::to_writer(out, &meta)),
            (SIZING_TABLE_FILE, &|out| {
                serde_json::to_writer(out, &sizing)
            }),
        ];
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let mut number = 0;
        for (file, encoder) in files {
            write_atomic_with(&self.dir.join(file), file, encoder, &mut |kind| {
                number += 1;
                after_step(Step { number, kind, file })
            })?;
        }
        Ok(self.checkpoint_path())
    }

    /// Removes the temporary files an interrupted write left behind; returns their paths. They
    /// are never read, but a crash can leave one the size of a whole checkpoint.
    pub fn remove_stale_temporaries(&self) -> Result<Vec<PathBuf>, CheckpointError> {
        let mut removed = Vec::new();
        for file in [CHECKPOINT_FILE, META_TABLE_FILE, SIZING_TABLE_FILE] {
            let tmp = temporary_path(&self.dir.join(file));
            match fs::remove_file(&tmp) {
                Ok(()) => removed.push(tmp),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&tmp)(e)),
            }
        }
        Ok(removed)
    }

    /// Reads the checkpoint: `Ok(None)` when there is none, an error when it exists but cannot
    /// be read or parsed. Never modifies the file.
    pub fn read(&self) -> Result<Option<EngineState>, CheckpointError> {
        let path = self.checkpoint_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| corrupt(&path, e))
    }

    /// Loads an engine from the checkpoint; `Ok(None)` when there is none.
    pub fn load(&self, config: &EngineConfig) -> Result<Option<Engine>, CheckpointError> {
        let path = self.checkpoint_path();
        match self.read()? {
            None => Ok(None),
            Some(state) => Engine::from_state(config.clone(), state)
                .map(Some)
                .map_err(|e: StateError| corrupt(&path, e)),
        }
    }

    /// The Python-format tables in the directory, split into those to import (written by the
    /// Python version) and rl-v2's own copies (marked with [`WRITTEN_BY_KEY`]), which are never
    /// imported.
    pub fn python_tables(&self) -> Result<FoundTables, CheckpointError> {
        let mut found = FoundTables::default();
        for (file, slot) in [
            (META_TABLE_FILE, &mut found.meta),
            (SIZING_TABLE_FILE, &mut found.sizing),
        ] {
            let path = self.dir.join(file);
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e)),
            };
            if written_by_rl_v2(&bytes) {
                found.own.push(path);
            } else {
                *slot = Some(path);
            }
        }
        Ok(found)
    }

    /// Imports the Python-format tables the Python version wrote in the directory into a fresh
    /// engine (rl-v2's own copies are skipped).
    pub fn import_python_tables(&self, config: &EngineConfig) -> Result<Engine, CheckpointError> {
        let found = self.python_tables()?;
        import_python_tables(config, found.meta.as_deref(), found.sizing.as_deref())
    }
}

/// Python-format tables found in a checkpoint directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FoundTables {
    /// The meta-strategy table, when the Python version wrote it.
    pub meta: Option<PathBuf>,
    /// The position-sizing table, when the Python version wrote it.
    pub sizing: Option<PathBuf>,
    /// Tables rl-v2 wrote: outputs, never imported.
    pub own: Vec<PathBuf>,
}

impl FoundTables {
    /// Whether there is a table to import.
    pub fn importable(&self) -> bool {
        self.meta.is_some() || self.sizing.is_some()
    }
}

/// Whether a table file carries rl-v2's marker. A file that is not a JSON object is left to
/// the importer, which reports it as corrupt.
fn written_by_rl_v2(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Marker {
        written_by: Option<String>,
    }
    serde_json::from_slice::<Marker>(bytes)
        .ok()
        .and_then(|m| m.written_by)
        .is_some_and(|w| w == WRITTEN_BY_RL_V2)
}

/// A fresh engine holding the Q-tables of the given Python-format files.
pub fn import_python_tables(
    config: &EngineConfig,
    meta: Option<&Path>,
    sizing: Option<&Path>,
) -> Result<Engine, CheckpointError> {
    // A fresh engine's state with the tables loaded into it, then validated and configured as
    // any checkpoint is.
    let mut state = Engine::new(config.clone()).state().clone();
    let mut last = None;
    for (path, kind) in [
        (meta, AgentKind::MetaStrategy),
        (sizing, AgentKind::PositionSizing),
    ] {
        let Some(path) = path else { continue };
        let bytes = fs::read(path).map_err(io_err(path))?;
        let table: PythonTable = serde_json::from_slice(&bytes).map_err(|e| corrupt(path, e))?;
        let agent = match kind {
            AgentKind::MetaStrategy => &mut state.meta,
            AgentKind::PositionSizing => &mut state.sizing,
        };
        table.load_into(agent).map_err(|e| corrupt(path, e))?;
        last = Some(path);
    }
    Engine::from_state(config.clone(), state).map_err(|e| match last {
        Some(path) => corrupt(path, e),
        None => corrupt(Path::new("(no table)"), e),
    })
}

/// Files one checkpoint writes.
pub const FILES_PER_CHECKPOINT: usize = 3;
/// Steps of writing one file atomically (see [`StepKind`]).
pub const STEPS_PER_FILE: u32 = 4;
/// Steps of writing one checkpoint, as [`CheckpointStore::write_with`] numbers them.
pub const WRITE_STEPS: u32 = FILES_PER_CHECKPOINT as u32 * STEPS_PER_FILE;

/// A step of writing one file atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// The temporary file was created and written.
    WriteTemporary,
    /// The temporary file was synced.
    SyncTemporary,
    /// The temporary file was renamed over the file.
    Rename,
    /// The directory was synced.
    SyncDirectory,
}

/// A step of a checkpoint write, numbered from 1 across its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    /// 1 ..= [`WRITE_STEPS`].
    pub number: u32,
    /// What was done.
    pub kind: StepKind,
    /// The file it was done for.
    pub file: &'a str,
}

fn temporary_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{file_name}.tmp"))
}

/// Writes a file's content into a writer; an error that is not I/O is an encoding failure.
type Encoder<'a> = &'a dyn Fn(&mut dyn Write) -> serde_json::Result<()>;

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let encoder: Encoder = &|out| out.write_all(bytes).map_err(serde_json::Error::io);
    write_atomic_with(path, "file", encoder, &mut |_| Ok(()))
}

/// As [`write_atomic`], the content streamed from `encoder` through a buffer (no copy of the
/// whole file in memory), calling `after_step` after each step. On an error before the rename
/// the temporary file is removed (best effort) and `path` is untouched.
fn write_atomic_with(
    path: &Path,
    file_name: &'static str,
    encoder: Encoder,
    after_step: &mut dyn FnMut(StepKind) -> std::io::Result<()>,
) -> Result<(), CheckpointError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temporary_path(path);
    let staged = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        encoder(&mut out).map_err(|e| match e.is_io() {
            true => io_err(&tmp)(e.into()),
            false => CheckpointError::Encode {
                file: file_name,
                reason: e.to_string(),
            },
        })?;
        let file = out.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        after_step(StepKind::WriteTemporary).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        after_step(StepKind::SyncTemporary).map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if let Err(e) = staged {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    after_step(StepKind::Rename).map_err(io_err(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    after_step(StepKind::SyncDirectory).map_err(io_err(dir))?;
    Ok(())
}

/// Bytes buffered between the encoder and a checkpoint file.
const WRITE_BUFFER: usize = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;
    use rl_v2_core::event::{decode, EventKind};

    fn trained() -> Engine {
        let mut e = Engine::new(EngineConfig::default());
        let events = [
            (
                EventKind::PredictionGenerated,
                r#"{"symbol":"BTC","confidence":0.7}"#,
            ),
            (
                EventKind::TradeExecuted,
                r#"{"symbol":"BTC","leverage":10}"#,
            ),
            (
                EventKind::PositionClosed,
                r#"{"symbol":"BTC","pnl_pct":2.5}"#,
            ),
        ];
        for (i, (kind, raw)) in events.iter().enumerate() {
            let ev = decode(*kind, raw.as_bytes(), 65536, 100.0).unwrap();
            e.apply(i as u64 + 1, &ev);
        }
        e
    }

    #[test]
    fn write_then_load_gives_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        assert!(store.read().unwrap().is_none());
        let engine = trained();
        store.write(engine.state()).unwrap();
        let loaded = store.load(engine.config()).unwrap().unwrap();
        assert_eq!(loaded.state(), engine.state());
        assert_eq!(
            encode(loaded.state()).unwrap(),
            encode(engine.state()).unwrap()
        );
        assert!(!dir.path().join(".checkpoint.json.tmp").exists());
    }

    #[test]
    fn corrupt_checkpoint_is_an_error_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        fs::write(store.checkpoint_path(), b"{\"format_version\": 1, \"trunc").unwrap();
        let err = store.load(&EngineConfig::default()).unwrap_err();
        assert!(err.to_string().contains("is corrupt"), "{err}");
        assert_eq!(
            fs::read(store.checkpoint_path()).unwrap(),
            b"{\"format_version\": 1, \"trunc"
        );
    }

    #[test]
    fn python_tables_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        let engine = trained();
        store.write(engine.state()).unwrap();
        let raw: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join(META_TABLE_FILE)).unwrap()).unwrap();
        assert_eq!(raw["update_count"], 1);
        assert!(raw["q_table"].as_object().unwrap().len() == 1);
        assert_eq!(raw[WRITTEN_BY_KEY], WRITTEN_BY_RL_V2);
        // Start-up never imports rl-v2's own tables; an explicit import does.
        let found = store.python_tables().unwrap();
        assert!(!found.importable(), "{found:?}");
        let imported = import_python_tables(
            engine.config(),
            Some(&dir.path().join(META_TABLE_FILE)),
            Some(&dir.path().join(SIZING_TABLE_FILE)),
        )
        .unwrap();
        // The Python format carries the table, epsilon and the update count (not per-state
        // visit counts).
        for (a, b) in [
            (imported.state().meta.q(), engine.state().meta.q()),
            (imported.state().sizing.q(), engine.state().sizing.q()),
        ] {
            assert_eq!(a.table(), b.table());
            assert_eq!(a.epsilon(), b.epsilon());
            assert_eq!(a.update_count(), b.update_count());
        }
    }

    #[test]
    fn python_import_rejects_unknown_actions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(META_TABLE_FILE);
        fs::write(
            &path,
            r#"{"q_table":{"s":{"buy_the_dip":1.0}},"epsilon":0.1,"update_count":3}"#,
        )
        .unwrap();
        let err = import_python_tables(&EngineConfig::default(), Some(&path), None).unwrap_err();
        assert!(err.to_string().contains("buy_the_dip"), "{err}");
    }

    /// A table as the Python version writes it: no marker.
    const PYTHON_META: &str = r#"{"q_table":{"s":{"0":1.5}},"epsilon":0.2,"update_count":7}"#;

    #[test]
    fn a_full_write_takes_every_step_once_checkpoint_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        let mut steps = Vec::new();
        store
            .write_with(trained().state(), &mut |step| {
                steps.push((step.number, step.kind, step.file.to_string()));
                Ok(())
            })
            .unwrap();
        assert_eq!(steps.len(), WRITE_STEPS as usize);
        assert!(steps.iter().enumerate().all(|(i, s)| s.0 == i as u32 + 1));
        assert!(
            steps[..4].iter().all(|s| s.2 == CHECKPOINT_FILE),
            "{steps:?}"
        );
        assert_eq!(steps[2].1, StepKind::Rename);
    }

    #[test]
    fn a_write_stopped_after_any_step_never_counts_as_an_import() {
        let before = Engine::new(EngineConfig::default());
        let after = trained();
        for previous in [None, Some(before.state())] {
            for k in 1..=WRITE_STEPS {
                let dir = tempfile::tempdir().unwrap();
                let store = CheckpointStore::new(dir.path());
                // The Python version's table, and maybe an earlier checkpoint.
                fs::write(dir.path().join(META_TABLE_FILE), PYTHON_META).unwrap();
                if let Some(state) = previous {
                    fs::write(store.checkpoint_path(), encode(state).unwrap()).unwrap();
                }
                let err = store
                    .write_with(after.state(), &mut |step| {
                        if step.number == k {
                            Err(std::io::Error::other("stopped"))
                        } else {
                            Ok(())
                        }
                    })
                    .unwrap_err();
                assert!(err.to_string().contains("stopped"), "{err}");
                match store.read().unwrap() {
                    // A checkpoint exists: start-up loads it, and it is the old or the new one.
                    Some(state) => {
                        let bytes = encode(&state).unwrap();
                        assert!(
                            bytes == encode(after.state()).unwrap()
                                || Some(bytes) == previous.map(|p| encode(p).unwrap()),
                            "step {k}: a third state"
                        );
                        if previous.is_none() {
                            assert!(k >= 3, "step {k}: checkpoint in place before its rename");
                        }
                    }
                    // None: start-up may import only the Python version's own table.
                    None => {
                        assert!(previous.is_none());
                        let found = store.python_tables().unwrap();
                        assert_eq!(found.meta, Some(dir.path().join(META_TABLE_FILE)));
                        assert_eq!(
                            fs::read_to_string(dir.path().join(META_TABLE_FILE)).unwrap(),
                            PYTHON_META,
                            "step {k}: the Python table was replaced before the checkpoint"
                        );
                    }
                }
                // Whatever the step, the tables rl-v2 wrote are never importable.
                let found = store.python_tables().unwrap();
                for own in &found.own {
                    assert_ne!(found.meta.as_ref(), Some(own));
                    assert_ne!(found.sizing.as_ref(), Some(own));
                }
                assert!(found.sizing.is_none(), "step {k}: {found:?}");
                // A step that failed before its rename left no temporary file.
                if k % STEPS_PER_FILE < 3 && k % STEPS_PER_FILE != 0 {
                    assert!(
                        store.remove_stale_temporaries().unwrap().is_empty(),
                        "step {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn tables_without_the_marker_are_the_python_versions_and_importable() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        fs::write(dir.path().join(META_TABLE_FILE), PYTHON_META).unwrap();
        let found = store.python_tables().unwrap();
        assert!(found.importable());
        assert!(found.own.is_empty());
        let engine = store
            .import_python_tables(&EngineConfig::default())
            .unwrap();
        assert_eq!(engine.state().meta.q().update_count(), 7);
    }

    #[test]
    fn stale_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        let tmp = dir.path().join(".checkpoint.json.tmp");
        fs::write(&tmp, b"half a checkpoint").unwrap();
        fs::write(dir.path().join(".position_sizing_q_table.json.tmp"), b"{").unwrap();
        let removed = store.remove_stale_temporaries().unwrap();
        assert_eq!(removed.len(), 2);
        assert!(!tmp.exists());
        assert!(store.remove_stale_temporaries().unwrap().is_empty());
    }

    #[test]
    fn a_serialisation_failure_is_a_typed_error_not_empty_bytes() {
        struct Unserialisable;
        impl Serialize for Unserialisable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let err = encode_json(CHECKPOINT_FILE, &Unserialisable).unwrap_err();
        assert!(matches!(err, CheckpointError::Encode { .. }), "{err}");
        assert!(err.to_string().contains("nothing was written"), "{err}");
    }

    #[test]
    fn a_failure_while_streaming_a_file_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CHECKPOINT_FILE);
        fs::write(&path, b"the old checkpoint").unwrap();
        let encoder: Encoder = &|out| {
            out.write_all(&[b'x'; 3 * WRITE_BUFFER])
                .map_err(serde_json::Error::io)?;
            Err(serde::ser::Error::custom("no"))
        };
        let err = write_atomic_with(&path, CHECKPOINT_FILE, encoder, &mut |_| Ok(())).unwrap_err();
        assert!(matches!(err, CheckpointError::Encode { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"the old checkpoint");
        assert!(CheckpointStore::new(dir.path())
            .remove_stale_temporaries()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn streamed_tables_are_the_bytes_of_the_python_table() {
        let dir = tempfile::tempdir().unwrap();
        let engine = trained();
        CheckpointStore::new(dir.path())
            .write(engine.state())
            .unwrap();
        for (file, agent) in [
            (META_TABLE_FILE, &engine.state().meta),
            (SIZING_TABLE_FILE, &engine.state().sizing),
        ] {
            // The bytes of the whole table built in memory, plus the marker.
            let mut whole = encode_json(file, &PythonTable::of(agent)).unwrap();
            whole.pop();
            whole.extend_from_slice(br#","written_by":"rl-v2"}"#);
            assert_eq!(fs::read(dir.path().join(file)).unwrap(), whole, "{file}");
        }
    }

    fn hand_edited(edit: impl FnOnce(&mut serde_json::Value)) -> CheckpointError {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        let mut value: serde_json::Value =
            serde_json::from_slice(&encode(trained().state()).unwrap()).unwrap();
        edit(&mut value);
        fs::write(store.checkpoint_path(), value.to_string()).unwrap();
        store.load(&EngineConfig::default()).unwrap_err()
    }

    #[test]
    fn checkpoint_values_are_validated_on_load_naming_the_field() {
        let err = hand_edited(|v| v["meta"]["q"]["epsilon"] = 5.0.into());
        assert!(err.to_string().contains("meta.q.epsilon = 5"), "{err}");
        let err = hand_edited(|v| v["sizing"]["q"]["epsilon"] = (-0.1).into());
        assert!(err.to_string().contains("sizing.q.epsilon"), "{err}");
        let err = hand_edited(|v| v["last_applied_seq"] = u64::MAX.into());
        assert!(err.to_string().contains("last_applied_seq"), "{err}");
        // JSON has no NaN or infinity: an overflowing number is refused by the parser.
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        let text = String::from_utf8(encode(trained().state()).unwrap()).unwrap();
        let text = text.replacen("\"epsilon\":", "\"epsilon\":1e999,\"x\":", 1);
        fs::write(store.checkpoint_path(), text).unwrap();
        let err = store.load(&EngineConfig::default()).unwrap_err();
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }
}
