//! `grpc.health.v1` and server reflection on real `mokvd` processes: a node reports SERVING
//! only while it serves as a full member (a leader known, everything committed applied, a
//! voter), NOT_SERVING with no leader or before it is a voter; reflection lists the services
//! and describes them (what `grpcurl list` and `grpcurl describe` ask).

use std::time::Duration;

use mokv_proto::api::Suffrage;
use mokv_tests::{eventually, gossip_sockets, Bins, Certs, Cluster, Mokvd, NodeSpec};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// Bound on waiting for one health transition (an election timeout plus a restart).
const TRANSITION: Duration = Duration::from_secs(30);

fn health(certs: &Certs, addr: &str) -> HealthClient<Channel> {
    HealthClient::new(certs.channel(addr, Some("root")))
}

/// `Check` of `service` on the node at `addr`; `None` if it did not answer within a second.
async fn check(certs: &Certs, addr: &str, service: &str) -> Option<ServingStatus> {
    let mut h = health(certs, addr);
    let req = HealthCheckRequest { service: service.to_owned() };
    let r = tokio::time::timeout(Duration::from_secs(1), h.check(req)).await.ok()?.ok()?;
    ServingStatus::try_from(r.into_inner().status).ok()
}

/// Reads a `Watch` stream until it reports `wanted`; panics after [`TRANSITION`].
async fn watch_until(
    stream: &mut tonic::Streaming<HealthCheckResponse>,
    wanted: ServingStatus,
    what: &str,
) {
    let reached = tokio::time::timeout(TRANSITION, async {
        while let Some(r) = stream.message().await.expect("the watch stream stays open") {
            if r.status == wanted as i32 {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(reached, Ok(true), "the watch did not report {wanted:?} ({what})");
}

/// The suffrage the node at `addr` gives itself in its own `GetServers` answer.
async fn own_suffrage(certs: &Certs, addr: &str) -> Option<Suffrage> {
    let servers = certs.servers(addr).await?;
    let me = servers.iter().find(|s| s.rpc_addr == addr)?;
    Suffrage::try_from(me.suffrage).ok()
}

/// Every voter of a healthy cluster is SERVING (overall and for `api.KV`); a node left alone
/// by its two peers loses its leader and reports NOT_SERVING on its watch stream, and SERVING
/// again once they are back.
#[tokio::test]
async fn serving_with_a_leader_not_serving_without_one() {
    let mut cluster = Cluster::start(Bins::get(), &[]).await;
    let certs = cluster.certs.clone();
    for n in &cluster.nodes {
        for service in ["", "api.KV"] {
            let addr = n.addr.clone();
            let certs = certs.clone();
            eventually("SERVING on every voter", || {
                let (certs, addr) = (certs.clone(), addr.clone());
                async move {
                    (check(&certs, &addr, service).await == Some(ServingStatus::Serving))
                        .then_some(())
                }
            })
            .await;
        }
    }
    // An unknown service is NOT_FOUND, not a guess.
    let mut h = health(&certs, &cluster.nodes[0].addr);
    let unknown = h.check(HealthCheckRequest { service: "no.Such".into() }).await;
    assert_eq!(unknown.expect_err("unknown service").code(), tonic::Code::NotFound);

    let alone = cluster.nodes[2].addr.clone();
    let mut stream = health(&certs, &alone)
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .expect("watch")
        .into_inner();
    watch_until(&mut stream, ServingStatus::Serving, "healthy cluster").await;
    cluster.nodes[0].kill();
    cluster.nodes[1].kill();
    watch_until(&mut stream, ServingStatus::NotServing, "alone: no leader").await;
    assert_eq!(check(&certs, &alone, "api.KV").await, Some(ServingStatus::NotServing));

    cluster.nodes[0].restart();
    cluster.nodes[1].restart();
    watch_until(&mut stream, ServingStatus::Serving, "peers back: a leader again").await;
}

/// A node that has never been added to a cluster has no leader: NOT_SERVING. Once a
/// bootstrapping node joins it, it becomes a learner, then a voter, and only then SERVING.
/// Whenever the node calls itself a learner in its own `GetServers`, a `Check` made just
/// before must have said NOT_SERVING (a learner only ever becomes a voter, so it was one then).
#[tokio::test]
async fn a_node_serves_only_once_it_is_a_voter() {
    let bins = Bins::get();
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::generate(&bins, &tmp.path().join("certs"), &["n1", "n2"], &["root"]);
    let data = tmp.path().join("data");
    // n2 lists n1's gossip address as its seed; n1 starts later on that very socket (bound
    // here, handed over), so n2 stays outside any cluster until then.
    let n1_socket = gossip_sockets(1).pop().expect("one socket");
    let n1_gossip = n1_socket.local_addr().expect("bound").to_string();
    let n2 = Mokvd::start(
        &bins.mokvd,
        NodeSpec::node(&certs, &data, "n2").with("--start-join-addrs", &n1_gossip),
    );
    assert_eq!(
        eventually("n2 answers Check", || {
            let certs = certs.clone();
            let addr = n2.addr.clone();
            async move { check(&certs, &addr, "").await }
        })
        .await,
        ServingStatus::NotServing,
        "a node outside any cluster"
    );
    let mut stream = health(&certs, &n2.addr)
        .watch(HealthCheckRequest { service: "api.KV".into() })
        .await
        .expect("watch")
        .into_inner();
    let first = stream.message().await.expect("watch").expect("a first status");
    assert_eq!(first.status, ServingStatus::NotServing as i32);

    // n1 bootstraps a cluster and meets n2 through gossip; its leader adds n2.
    let _n1 = Mokvd::start_with_gossip_socket(
        &bins.mokvd,
        NodeSpec::node(&certs, &data, "n1").flag("--bootstrap"),
        n1_socket,
    );
    let learner_seen = std::cell::Cell::new(false);
    let serving_as = eventually("n2 SERVING", || {
        let certs = certs.clone();
        let addr = n2.addr.clone();
        let learner_seen = &learner_seen;
        async move {
            let status = check(&certs, &addr, "api.KV").await?;
            let suffrage = own_suffrage(&certs, &addr).await;
            if suffrage == Some(Suffrage::Learner) {
                learner_seen.set(true);
                assert_eq!(status, ServingStatus::NotServing, "a learner reported SERVING");
            }
            (status == ServingStatus::Serving).then_some(suffrage)
        }
    })
    .await;
    assert_eq!(serving_as, Some(Suffrage::Voter), "SERVING before being a voter");
    watch_until(&mut stream, ServingStatus::Serving, "n2 a voter").await;
    println!("learner phase observed: {}", learner_seen.get());
}

/// Reflection lists every service of the rpc port, and describes them (grpcurl's `list` and
/// `describe` use exactly these two requests).
#[tokio::test]
async fn reflection_lists_and_describes_the_services() {
    let bins = Bins::get();
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::generate(&bins, &tmp.path().join("certs"), &["n1"], &["root"]);
    let n1 = Mokvd::start(
        &bins.mokvd,
        NodeSpec::node(&certs, &tmp.path().join("data"), "n1").flag("--bootstrap"),
    );
    let mut client = ServerReflectionClient::new(certs.channel(&n1.addr, Some("root")));
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let requests = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol("api.KV".into())),
        ask(MessageRequest::FileContainingSymbol("grpc.health.v1.Health".into())),
    ];
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection stream")
        .into_inner();

    let listed = answers.message().await.expect("answer").expect("a list");
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("not a service list: {listed:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in
        ["api.KV", "mokv.peer.Peer", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]
    {
        assert!(names.iter().any(|n| n == wanted), "{wanted} not listed in {names:?}");
    }
    for symbol in ["api.KV", "grpc.health.v1.Health"] {
        let described = answers.message().await.expect("answer").expect("a description");
        let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response
        else {
            panic!("{symbol} not described: {described:?}");
        };
        assert!(!files.file_descriptor_proto.is_empty(), "{symbol}: no file");
    }
}
