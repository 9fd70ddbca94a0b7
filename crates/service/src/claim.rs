//! One publisher per stream without the hot standby: an instance claims its stream on core NATS.
//!
//! Every instance subscribes to `<service.name>.claim.<stream>` and answers who it is. At
//! start-up it first asks that subject and listens [`ASK_WINDOW`] for answers. Without `[ha]`,
//! an older instance (or any instance in HA mode) on the same stream means two instances would
//! both decide and publish every event: start-up stops, saying so. In HA mode, an instance
//! without `[ha]` on the stream stops it the same way; HA instances sort out among themselves
//! who publishes (see [`crate::ha`]).

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ServiceError;

/// How long start-up listens for other instances' answers.
pub const ASK_WINDOW: Duration = Duration::from_millis(300);

/// What an instance answers on the claim subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claimant {
    /// Its instance id.
    pub instance: String,
    /// Whether it runs with `[ha]` enabled.
    pub ha: bool,
    /// When it started, epoch seconds: of two instances without HA, the older one keeps the
    /// stream.
    pub started_at: f64,
}

impl Claimant {
    /// Whether `self`, starting, must give way to `other`, already answering.
    pub fn yields_to(&self, other: &Claimant) -> bool {
        if other.instance == self.instance {
            return false;
        }
        match (self.ha, other.ha) {
            (true, true) => false,
            (false, false) => {
                (other.started_at, &other.instance) < (self.started_at, &self.instance)
            }
            _ => true,
        }
    }

    /// Why `self` cannot start beside `other`.
    fn refusal(&self, other: &Claimant, stream: &str) -> String {
        if self.ha {
            format!(
                "instance {} serves stream {stream} without the hot standby: it would publish \
                 every decision beside this instance's leader. Enable [ha] on it too \
                 (RL_V2__HA__ENABLED=true), or stop it",
                other.instance
            )
        } else {
            format!(
                "another instance ({}{}) already serves stream {stream}: two instances on one \
                 stream would both publish every decision. Stop it, or enable the hot standby on \
                 every instance ([ha] enabled = true, RL_V2__HA__ENABLED=true) so that one leads \
                 and the others follow",
                other.instance,
                if other.ha { ", in HA mode" } else { "" }
            )
        }
    }
}

/// The claim subject of `stream` for the service `name`.
pub fn subject(name: &str, stream: &str) -> String {
    format!("{name}.claim.{stream}")
}

/// Claims `stream`: fails when another instance holds it (see the module docs); otherwise
/// returns the task that answers later instances until `shutdown`.
pub async fn claim(
    client: &async_nats::Client,
    subject: String,
    stream: &str,
    me: Claimant,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, ServiceError> {
    let nats = |e| ServiceError::nats(format!("claim {subject}"), e);
    let mut requests = client.subscribe(subject.clone()).await.map_err(nats)?;
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.map_err(nats)?;
    let body = serde_json::to_vec(&me).unwrap_or_default();
    client
        .publish_with_reply(subject.clone(), inbox, body.clone().into())
        .await
        .map_err(|e| ServiceError::nats(format!("claim {subject}"), e))?;
    client
        .flush()
        .await
        .map_err(|e| ServiceError::nats(format!("claim {subject}"), e))?;
    let window = tokio::time::sleep(ASK_WINDOW);
    tokio::pin!(window);
    loop {
        tokio::select! {
            _ = &mut window => break,
            Some(answer) = answers.next() => {
                let Ok(other) = serde_json::from_slice::<Claimant>(&answer.payload) else {
                    continue;
                };
                if me.yields_to(&other) {
                    return Err(ServiceError::Claimed(me.refusal(&other, stream)));
                }
            }
        }
    }
    let _ = answers.unsubscribe().await;
    let client = client.clone();
    Ok(tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                r = requests.next() => r,
                _ = shutdown.cancelled() => break,
            };
            let Some(request) = request else { break };
            if let Some(reply) = request.reply {
                if let Err(e) = client.publish(reply, body.clone().into()).await {
                    tracing::warn!(error = %e, "claim answer failed");
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(instance: &str, ha: bool, started_at: f64) -> Claimant {
        Claimant {
            instance: instance.into(),
            ha,
            started_at,
        }
    }

    #[test]
    fn the_younger_of_two_plain_instances_yields() {
        assert!(c("b", false, 2.0).yields_to(&c("a", false, 1.0)));
        assert!(!c("a", false, 1.0).yields_to(&c("b", false, 2.0)));
        // Same start: the id breaks the tie, one way only.
        assert!(c("b", false, 1.0).yields_to(&c("a", false, 1.0)));
        assert!(!c("a", false, 1.0).yields_to(&c("b", false, 1.0)));
        assert!(!c("a", false, 1.0).yields_to(&c("a", false, 1.0)));
    }

    #[test]
    fn ha_instances_share_and_never_mix_with_plain_ones() {
        assert!(!c("b", true, 2.0).yields_to(&c("a", true, 1.0)));
        assert!(c("b", true, 0.0).yields_to(&c("a", false, 1.0)));
        assert!(c("b", false, 0.0).yields_to(&c("a", true, 1.0)));
        let why = c("b", false, 2.0).refusal(&c("a", false, 1.0), "S");
        assert!(
            why.contains("enable the hot standby") && why.contains("S"),
            "{why}"
        );
    }
}
