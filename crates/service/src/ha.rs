//! The hot standby: several instances on one stream, one of them publishing.
//!
//! Every instance consumes the whole stream and applies every event to its own engine; the
//! engine is deterministic, so all engines hold the same state and make the same decisions with
//! the same ids. Only the holder of a lease publishes them.
//!
//! * **Lease.** Key `<stream>` of the JetStream key-value bucket `ha.bucket`, whose `max_age`
//!   is `ha.lease_ttl_secs`: a value not rewritten within the TTL ages out. An instance wins it
//!   with `create` (only when the key is absent); its **epoch** is that create's revision, which
//!   only grows. The leader renews every TTL/8 with a compare-and-set `update` on the revision
//!   it last wrote, so it can never overwrite another instance's lease.
//! * **Fencing.** The leader publishes only while its last successful renewal was *sent* less
//!   than TTL/2 ago (a monotonic clock, checked before every publish): the key it wrote cannot
//!   age out before TTL after that, so it stops at least TTL/2 before anyone else can win.
//!   A leader frozen past its lease (SIGSTOP, a long pause) wakes up fenced and finds its
//!   revision gone.
//! * **Takeover.** Before each renewal the leader flushes its connection and then records in the
//!   bucket `<ha.bucket>_progress` the highest stream sequence whose decisions it has published
//!   (`published_through`). Followers keep the decisions they would have published (at most
//!   [`MAX_HELD`], oldest dropped first and counted), forgetting those the leader has recorded.
//!   A new leader publishes its kept decisions past the recorded sequence, with their own ids
//!   and its epoch, then goes live. Decisions are therefore published at least once, each id
//!   always with the same content; learning happens exactly once per instance.
//! * **Transient failures** (a broker node lost, a reconnect) are logged and retried; a leader
//!   that cannot renew fences itself and becomes a follower.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::settings::{invalid, DeliveryMode, DurationRange, Settings, SettingsError};
use crate::ServiceError;

/// Decisions (and dead letters) a follower keeps for a takeover.
pub const MAX_HELD: usize = 262_144;
/// Shortest and longest lease.
const TTL_RANGE: (f64, f64) = (1.0, 600.0);

/// Checks the `[ha]` settings; the error names the key.
pub fn validate(settings: &Settings) -> Result<(), SettingsError> {
    let ha = &settings.ha;
    DurationRange::from(TTL_RANGE.0, TTL_RANGE.1).check("ha.lease_ttl_secs", ha.lease_ttl_secs)?;
    if !is_token(&ha.bucket) {
        return Err(invalid("ha.bucket", "must be letters, digits, - or _"));
    }
    if !ha.instance_id.is_empty() && !is_token(&ha.instance_id) {
        return Err(invalid(
            "ha.instance_id",
            "must be letters, digits, - or _ (it is a subject token)",
        ));
    }
    if ha.enabled && settings.delivery.mode != DeliveryMode::Jetstream {
        return Err(invalid(
            "ha.enabled",
            "needs delivery.mode = \"jetstream\": every instance must see the same events in one order",
        ));
    }
    if ha.enabled && !is_token(&settings.delivery.stream) {
        return Err(invalid(
            "delivery.stream",
            "must be letters, digits, - or _ with [ha] (it is the lease's key)",
        ));
    }
    Ok(())
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// This instance's id: `ha.instance_id`, else `<hostname>-<pid>` with anything but letters,
/// digits, - and _ replaced by `-`.
pub fn instance_id(settings: &Settings) -> String {
    if !settings.ha.instance_id.is_empty() {
        return settings.ha.instance_id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "rl-v2".into());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{}", std::process::id())
}

/// Adds `"epoch":N` to a JSON object's bytes (a decision or dead letter as serialised).
pub fn with_epoch(payload: &[u8], epoch: u64) -> Bytes {
    match payload.iter().rposition(|b| *b == b'}') {
        Some(end) => {
            let head = &payload[..end];
            let empty = head.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            let sep = if empty { "" } else { "," };
            let mut out = Vec::with_capacity(payload.len() + 24);
            out.extend_from_slice(head);
            out.extend_from_slice(format!("{sep}\"epoch\":{epoch}").as_bytes());
            out.extend_from_slice(&payload[end..]);
            Bytes::from(out)
        }
        None => Bytes::copy_from_slice(payload),
    }
}

/// A publication a follower keeps for a takeover.
#[derive(Debug, Clone)]
pub struct Held {
    /// Stream sequence of the event it came from.
    pub seq: u64,
    /// Where it goes.
    pub subject: String,
    /// The payload, without epoch.
    pub payload: Bytes,
    /// Its `Nats-Msg-Id`.
    pub msg_id: Option<String>,
}

/// What the election task tells the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publish nothing.
    Follower,
    /// Publish, under `epoch`, every decision past `floor` (`None`: what the previous leader
    /// published is unknown, so everything kept).
    Leader {
        /// The lease's create revision.
        epoch: u64,
        /// The previous leader's `published_through`.
        floor: Option<u64>,
    },
}

