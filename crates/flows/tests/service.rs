//! The flow service end to end, on loopback: nodes' exporters stream to
//! its gRPC ingest, the HTTP API finds the records, the live stream
//! shows new ones, history survives a restart, a node buffers (boundedly,
//! counting what it drops) while the service is away, bad input is
//! refused, and mTLS keeps strangers out (and a node from speaking for
//! another).

// Tests own the clock.
#![allow(clippy::disallowed_methods)]

use calico_flows::export::{ClientTls, ExportConfig, Exporter};
use calico_flows::proto::flow_collector_client::FlowCollectorClient;
use calico_flows::proto::FlowBatch;
use calico_flows::server::{Bound, Config, Running, ServerTls};
use calico_flows::wire::to_wire;
use calico_flows::Flow;
use calico_test_support::EtcdTls;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

struct Service {
    bound: Bound,
    _running: Running,
}

impl Service {
    fn start(db: &Path, grpc: SocketAddr, tls: Option<ServerTls>) -> Service {
        let running = Running::start(Config {
            grpc,
            http: "127.0.0.1:0".parse().expect("addr"),
            db: db.to_path_buf(),
            raw_retention: Duration::from_secs(3600),
            hourly_retention: Duration::from_secs(86_400),
            tls,
        })
        .expect("the flow service starts");
        Service {
            bound: running.bound,
            _running: running,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        get(self.bound.http, path)
    }

    fn flows(&self, query: &str) -> Vec<Flow> {
        let (status, body) = self.get(&format!("/api/v1/flows?{query}"));
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).expect("json");
        serde_json::from_value(page["flows"].clone()).expect("flows")
    }
}

/// GET over plain HTTP/1.1; (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .expect("GET");
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().expect("body"))
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A record of the last minutes (older ones are rolled up into hours by
/// the expiry pass every start begins with).
fn record(i: u64, action: &str, port: u16) -> Flow {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    Flow {
        start_time: now - 300 + i,
        end_time: now - 290 + i,
        reporter: "dst".into(),
        action: action.into(),
        proto: "TCP".into(),
        source_namespace: "shop".into(),
        source_name: format!("web-{i}"),
        source_type: "wep".into(),
        dest_namespace: "shop".into(),
        dest_name: "db".into(),
        dest_type: "wep".into(),
        dest_port: Some(port),
        policies: vec![if action == "allow" {
            "0|default|shop/db|allow|0".into()
        } else {
            "0|default|default.end-of-tier|deny|-1".into()
        }],
        packets: 1,
        num_flows: 1,
        ..Flow::default()
    }
}

fn exporter(server: SocketAddr, capacity: usize, tls: Option<ClientTls>) -> Exporter {
    Exporter::start(ExportConfig {
        server: server.to_string(),
        node: "node-1".into(),
        capacity,
        tls,
    })
    .expect("exporter")
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("flows.db");
    (dir, db)
}

#[test]
fn records_stream_in_are_queried_followed_and_survive_a_restart() {
    let (_dir, db) = tmp();
    let svc = Service::start(&db, "127.0.0.1:0".parse().expect("addr"), None);
    let x = exporter(svc.bound.grpc, 1000, None);
    x.offer((0..3).map(|i| record(i, "allow", 5432)));
    x.offer([record(3, "deny", 81)]);
    wait_for("4 records stored", Duration::from_secs(20), || {
        x.stats().sent.load(Ordering::Relaxed) == 4
    });
    let all = svc.flows("");
    assert_eq!(all.len(), 4);
    assert!(
        all.iter().all(|f| f.node == "node-1"),
        "the node is the stream's"
    );
    assert_eq!(all[0].source_name, "web-3", "newest first");
    let denied = svc.flows("action=deny&namespace=shop");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].dest_port, Some(81));
    assert_eq!(
        denied[0].decided_by().expect("trace").policy,
        "default.end-of-tier"
    );
    assert_eq!(svc.flows("policy=shop%2Fdb&limit=2").len(), 2);

    // The live stream: a record stored after subscribing arrives, filtered.
    let mut sse = TcpStream::connect(svc.bound.http).expect("connect");
    write!(
        sse,
        "GET /api/v1/flows/stream?action=deny HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    sse.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut lines = BufReader::new(sse);
    let mut head = String::new();
    while lines.read_line(&mut head).expect("head") > 2 {
        head.clear();
    }
    x.offer([record(10, "allow", 5432), record(11, "deny", 82)]);
    let mut event = None;
    for _ in 0..50 {
        let mut line = String::new();
        lines.read_line(&mut line).expect("event line");
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            if let Ok(f) = serde_json::from_str::<Flow>(data) {
                event = Some(f);
                break;
            }
        }
    }
    let event = event.expect("a flow event");
    assert_eq!(
        (event.action.as_str(), event.dest_port),
        ("deny", Some(82)),
        "the allowed one is filtered out"
    );

    let (status, metrics) = svc.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("calico_flows_ingested_total 6"),
        "{metrics}"
    );
    drop(x);
    drop(lines);
    drop(svc);

    let svc = Service::start(&db, "127.0.0.1:0".parse().expect("addr"), None);
    assert_eq!(svc.flows("").len(), 6, "history survives a restart");
}

