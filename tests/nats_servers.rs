//! The test harness's servers: the pinned release is provisioned with its checksum verified, and
//! a cluster forms with JetStream on every node.

mod common;
use common::*;

use rl_v2_tools::nats_server::{provision, version, PINNED_VERSION};
use std::path::Path;

#[test]
fn the_pinned_release_is_provisioned_and_reports_its_version() {
    let bin = provision(Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("provisioned");
    assert_eq!(version(&bin).expect("runs"), PINNED_VERSION);
    // A second call finds it in place.
    assert_eq!(
        provision(Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap(),
        bin
    );
}

#[tokio::test]
async fn a_three_node_cluster_serves_jetstream_on_every_node() {
    let cluster = start_cluster();
    assert_eq!(cluster.nodes.len(), 3);
    let client = client(&cluster.urls()).await;
    let js = async_nats::jetstream::new(client);
    // The meta leader is elected once the routes are up: creating an R3 stream succeeds then.
    let created = tokio::time::timeout(WAIT, async {
        loop {
            let made = js
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: "R3".into(),
                    subjects: vec!["r3.>".into()],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await;
            match made {
                Ok(mut stream) => break stream.info().await.map(|i| i.config.num_replicas),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("the cluster elects a JetStream leader");
    assert_eq!(created.expect("stream info"), 3);
}