/// State shared between the election task and the event loop.
#[derive(Debug)]
struct Shared {
    /// Start of the monotonic clock of `fence_nanos`.
    base: Instant,
    /// Publishing is allowed until `base + fence_nanos`.
    fence_nanos: AtomicU64,
    /// Highest stream sequence whose decisions this instance published (or the previous
    /// leader had, below this one's floor).
    published_through: AtomicU64,
    /// Highest stream sequence whose publications are known delivered: read from the progress
    /// bucket (the leader's record), or, while leading, confirmed by a flush on an unbroken
    /// connection.
    recorded: AtomicU64,
    /// The current leader's id and epoch, as last seen.
    leader: Mutex<(String, u64)>,
}

impl Shared {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            fence_nanos: AtomicU64::new(0),
            published_through: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            leader: Mutex::new((String::new(), 0)),
        }
    }

    fn fence_until(&self, until: Instant) {
        let nanos = until.saturating_duration_since(self.base).as_nanos() as u64;
        self.fence_nanos.store(nanos, Ordering::SeqCst);
    }

    fn close_fence(&self) {
        self.fence_nanos.store(0, Ordering::SeqCst);
    }

    fn fenced(&self) -> bool {
        let now = self.base.elapsed().as_nanos() as u64;
        now >= self.fence_nanos.load(Ordering::SeqCst)
    }

    fn set_leader(&self, id: &str, epoch: u64) {
        if let Ok(mut l) = self.leader.lock() {
            if l.0 != id || l.1 != epoch {
                *l = (id.to_string(), epoch);
            }
        }
    }

    fn leader(&self) -> (String, u64) {
        self.leader.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// What `rl_v2.stats` says about this instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceReport {
    /// Its id (also in `rl_v2.stats.<id>`).
    pub id: String,
    /// Whether `[ha]` is enabled.
    pub ha: bool,
    /// `leader` (publishing) or `follower`.
    pub role: &'static str,
    /// The current leader's epoch (0 without HA or while none is known).
    pub epoch: u64,
    /// The current leader's id, as last seen.
    pub leader: String,
    /// Highest stream sequence whose decisions are known published.
    pub published_through: u64,
    /// Publications kept for a takeover.
    pub held: usize,
    /// Kept publications dropped because [`MAX_HELD`] was reached.
    pub held_dropped: u64,
    /// Events in the stream after the last one applied.
    pub lag: u64,
}

/// Whether to publish what an event caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Publish, with this epoch (`None` without HA).
    Publish(Option<u64>),
    /// Keep it for a takeover.
    Hold,
    /// The previous leader published it already.
    Skip,
}

/// The event loop's side of the standby: gates each publication, keeps what a follower must
/// not publish yet, and hands it over at a takeover.
pub struct Standby {
    id: String,
    shared: Option<Arc<Shared>>,
    /// The epoch the loop publishes under, and the floor it took over at.
    live: Option<(u64, u64)>,
    held: VecDeque<Held>,
    held_dropped: u64,
    lag: u64,
}

