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

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::engine::{Engine, EngineConfig, EngineState, StateError};
pub use crate::python_format::PythonTable;

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
pub fn encode(state: &EngineState) -> Vec<u8> {
    // Serializing plain data with string keys cannot fail.
    serde_json::to_vec(state).unwrap_or_default()
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
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let tables = [
            (META_TABLE_FILE, PythonTable::of(&state.meta)),
            (SIZING_TABLE_FILE, PythonTable::of(&state.sizing)),
        ];
        for (name, table) in tables {
            let bytes = serde_json::to_vec(&table).unwrap_or_default();
            write_atomic(&self.dir.join(name), &bytes)?;
        }
        let path = self.checkpoint_path();
        write_atomic(&path, &encode(state))?;
        Ok(path)
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

    /// Whether Python-format tables exist in the directory.
    pub fn has_python_tables(&self) -> bool {
        self.dir.join(META_TABLE_FILE).exists() || self.dir.join(SIZING_TABLE_FILE).exists()
    }

    /// Imports the Python-format tables found in the directory into a fresh engine.
    pub fn import_python_tables(&self, config: &EngineConfig) -> Result<Engine, CheckpointError> {
        import_python_tables(
            config,
            Some(self.dir.join(META_TABLE_FILE))
                .filter(|p| p.exists())
                .as_deref(),
            Some(self.dir.join(SIZING_TABLE_FILE))
                .filter(|p| p.exists())
                .as_deref(),
        )
    }
}

/// A fresh engine holding the Q-tables of the given Python-format files.
pub fn import_python_tables(
    config: &EngineConfig,
    meta: Option<&Path>,
    sizing: Option<&Path>,
) -> Result<Engine, CheckpointError> {
    let mut engine = Engine::new(config.clone());
    for (path, kind) in [
        (meta, AgentKind::MetaStrategy),
        (sizing, AgentKind::PositionSizing),
    ] {
        let Some(path) = path else { continue };
        let bytes = fs::read(path).map_err(io_err(path))?;
        let table: PythonTable = serde_json::from_slice(&bytes).map_err(|e| corrupt(path, e))?;
        let state = engine.state_mut();
        let agent = match kind {
            AgentKind::MetaStrategy => &mut state.meta,
            AgentKind::PositionSizing => &mut state.sizing,
        };
        table.load_into(agent).map_err(|e| corrupt(path, e))?;
    }
    Ok(engine)
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp"));
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

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
        assert_eq!(encode(loaded.state()), encode(engine.state()));
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
        let imported = store.import_python_tables(engine.config()).unwrap();
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
}