#[test]
fn a_node_buffers_while_the_service_is_away_and_counts_what_it_drops() {
    let (_dir, db) = tmp();
    let grpc = free_port();
    let x = exporter(grpc, 20, None);
    x.offer((0..50).map(|i| record(i, "allow", 80)));
    let s = x.stats();
    assert_eq!(
        s.dropped.load(Ordering::Relaxed),
        30,
        "the oldest beyond capacity are dropped"
    );
    std::thread::sleep(Duration::from_millis(700));
    assert!(!s.connected.load(Ordering::Relaxed));
    let start = Instant::now();
    x.offer([record(50, "deny", 80)]);
    assert!(
        start.elapsed() < Duration::from_millis(50),
        "offering never waits for the service"
    );
    assert_eq!(s.dropped.load(Ordering::Relaxed), 31);

    let svc = Service::start(&db, grpc, None);
    wait_for("the buffer delivered", Duration::from_secs(40), || {
        s.sent.load(Ordering::Relaxed) == 20
    });
    let stored = svc.flows("sort=oldest");
    let names: Vec<_> = stored.iter().map(|f| f.source_name.clone()).collect();
    assert_eq!(names.first().map(String::as_str), Some("web-31"));
    assert_eq!(names.last().map(String::as_str), Some("web-50"));
    assert_eq!(stored.len(), 20, "each record once");
}

#[test]
fn bad_input_is_refused_and_does_not_stop_the_rest() {
    let (_dir, db) = tmp();
    let svc = Service::start(&db, "127.0.0.1:0".parse().expect("addr"), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut client = FlowCollectorClient::connect(format!("http://{}", svc.bound.grpc))
            .await
            .expect("connect");
        // One good record, one with a newline in a name, one with a bad trace.
        let mut bad_name = record(1, "allow", 80);
        bad_name.source_name = "web\n0|default|x|allow|0".into();
        let mut bad_trace = record(2, "allow", 80);
        bad_trace.policies = vec!["allow everything".into()];
        let batch = FlowBatch {
            node: "node-9".into(),
            sequence: 1,
            flows: vec![
                to_wire(&record(0, "allow", 80)),
                to_wire(&bad_name),
                to_wire(&bad_trace),
            ],
        };
        let mut acks = client
            .push(tokio_stream::iter([batch]))
            .await
            .expect("push")
            .into_inner();
        let ack = acks.message().await.expect("ack").expect("an ack");
        assert_eq!((ack.sequence, ack.stored, ack.refused), (1, 1, 2));
        // An oversized batch ends its stream with an error.
        let huge = FlowBatch {
            node: "node-9".into(),
            sequence: 2,
            flows: vec![to_wire(&record(0, "allow", 80)); calico_flows::server::MAX_BATCH + 1],
        };
        let mut acks = client
            .push(tokio_stream::iter([huge]))
            .await
            .expect("push")
            .into_inner();
        assert!(
            acks.message().await.is_err(),
            "an oversized batch is refused"
        );
    });
    assert_eq!(svc.flows("node=node-9").len(), 1);

    for bad in [
        "colour=red",
        "port=99999",
        "action=maybe",
        "limit=5000",
        "label=x",
    ] {
        let (status, body) = svc.get(&format!("/api/v1/flows?{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("error"), "{body}");
    }
    let (status, _) = svc.get("/api/v1/hints?field=password");
    assert_eq!(status, 400);

    // A gRPC client that connects and says nothing is closed at the
    // first-bytes deadline (it cannot hold a connection slot).
    let mut silent = TcpStream::connect(svc.bound.grpc).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let opened = Instant::now();
    let mut nothing = Vec::new();
    let _ = silent.read_to_end(&mut nothing);
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(20),
        "closed after {waited:?}"
    );

    // A client that never finishes its request head does not hold up others.
    let mut slow = TcpStream::connect(svc.bound.http).expect("connect");
    slow.write_all(b"GET /api/v1/flows HTTP/1.1\r\nHost:")
        .expect("partial head");
    let start = Instant::now();
    assert_eq!(svc.flows("node=node-9").len(), 1);
    assert!(start.elapsed() < Duration::from_secs(5));
    // ... and is cut off at the header deadline.
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        start.elapsed() < Duration::from_secs(19),
        "closed by the header deadline"
    );
}

#[test]
fn mutual_tls_keeps_strangers_out() {
    let (dir, db) = tmp();
    let certs = EtcdTls::generate(dir.path());
    let svc = Service::start(
        &db,
        "127.0.0.1:0".parse().expect("addr"),
        Some(ServerTls {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            client_ca: certs.ca.clone(),
        }),
    );
    let tls = |cert: &PathBuf, key: &PathBuf| ClientTls {
        ca: certs.ca.clone(),
        cert: cert.clone(),
        key: key.clone(),
        server_name: Some("127.0.0.1".into()),
    };
    let stranger = exporter(
        svc.bound.grpc,
        100,
        Some(tls(&certs.other_cert, &certs.other_key)),
    );
    stranger.offer([record(1, "deny", 80)]);
    let member = exporter(
        svc.bound.grpc,
        100,
        Some(tls(&certs.client_cert, &certs.client_key)),
    );
    // The same certificate (it names node-1) speaking for another node.
    let impostor = Exporter::start(ExportConfig {
        server: svc.bound.grpc.to_string(),
        node: "node-2".into(),
        capacity: 100,
        tls: Some(tls(&certs.client_cert, &certs.client_key)),
    })
    .expect("exporter");
    impostor.offer([record(3, "deny", 22)]);
    member.offer([record(2, "allow", 80)]);
    wait_for("the member's record", Duration::from_secs(20), || {
        member.stats().sent.load(Ordering::Relaxed) == 1
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stranger.stats().sent.load(Ordering::Relaxed), 0);
    assert_eq!(
        impostor.stats().sent.load(Ordering::Relaxed),
        0,
        "a node's certificate does not speak for another node"
    );
    assert!(!stranger.stats().connected.load(Ordering::Relaxed));
    let stored = svc.flows("");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].action, "allow");
}