impl Standby {
    /// An instance without HA: it always publishes.
    pub fn solo(id: String) -> Self {
        Self {
            id,
            shared: None,
            live: None,
            held: VecDeque::new(),
            held_dropped: 0,
            lag: 0,
        }
    }

    /// This instance's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether to publish what the event at `seq` caused.
    pub fn gate(&self, seq: u64) -> Gate {
        let Some(shared) = &self.shared else {
            return Gate::Publish(None);
        };
        match self.live {
            Some((epoch, floor)) if !shared.fenced() => {
                if seq <= floor {
                    Gate::Skip
                } else {
                    Gate::Publish(Some(epoch))
                }
            }
            _ => Gate::Hold,
        }
    }

    /// Keeps a publication until it is known delivered: a follower's for a takeover, the
    /// leader's own for a republication after a reconnect. Drops those known delivered.
    pub fn hold(&mut self, held: Held) {
        if self.shared.is_none() {
            return;
        }
        let recorded = self
            .shared
            .as_ref()
            .map_or(0, |s| s.recorded.load(Ordering::Relaxed));
        while self.held.front().is_some_and(|h| h.seq <= recorded) {
            self.held.pop_front();
        }
        if self.held.len() >= MAX_HELD {
            self.held.pop_front();
            self.held_dropped += 1;
            if self.held_dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = self.held_dropped,
                    "the follower's kept decisions are full; the oldest are dropped (a takeover \
                     cannot republish them)"
                );
            }
        }
        self.held.push_back(held);
    }

    /// Records that the event at `seq` was handled, with `pending` events behind it.
    pub fn handled(&mut self, seq: u64, pending: Option<u64>) {
        if let Some(p) = pending {
            self.lag = p;
        }
        if let (Some(shared), Some(_)) = (&self.shared, self.live) {
            if !shared.fenced() {
                shared.published_through.fetch_max(seq, Ordering::SeqCst);
            }
        }
    }

    /// Takes the new role; at a takeover (or a reconnect while leading), returns the epoch and
    /// the kept publications to publish now (those past the recorded `published_through`),
    /// oldest first; they stay kept until known delivered.
    /// `applied` is the last sequence applied: once the backlog is out, everything up to it is
    /// published.
    pub fn take_role(&mut self, role: Role, applied: u64) -> Option<(u64, Vec<Held>)> {
        let shared = self.shared.clone()?;
        match role {
            Role::Follower => {
                self.live = None;
                None
            }
            Role::Leader { epoch, floor } => {
                let from = floor.unwrap_or(0);
                self.held.retain(|h| h.seq > from);
                let backlog: Vec<Held> = self.held.iter().cloned().collect();
                self.live = Some((epoch, from));
                shared
                    .published_through
                    .fetch_max(applied, Ordering::SeqCst);
                tracing::info!(
                    epoch,
                    floor = ?floor,
                    republished = backlog.len(),
                    "leader: publishing the decisions the previous leader may not have"
                );
                Some((epoch, backlog))
            }
        }
    }

    /// What stats say about this instance.
    pub fn report(&self) -> InstanceReport {
        let Some(shared) = &self.shared else {
            return InstanceReport {
                id: self.id.clone(),
                ha: false,
                role: "leader",
                epoch: 0,
                leader: self.id.clone(),
                published_through: 0,
                held: 0,
                held_dropped: 0,
                lag: self.lag,
            };
        };
        let leading = self.live.is_some() && !shared.fenced();
        let (leader, epoch) = shared.leader();
        let published = shared.published_through.load(Ordering::Relaxed);
        let recorded = shared.recorded.load(Ordering::Relaxed);
        InstanceReport {
            id: self.id.clone(),
            ha: true,
            role: if leading { "leader" } else { "follower" },
            epoch,
            leader,
            published_through: if leading { published } else { recorded },
            held: self.held.len(),
            held_dropped: self.held_dropped,
            lag: self.lag,
        }
    }
}

