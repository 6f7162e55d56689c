//! Disaster recovery with real processes: a three-node cluster loses two nodes for good
//! (kill -9); the survivor, stopped, is rewritten by `mokvd recover --force-new-cluster` into a
//! one-voter cluster, starts, serves every acknowledged key, and two fresh nodes join it through
//! gossip until writes commit on three voters again.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::{GetRequest, RangeRequest, ReadConsistency, Suffrage};
use mokv_tests::{eventually, Bins, Certs, Mokvd, NodeSpec};
use tonic::transport::Channel;

/// Every key and value the node behind `kv` holds, read with `consistency`.
async fn every_key(
    kv: &KvClient<Channel>,
    consistency: ReadConsistency,
) -> Option<BTreeMap<String, Vec<u8>>> {
    let mut kv = kv.clone();
    let mut all = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let req = RangeRequest {
            limit: 100,
            page_token,
            consistency: consistency as i32,
            ..RangeRequest::default()
        };
        let page = kv.range(req).await.ok()?.into_inner();
        all.extend(page.kvs.into_iter().map(|i| (i.key, i.value)));
        if page.next_page_token.is_empty() {
            return Some(all);
        }
        page_token = page.next_page_token;
    }
}

/// (voters, whether a leader is named) in `addr`'s own `GetServers` answer.
async fn voters(certs: &Certs, addr: &str) -> Option<(Vec<String>, bool)> {
    let servers = certs.servers(addr).await?;
    let names = servers
        .iter()
        .filter(|s| s.suffrage == Suffrage::Voter as i32)
        .map(|s| s.id.clone())
        .collect();
    Some((names, servers.iter().any(|s| s.is_leader)))
}

fn recover(bins: &Bins, data_dir: &Path) -> std::process::Output {
    let mut cmd = Command::new(&bins.mokvd);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MOKV_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["recover", "--force-new-cluster", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("running mokvd recover")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivor_recovers_a_lost_quorum_and_fresh_nodes_join() {
    let bins = Bins::get();
    let tmp = tempfile::tempdir().unwrap();
    let names = ["n1", "n2", "n3", "n4", "n5"];
    let certs = Certs::generate(&bins, &tmp.path().join("certs"), &names, &["root"]);
    let data = tmp.path().join("data");
    let spec = |name: &str| NodeSpec::node(&certs, &data, name);
    let n1 = Mokvd::start(&bins.mokvd, spec("n1").flag("--bootstrap"));
    let join = n1.gossip_addr.clone();
    let n2 = Mokvd::start(&bins.mokvd, spec("n2").with("--start-join-addrs", &join));
    let n3 = Mokvd::start(&bins.mokvd, spec("n3").with("--start-join-addrs", &join));
    let mut nodes = [n1, n2, n3];
    eventually("three voters and a leader", || {
        let (certs, addr) = (certs.clone(), nodes[0].addr.clone());
        async move { voters(&certs, &addr).await.filter(|(v, l)| v.len() == 3 && *l) }
    })
    .await;

    // Acknowledged writes (some keys written twice, some deleted).
    let client = certs.client(&nodes.iter().map(|n| n.addr.as_str()).collect::<Vec<_>>());
    let mut acknowledged = BTreeMap::new();
    for i in 0..80u32 {
        let key = format!("k/{i:03}");
        let value = format!("v{i}").into_bytes();
        client.set(&key, &value).await.unwrap();
        acknowledged.insert(key, value);
    }
    for i in 0..10u32 {
        let key = format!("k/{i:03}");
        client.set(&key, b"second").await.unwrap();
        acknowledged.insert(key, b"second".to_vec());
        let gone = format!("k/{:03}", 70 + i);
        assert!(client.delete(&gone).await.unwrap());
        acknowledged.remove(&gone);
    }
    drop(client);

    // The survivor is a follower; it has applied every acknowledged write (the leader's commit
    // reaches followers with the next heartbeat).
    let leader = mokv_tests::find_leader(
        &certs,
        &nodes.iter().enumerate().map(|(i, n)| (i, n.addr.clone())).collect::<Vec<_>>(),
    )
    .await
    .expect("a leader");
    let s = (leader + 1) % 3;
    let kv = certs.kv(&nodes[s].addr);
    let want = acknowledged.clone();
    eventually("the survivor applied every acknowledged write", || {
        let (kv, want) = (kv.clone(), want.clone());
        async move { (every_key(&kv, ReadConsistency::Serializable).await? == want).then_some(()) }
    })
    .await;

    // Two nodes gone for good, the survivor stopped: no quorum is left.
    for (i, n) in nodes.iter_mut().enumerate() {
        if i != s {
            n.kill();
        }
    }
    let status = nodes[s].terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "the survivor stopped cleanly: {status}");

    let out = recover(&bins, &nodes[s].spec.data_dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "recover failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("one-voter cluster"), "{stdout}");

    nodes[s].restart();
    let survivor = nodes[s].addr.clone();
    let kv = certs.kv(&survivor);
    let got = eventually("the recovered node serves linearizable reads", || {
        let kv = kv.clone();
        async move { every_key(&kv, ReadConsistency::Linearizable).await }
    })
    .await;
    assert_eq!(got, acknowledged, "every acknowledged key, none of the deleted ones");
    let (voters_now, _) = voters(&certs, &survivor).await.expect("GetServers");
    assert_eq!(voters_now, vec![nodes[s].name().to_owned()], "one voter left");

    // Two fresh nodes join through gossip and become voters.
    let join = nodes[s].gossip_addr.clone();
    let n4 = Mokvd::start(&bins.mokvd, spec("n4").with("--start-join-addrs", &join));
    let n5 = Mokvd::start(&bins.mokvd, spec("n5").with("--start-join-addrs", &join));
    eventually("three voters again", || {
        let (certs, addr) = (certs.clone(), survivor.clone());
        async move { voters(&certs, &addr).await.filter(|(v, l)| v.len() == 3 && *l) }
    })
    .await;

    // Writes commit on the three-voter cluster (a majority is two: a fresh node took part),
    // and a fresh node serves them and the recovered data.
    let client = certs.client(&[survivor.as_str(), n4.addr.as_str(), n5.addr.as_str()]);
    let rev = client.set("after-recovery", b"committed").await.unwrap();
    let kv4 = certs.kv(&n4.addr);
    let got = eventually("n4 serves the new write", || {
        let mut kv4 = kv4.clone();
        async move {
            let req = GetRequest {
                key: "after-recovery".into(),
                consistency: ReadConsistency::Linearizable as i32,
            };
            kv4.get(req).await.ok().map(|r| r.into_inner())
        }
    })
    .await;
    assert_eq!((got.value.as_slice(), got.mod_revision), (&b"committed"[..], rev));
    let all = every_key(&kv4, ReadConsistency::Linearizable).await.expect("n4 reads");
    assert_eq!(all.len(), acknowledged.len() + 1);
}
