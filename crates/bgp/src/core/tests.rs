//! The speaker's decisions, timers included, driven input by input: no
//! socket, no task, no clock. A timer is an action; firing it is an input.

use super::*;
use crate::config::PeerKind;
use crate::session::{Local, SessionEvent};
use calico_bgp_codec::{AsPath, Attributes, Notification, Origin};
use ipnet::IpNet;

const US: &str = "10.0.0.1";
const PEER: &str = "10.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

fn core() -> Core {
    let mut cfg = SpeakerConfig::new(US.parse().expect("id"), 64512);
    cfg.connect_retry = Duration::from_secs(5);
    cfg.restart_time = 120;
    Core::new(cfg)
}

fn peer(addr: &str) -> PeerConfig {
    PeerConfig::new(ip(addr), 64512, PeerKind::NodeToNodeMesh)
}

/// The peer's OPEN: its router ID, with graceful restart of `restart` s.
fn open(router_id: &str, restart: Option<u16>) -> Open {
    let local = Local {
        asn: 64512,
        router_id: router_id.parse().expect("id"),
        hold_time: 90,
        restart_time: restart.unwrap_or(0),
        restarted: false,
    };
    let mut o = local.open();
    if restart.is_none() {
        o.capabilities
            .retain(|c| !matches!(c, Capability::GracefulRestart(_)));
    }
    o
}

fn update(prefixes: &[&str]) -> Update {
    Update {
        withdrawn: Vec::new(),
        attributes: Attributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            next_hop: Some(PEER.parse().expect("nh")),
            local_pref: Some(100),
            ..Attributes::default()
        },
        nlri: prefixes
            .iter()
            .map(|p| p.parse().expect("v4 prefix"))
            .collect(),
    }
}

fn state(c: &Core) -> PeerState {
    c.status().0[0].state
}

fn connects(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Connect { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect()
}

fn timers(actions: &[Action]) -> Vec<(Duration, Timer)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::After { wait, timer } => Some((*wait, *timer)),
            _ => None,
        })
        .collect()
}

fn closes(actions: &[Action]) -> Vec<(ConnId, u8, u8)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                conn,
                msg: ToSession::Close(Notification { code, subcode, .. }),
            } => Some((*conn, *code, *subcode)),
            _ => None,
        })
        .collect()
}