/// Role changes from the election, for the event loop's `select!`.
pub struct Roles(Option<watch::Receiver<Role>>);

impl Roles {
    /// No election: no change ever comes.
    pub fn none() -> Self {
        Self(None)
    }

    /// The next role the election gives this instance (pending forever without HA, or once the
    /// election ended).
    pub async fn next(&mut self) -> Role {
        if let Some(rx) = &mut self.0 {
            if rx.changed().await.is_ok() {
                return *rx.borrow_and_update();
            }
            self.0 = None;
        }
        std::future::pending().await
    }
}

/// The lease's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseValue {
    instance: String,
    #[serde(default)]
    epoch: u64,
}

/// The progress record's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    published_through: u64,
    instance: String,
    epoch: u64,
}

/// Joins the instances on the stream: claims it (see [`crate::claim`]), then, with `[ha]`,
/// starts the election. Returns the event loop's gate and role changes; the claim's and the
/// election's tasks go to `tasks`.
pub async fn join(
    client: &async_nats::Client,
    settings: &Settings,
    tasks: &mut crate::supervise::Tasks,
    shutdown: &CancellationToken,
) -> Result<(Standby, Roles), ServiceError> {
    let id = instance_id(settings);
    let stream = match settings.delivery.mode {
        DeliveryMode::Jetstream => settings.delivery.stream.clone(),
        DeliveryMode::Core => "core".to_string(),
    };
    let me = crate::claim::Claimant {
        instance: id.clone(),
        ha: settings.ha.enabled,
        started_at: crate::source::now_secs(),
    };
    let subject = crate::claim::subject(&settings.service.name, &stream);
    let answering = crate::claim::claim(client, subject, &stream, me, shutdown.clone()).await?;
    tasks.add("claim", answering);
    if !settings.ha.enabled {
        return Ok((Standby::solo(id), Roles::none()));
    }
    let (standby, roles, election) = start(client, settings, id, shutdown.clone()).await?;
    tasks.add("election", election);
    Ok((standby, roles))
}

/// Creates the buckets and starts the election: the event loop's [`Standby`] and the task that
/// runs the election until `shutdown` (then releases a lease it holds).
pub async fn start(
    client: &async_nats::Client,
    settings: &Settings,
    id: String,
    shutdown: CancellationToken,
) -> Result<(Standby, Roles, JoinHandle<()>), ServiceError> {
    let ttl = Duration::from_secs_f64(settings.ha.lease_ttl_secs);
    let js = jetstream::new(client.clone());
    let url = settings.nats.redacted_url();
    let replicas = settings.delivery.stream_replicas;
    let lease = bucket(&js, &url, &settings.ha.bucket, ttl, replicas).await?;
    let progress_name = format!("{}_progress", settings.ha.bucket);
    let progress = bucket(&js, &url, &progress_name, Duration::ZERO, replicas).await?;
    let shared = Arc::new(Shared::new());
    let (tx, rx) = watch::channel(Role::Follower);
    let election = Election {
        lease,
        progress,
        key: settings.delivery.stream.clone(),
        id: id.clone(),
        ttl,
        shared: shared.clone(),
        tx,
        client: client.clone(),
    };
    tracing::info!(instance = %id, bucket = %settings.ha.bucket, ttl_secs = ttl.as_secs_f64(), "hot standby: following until elected");
    let task = tokio::spawn(election.run(shutdown));
    let mut standby = Standby::solo(id);
    standby.shared = Some(shared);
    Ok((standby, Roles(Some(rx)), task))
}

