//! JetStream mode on a 3-node cluster: an R3 stream survives the death of the node that leads
//! it, and rl-v2 rides through without a restart.

mod common;

use async_nats::jetstream;
use common::*;
use std::sync::Arc;

#[tokio::test]
async fn sigkill_of_the_stream_leader_node_is_ridden_through_byte_identical() {
    let mut cluster = start_cluster();
    let urls = cluster.urls();
    let client = client(&urls).await;
    let js = jetstream::new(client.clone());
    jetstream_ready(&js).await;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("service");
    let mut service = Service::start(&urls, &data, &[("RL_V2__DELIVERY__STREAM_REPLICAS", "3")]);
    service.ready(&client).await;
    let mut stream = js
        .get_stream("RL_V2_EVENTS")
        .await
        .expect("rl-v2 made its stream");
    assert_eq!(stream.info().await.unwrap().config.num_replicas, 3);

    let all = Arc::new(events(3_000));
    let publishing = {
        let (js, all) = (js.clone(), all.clone());
        tokio::spawn(async move { publish_all(&js, &all, 0).await })
    };
    applied(&client, 1_000).await;
    let leader = stream_leader(&js, "RL_V2_EVENTS").await;
    let node = cluster
        .node_named(&leader)
        .expect("the leader is one of ours");
    node.kill();
    // The stream elects a new leader among the two left; events keep flowing.
    publishing.await.unwrap();
    applied(&client, 3_000).await;
    cluster
        .node_named(&leader)
        .unwrap()
        .restart()
        .expect("the node comes back");

    assert!(
        service.running(),
        "rl-v2 kept running: {}",
        service.log_text()
    );
    service.signal("TERM");
    assert!(service.wait().await.success(), "{}", service.log_text());
    let survived = std::fs::read(data.join("checkpoint.json")).unwrap();
    let reference = reference_checkpoint(&urls, dir.path(), 3_000).await;
    assert!(
        survived == reference,
        "the checkpoint after the node kill differs from an uninterrupted run"
    );
}