fn fib(actions: &[Action]) -> Vec<FibOp> {
    actions
        .iter()
        .flat_map(|a| match a {
            Action::Fib(ops) => ops.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// PEER's UPDATE announcing `prefixes`, on `conn`, at `now`.
fn receive(c: &mut Core, conn: ConnId, prefixes: &[&str], now: u64) -> Vec<Action> {
    c.handle(
        Input::Session(SessionEvent::Received {
            peer: ip(PEER),
            conn,
            update: update(prefixes),
        }),
        now,
    )
}

/// An established session with PEER (our outgoing connection, conn 1).
fn established(c: &mut Core, restart: Option<u16>) -> ConnId {
    established_with(c, peer(PEER), restart)
}

/// The same, PEER configured as `p`.
fn established_with(c: &mut Core, p: PeerConfig, restart: Option<u16>) -> ConnId {
    c.handle(Input::SetPeers(vec![p]), 10);
    c.handle(
        Input::Connected {
            peer: ip(PEER),
            epoch: 1,
            result: Ok(7),
        },
        11,
    );
    let conn = 1;
    let a = c.handle(
        Input::Session(SessionEvent::Opened {
            peer: ip(PEER),
            conn,
            open: open(PEER, restart),
        }),
        12,
    );
    assert!(matches!(a[..], [Action::Admit { ok: true, .. }]));
    c.handle(
        Input::Session(SessionEvent::Established {
            peer: ip(PEER),
            conn,
            open: open(PEER, restart),
            local_addr: ip(US),
        }),
        13,
    );
    conn
}

#[test]
fn a_failed_connect_is_retried_after_connect_retry_and_an_old_retry_is_ignored() {
    let mut c = core();
    assert_eq!(
        timers(&c.start()),
        vec![(Duration::from_secs(120), Timer::RestartWindowOver)]
    );
    let a = c.handle(Input::SetPeers(vec![peer(PEER)]), 100);
    assert_eq!(connects(&a), vec![1]);
    assert_eq!(state(&c), PeerState::Connect);
    let a = c.handle(
        Input::Connected {
            peer: ip(PEER),
            epoch: 1,
            result: Err("connection refused".into()),
        },
        101,
    );
    let retry = Timer::Retry {
        peer: ip(PEER),
        epoch: 1,
    };
    assert_eq!(timers(&a), vec![(Duration::from_secs(5), retry)]);
    assert!(c.status().0[0].info.contains("connection refused"));
    assert_eq!(connects(&c.handle(Input::Timer(retry), 106)), vec![1]);
    // Reconfigured meanwhile: the old epoch's retry and connect result do nothing.
    let mut changed = peer(PEER);
    changed.hold_time = Some(30);
    let a = c.handle(Input::SetPeers(vec![changed]), 107);
    assert_eq!(connects(&a), vec![2]);
    assert!(c.handle(Input::Timer(retry), 111).is_empty());
    let a = c.handle(
        Input::Connected {
            peer: ip(PEER),
            epoch: 1,
            result: Ok(3),
        },
        112,
    );
    assert!(a.is_empty(), "a stale stream is not used: {a:?}");
}

#[test]
fn passive_peers_are_never_connected_to_and_strangers_are_refused() {
    let mut c = core();
    let mut p = peer(PEER);
    p.passive = true;
    assert!(connects(&c.handle(Input::SetPeers(vec![p]), 1)).is_empty());
    let a = c.handle(
        Input::Accepted {
            stream: 1,
            from: ip("10.0.0.99"),
        },
        2,
    );
    assert!(a.is_empty(), "not a configured peer");
    // An IPv4-mapped address is the peer itself.
    let a = c.handle(
        Input::Accepted {
            stream: 2,
            from: ip("::ffff:10.0.0.2"),
        },
        3,
    );
    assert!(matches!(a[..], [Action::StartSession { stream: 2, .. }]));
    assert_eq!(state(&c), PeerState::OpenSent);
    // At most three connections per peer wait at once.
    for s in 3..=4 {
        let a = c.handle(
            Input::Accepted {
                stream: s,
                from: ip(PEER),
            },
            4,
        );
        assert_eq!(a.len(), 1);
    }
    let a = c.handle(
        Input::Accepted {
            stream: 5,
            from: ip(PEER),
        },
        5,
    );
    assert!(a.is_empty(), "the fourth is closed at once");
}

#[test]
fn of_two_connections_the_one_from_the_higher_router_id_stays() {
    // We (10.0.0.1) have the lower ID: the peer's connection (incoming) wins.
    let mut c = core();
    c.handle(Input::SetPeers(vec![peer(PEER)]), 1);
    c.handle(
        Input::Connected {
            peer: ip(PEER),
            epoch: 1,
            result: Ok(1),
        },
        2,
    );
    c.handle(
        Input::Accepted {
            stream: 2,
            from: ip(PEER),
        },
        3,
    );
    let (ours, theirs) = (1, 2);
    let a = c.handle(
        Input::Session(SessionEvent::Opened {
            peer: ip(PEER),
            conn: ours,
            open: open(PEER, None),
        }),
        4,
    );
    assert!(matches!(a[..], [Action::Admit { conn: 1, ok: true }]));
    let a = c.handle(
        Input::Session(SessionEvent::Opened {
            peer: ip(PEER),
            conn: theirs,
            open: open(PEER, None),
        }),
        5,
    );
    assert_eq!(
        closes(&a),
        vec![(ours, 6, 7)],
        "ours closed: Cease, collision"
    );
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Admit { conn: 2, ok: true })));
    // Once established, any further OPEN is refused.
    c.handle(
        Input::Session(SessionEvent::Established {
            peer: ip(PEER),
            conn: theirs,
            open: open(PEER, None),
            local_addr: ip(US),
        }),
        6,
    );
    c.handle(
        Input::Accepted {
            stream: 3,
            from: ip(PEER),
        },
        7,
    );
    let a = c.handle(
        Input::Session(SessionEvent::Opened {
            peer: ip(PEER),
            conn: 3,
            open: open(PEER, None),
        }),
        8,
    );
    assert!(matches!(a[..], [Action::Admit { conn: 3, ok: false }]));
}

#[test]
fn a_gracefully_restarting_peer_keeps_its_routes_for_its_restart_time() {
    let mut c = core();
    let conn = established(&mut c, Some(30));
    let a = c.handle(
        Input::Session(SessionEvent::Received {
            peer: ip(PEER),
            conn,
            update: update(&["10.244.2.0/26"]),
        }),
        20,
    );
    assert_eq!(fib(&a), vec![FibOp::Set(net("10.244.2.0/26"), ip(PEER))]);
    // The session drops without a NOTIFICATION (a restart).
    let a = c.handle(
        Input::Session(SessionEvent::Closed {
            peer: ip(PEER),
            conn,
            graceful: true,
            reason: "connection reset".into(),
        }),
        21,
    );
    assert!(fib(&a).is_empty(), "still forwarding: {a:?}");
    assert_eq!(state(&c), PeerState::Stale);
    let expiry = Timer::StaleExpired {
        peer: ip(PEER),
        loss: 1,
    };
    assert!(timers(&a).contains(&(Duration::from_secs(30), expiry)));
    // The restart time runs out before it comes back: the routes go.
    let a = c.handle(Input::Timer(expiry), 51);
    assert_eq!(fib(&a), vec![FibOp::Remove(net("10.244.2.0/26"))]);
    // A second expiry for the same loss does nothing.
    assert!(fib(&c.handle(Input::Timer(expiry), 52)).is_empty());
}