/// Gets or creates a key-value bucket whose values live `max_age` (zero: forever).
async fn bucket(
    js: &jetstream::Context,
    url: &str,
    name: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, ServiceError> {
    let config = kv::Config {
        bucket: name.to_string(),
        description: "rl-v2 hot standby".into(),
        history: 1,
        max_age,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let created = match js.create_key_value(config).await {
        Ok(store) => return Ok(store),
        Err(e) => e,
    };
    // The bucket may exist with another configuration: use it if its TTL is ours.
    let existing = match js.get_key_value(name).await {
        Ok(store) => store,
        Err(_) => {
            return Err(ServiceError::Ha(format!(
                "[ha] needs the JetStream key-value bucket {name}, and the server at {url} could \
                 not create it ({created}). Key-value leases need nats-server 2.10 or later with \
                 JetStream: upgrade the server, or run a single instance with ha.enabled = false"
            )))
        }
    };
    let found = existing.stream.cached_info().config.max_age;
    if found != max_age {
        return Err(ServiceError::Ha(format!(
            "the key-value bucket {name} exists with max_age {found:?}, not {max_age:?}: every \
             instance must use the same ha.lease_ttl_secs (or delete the bucket {name} so it is \
             created again)"
        )));
    }
    Ok(existing)
}

/// A lease this instance holds.
#[derive(Debug, Clone, Copy)]
struct Lease {
    epoch: u64,
    revision: u64,
}

/// The election task.
struct Election {
    lease: kv::Store,
    progress: kv::Store,
    key: String,
    id: String,
    ttl: Duration,
    shared: Arc<Shared>,
    tx: watch::Sender<Role>,
    client: async_nats::Client,
}

impl Election {
    /// Longest wait for one key-value operation.
    fn op_timeout(&self) -> Duration {
        self.ttl / 4
    }

    async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.ttl / 8);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut held: Option<Lease> = None;
        let mut connects = self.connects();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            let now = self.connects();
            let reconnected = now != connects;
            connects = now;
            held = match held {
                None => self.try_acquire().await,
                Some(lease) => self.renew(lease, reconnected).await,
            };
        }
        if let Some(lease) = held {
            self.release(lease).await;
        }
    }

    /// Runs a key-value operation with a timeout; `None` (logged) when it failed.
    async fn op<T, E: std::fmt::Display>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Option<Result<T, E>> {
        match tokio::time::timeout(self.op_timeout(), fut).await {
            Ok(r) => Some(r),
            Err(_) => {
                tracing::debug!(what, "key-value operation timed out");
                None
            }
        }
    }

    /// The `published_through` recorded in the progress bucket.
    async fn read_progress(&self) -> Option<u64> {
        match self.op("read progress", self.progress.get(&self.key)).await {
            Some(Ok(Some(bytes))) => {
                let p: Progress = serde_json::from_slice(&bytes).ok()?;
                self.shared
                    .recorded
                    .fetch_max(p.published_through, Ordering::SeqCst);
                Some(p.published_through)
            }
            Some(Ok(None)) => Some(0),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the leader's progress");
                None
            }
            None => None,
        }
    }

    /// As a follower: notes the leader, or wins the lease when it is free.
    async fn try_acquire(&self) -> Option<Lease> {
        match self.op("read lease", self.lease.entry(&self.key)).await? {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                if let Ok(v) = serde_json::from_slice::<LeaseValue>(&entry.value) {
                    self.shared.set_leader(&v.instance, v.epoch);
                }
                self.read_progress().await;
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the lease; retrying");
                return None;
            }
        }
        let value = serde_json::to_vec(&LeaseValue {
            instance: self.id.clone(),
            epoch: 0,
        })
        .unwrap_or_default();
        let sent = Instant::now();
        let epoch = match self
            .op("create lease", self.lease.create(&self.key, value.into()))
            .await?
        {
            Ok(revision) => revision,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the lease; retrying");
                return None;
            }
        };
        self.shared.fence_until(sent + self.ttl / 2);
        self.shared.set_leader(&self.id, epoch);
        let floor = self.read_progress().await;
        tracing::info!(epoch, previous_published_through = ?floor, "won the lease: leading");
        let _ = self.tx.send(Role::Leader { epoch, floor });
        Some(Lease {
            epoch,
            revision: epoch,
        })
    }

    /// Connections made so far (a change means the connection broke and was remade).
    fn connects(&self) -> u64 {
        self.client.statistics().connects.load(Ordering::SeqCst)
    }

    /// As the leader: renews, records what is delivered, and after a reconnect has the event
    /// loop publish again what may have been lost with the old connection; fences and demotes
    /// when it cannot renew.
    async fn renew(&self, lease: Lease, reconnected: bool) -> Option<Lease> {
        let before = self.connects();
        let published = self.shared.published_through.load(Ordering::SeqCst);
        let flushed = matches!(self.op("flush", self.client.flush()).await, Some(Ok(())));
        // A flush confirms what was written before it only on the same connection.
        let broken = reconnected || self.connects() != before;
        let flushed = flushed && !broken;
        let value = serde_json::to_vec(&LeaseValue {
            instance: self.id.clone(),
            epoch: lease.epoch,
        })
        .unwrap_or_default();
        let sent = Instant::now();
        let renewed = self
            .op(
                "renew lease",
                self.lease.update(&self.key, value.into(), lease.revision),
            )
            .await;
        match renewed {
            Some(Ok(_)) if self.shared.fenced() => {
                // The fence lapsed before this renewal came back: the event loop may have kept
                // decisions meanwhile, which only a takeover publishes. Lead again only through
                // one, once the lease runs out.
                self.demote(lease, "the lease was renewed after half its TTL");
                None
            }
            Some(Ok(revision)) => {
                // The fence has held since the last renewal, so extending it leaves no gap.
                self.shared.fence_until(sent + self.ttl / 2);
                if flushed {
                    self.shared.recorded.fetch_max(published, Ordering::SeqCst);
                    self.record(published, lease.epoch).await;
                }
                if broken {
                    let floor = self.shared.recorded.load(Ordering::SeqCst);
                    tracing::warn!(
                        epoch = lease.epoch,
                        delivered_through = floor,
                        "the connection was remade while leading: publishing again what followed"
                    );
                    let _ = self.tx.send(Role::Leader {
                        epoch: lease.epoch,
                        floor: Some(floor),
                    });
                }
                Some(Lease { revision, ..lease })
            }
            Some(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                self.demote(lease, "the lease was lost (another instance holds it)");
                None
            }
            other => {
                if let Some(Err(e)) = other {
                    tracing::warn!(error = %e, "cannot renew the lease; retrying");
                }
                if self.shared.fenced() {
                    self.demote(lease, "the lease could not be renewed within half its TTL");
                    None
                } else {
                    Some(lease)
                }
            }
        }
    }

    /// Writes `published_through` to the progress bucket.
    async fn record(&self, published: u64, epoch: u64) {
        let value = serde_json::to_vec(&Progress {
            published_through: published,
            instance: self.id.clone(),
            epoch,
        })
        .unwrap_or_default();
        match self
            .op(
                "record progress",
                self.progress.put(&self.key, value.into()),
            )
            .await
        {
            Some(Ok(_)) => {
                self.shared.recorded.fetch_max(published, Ordering::SeqCst);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "cannot record progress"),
            None => {}
        }
    }

    fn demote(&self, lease: Lease, why: &str) {
        self.shared.close_fence();
        tracing::warn!(epoch = lease.epoch, "{why}: stopped publishing; following");
        let _ = self.tx.send(Role::Follower);
    }

    /// At shutdown: stops publishing, records what was published and frees the lease so a
    /// follower takes over at once.
    async fn release(&self, lease: Lease) {
        self.shared.close_fence();
        let before = self.connects();
        let published = self.shared.published_through.load(Ordering::SeqCst);
        let flushed = matches!(self.op("flush", self.client.flush()).await, Some(Ok(())));
        if flushed && self.connects() == before {
            self.record(published, lease.epoch).await;
        }
        let freed = self
            .op(
                "release lease",
                self.lease
                    .delete_expect_revision(&self.key, Some(lease.revision)),
            )
            .await;
        match freed {
            Some(Ok(())) => tracing::info!(epoch = lease.epoch, "lease released"),
            _ => tracing::warn!(
                epoch = lease.epoch,
                "could not release the lease; it runs out by itself"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_is_added_to_a_json_object() {
        assert_eq!(&with_epoch(br#"{"a":1}"#, 7)[..], br#"{"a":1,"epoch":7}"#);
        assert_eq!(&with_epoch(b"{}", 3)[..], br#"{"epoch":3}"#);
        let v: serde_json::Value = serde_json::from_slice(&with_epoch(br#"{"x":"}"}"#, 9)).unwrap();
        assert_eq!(v["epoch"], 9);
        assert_eq!(v["x"], "}");
    }

    fn held(seq: u64) -> Held {
        Held {
            seq,
            subject: "S".into(),
            payload: Bytes::from_static(b"{}"),
            msg_id: Some(format!("d-{seq}")),
        }
    }

    #[tokio::test]
    async fn a_takeover_publishes_what_is_past_the_previous_leaders_progress() {
        let shared = Arc::new(Shared::new());
        let (tx, rx) = watch::channel(Role::Follower);
        let mut standby = Standby::solo("me".into());
        standby.shared = Some(shared.clone());
        let mut roles = Roles(Some(rx));
        for seq in 1..=10 {
            assert_eq!(standby.gate(seq), Gate::Hold);
            standby.hold(held(seq));
        }
        // The leader's recorded progress lets the follower forget what is published.
        shared.recorded.store(4, Ordering::SeqCst);
        standby.hold(held(11));
        assert_eq!(standby.report().held, 7);
        shared.fence_until(Instant::now() + Duration::from_secs(60));
        tx.send(Role::Leader {
            epoch: 42,
            floor: Some(6),
        })
        .unwrap();
        let role = roles.next().await;
        let (epoch, backlog) = standby.take_role(role, 11).unwrap();
        assert_eq!(epoch, 42);
        let seqs: Vec<u64> = backlog.iter().map(|h| h.seq).collect();
        assert_eq!(seqs, vec![7, 8, 9, 10, 11]);
        assert_eq!(standby.gate(5), Gate::Skip);
        assert_eq!(standby.gate(12), Gate::Publish(Some(42)));
        // A closed fence stops publishing before the election says so.
        shared.close_fence();
        assert_eq!(standby.gate(12), Gate::Hold);
        assert_eq!(standby.report().role, "follower");
    }

    #[test]
    fn the_held_backlog_is_bounded() {
        let mut standby = Standby::solo("me".into());
        standby.shared = Some(Arc::new(Shared::new()));
        for seq in 1..=(MAX_HELD as u64 + 5) {
            standby.hold(held(seq));
        }
        assert_eq!(standby.held.len(), MAX_HELD);
        assert_eq!(standby.held_dropped, 5);
        assert_eq!(standby.held.front().map(|h| h.seq), Some(6));
    }

    #[test]
    fn settings_are_checked() {
        let mut s = Settings::defaults();
        s.ha.lease_ttl_secs = 0.5;
        assert!(validate(&s)
            .unwrap_err()
            .to_string()
            .contains("`ha.lease_ttl_secs`"));
        s.ha.lease_ttl_secs = 2.0;
        s.ha.instance_id = "a.b".into();
        assert!(validate(&s)
            .unwrap_err()
            .to_string()
            .contains("`ha.instance_id`"));
        s.ha.instance_id = String::new();
        assert!(is_token(&instance_id(&s)), "{}", instance_id(&s));
        s.ha.enabled = true;
        s.delivery.mode = DeliveryMode::Core;
        assert!(validate(&s)
            .unwrap_err()
            .to_string()
            .contains("`ha.enabled`"));
    }
}