#[test]
fn a_peer_that_closes_with_a_notification_loses_its_routes_at_once() {
    let mut c = core();
    let conn = established(&mut c, Some(30));
    receive(&mut c, conn, &["10.244.2.0/26"], 20);
    let a = c.handle(
        Input::Session(SessionEvent::Closed {
            peer: ip(PEER),
            conn,
            graceful: false,
            reason: "Cease".into(),
        }),
        21,
    );
    assert_eq!(fib(&a), vec![FibOp::Remove(net("10.244.2.0/26"))]);
    assert_eq!(state(&c), PeerState::Connect);
    assert!(timers(&a)
        .iter()
        .any(|(_, t)| matches!(t, Timer::Retry { .. })));
}

#[test]
fn more_prefixes_than_allowed_end_the_session_with_cease_1() {
    let mut c = core();
    let mut p = peer(PEER);
    p.max_prefixes = Some(2);
    let conn = established_with(&mut c, p, None);
    assert_eq!(conn, 1);
    let a = c.handle(
        Input::Session(SessionEvent::Received {
            peer: ip(PEER),
            conn: 1,
            update: update(&["10.1.0.0/24", "10.2.0.0/24"]),
        }),
        5,
    );
    assert!(closes(&a).is_empty(), "two are allowed");
    let a = c.handle(
        Input::Session(SessionEvent::Received {
            peer: ip(PEER),
            conn: 1,
            update: update(&["10.3.0.0/24"]),
        }),
        6,
    );
    assert_eq!(closes(&a), vec![(1, 6, 1)]);
    assert!(c.status().0[0].info.contains("more than 2"));
}

#[test]
fn convergence_waits_for_every_end_of_rib_or_the_restart_window() {
    let mut c = core();
    let conn = established(&mut c, Some(30));
    let converged = |a: &[Action]| a.iter().any(|a| matches!(a, Action::FibConverged));
    let a = c.handle(
        Input::Session(SessionEvent::Received {
            peer: ip(PEER),
            conn,
            update: Update::end_of_rib(Afi::Ipv4),
        }),
        20,
    );
    assert!(converged(&a), "the only peer sent End-of-RIB");
    // Another speaker whose peer never answers converges when the window ends.
    let mut c = core();
    c.handle(Input::SetPeers(vec![peer(PEER)]), 1);
    let a = c.handle(Input::Timer(Timer::RestartWindowOver), 121);
    assert!(converged(&a));
    assert!(!converged(
        &c.handle(Input::Timer(Timer::RestartWindowOver), 122)
    ));
}

#[test]
fn stopping_closes_every_session_and_withdraws_what_was_installed() {
    let mut c = core();
    let conn = established(&mut c, None);
    receive(&mut c, conn, &["10.244.2.0/26"], 20);
    let a = c.stop(false);
    assert_eq!(
        closes(&a),
        vec![(conn, 6, 2)],
        "Cease, administrative shutdown"
    );
    assert_eq!(fib(&a), vec![FibOp::Remove(net("10.244.2.0/26"))]);
    // For a restart: dropped silently, the kernel keeps the routes.
    let mut c = core();
    let conn = established(&mut c, None);
    let a = c.stop(true);
    assert!(matches!(
        a[..],
        [Action::Send {
            conn: c1,
            msg: ToSession::Abort
        }] if c1 == conn
    ));
}

#[test]
fn excluded_prefixes_move_learned_routes_out_of_the_kernel_and_back() {
    let mut c = core();
    let conn = established(&mut c, None);
    receive(&mut c, conn, &["10.244.2.0/26", "10.245.0.0/26"], 20);
    // A pool turning VXLAN: its learned routes leave the kernel.
    let a = c.handle(Input::SetExcluded(vec![net("10.244.0.0/16")]), 21);
    assert_eq!(fib(&a), vec![FibOp::Remove(net("10.244.2.0/26"))]);
    // The same list again: nothing to do.
    assert!(fib(&c.handle(Input::SetExcluded(vec![net("10.244.0.0/16")]), 22)).is_empty());
    // A route learned inside it now is not installed (taken out instead:
    // one from before this run may linger).
    let a = receive(&mut c, conn, &["10.244.7.0/26"], 22);
    assert_eq!(fib(&a), vec![FibOp::Remove(net("10.244.7.0/26"))]);
    // Back to BGP: the routes return with their next hop.
    let a = c.handle(Input::SetExcluded(Vec::new()), 23);
    assert_eq!(
        fib(&a),
        vec![
            FibOp::Set(net("10.244.2.0/26"), ip(PEER)),
            FibOp::Set(net("10.244.7.0/26"), ip(PEER))
        ]
    );
}
