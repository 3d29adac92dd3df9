use super::*;
use calico_bgp_codec::{AsPath, Origin};

/// The UPDATEs as a peer decodes them, each checked to fit in 4,096 bytes.
fn on_the_wire(msgs: &[Message], ctx: &Context) -> Vec<Update> {
    msgs.iter()
        .map(|m| {
            let bytes = encode(m, ctx);
            assert!(
                bytes.len() <= calico_bgp_codec::MAX_LEN,
                "{} bytes",
                bytes.len()
            );
            let Ok(Message::Update(u)) = decode(&bytes, ctx) else {
                panic!("decodes")
            };
            u
        })
        .collect()
}

/// `n` /24s from 10.0.0.0 with these attributes, next hop 10.0.0.1.
fn reach(n: u32, attrs: &Arc<Attributes>) -> Vec<Announce> {
    (0..n)
        .map(|i| Announce::Reach {
            prefix: IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).expect("net"),
            ),
            next_hop: "10.0.0.1".parse().expect("ip"),
            attrs: Arc::clone(attrs),
        })
        .collect()
}

#[test]
fn many_prefixes_pack_into_messages_that_fit() {
    let attrs = Arc::new(Attributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence(vec![64512])),
        ..Attributes::default()
    });
    let mut changes = reach(20_000, &attrs);
    changes.extend((0..3000u32).map(|i| {
        Announce::Withdraw(IpNet::V6(
            ipnet::Ipv6Net::new(
                std::net::Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i) << 64),
                64,
            )
            .expect("net"),
        ))
    }));
    let msgs = updates(&changes, true, true);
    let ctx = Context {
        four_octet_as: true,
    };
    let mut reach = 0;
    let mut gone = 0;
    for u in on_the_wire(&msgs, &ctx) {
        reach += u.nlri.len();
        gone += u.attributes.mp_unreach.map_or(0, |m| m.withdrawn.len());
    }
    assert_eq!((reach, gone), (20_000, 3000));
    assert!(msgs.len() < 30, "{} messages", msgs.len());
}

/// Attributes that leave almost no room (990 communities) still give
/// messages that fit, with every prefix in (the estimate alone
/// overshot: it keeps room for at least 64 bytes of prefixes).
#[test]
fn large_attributes_are_split_by_encoded_size() {
    let attrs = Arc::new(Attributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence((0..10).map(|i| 64512 + i).collect())),
        communities: (0..990).collect(),
        ..Attributes::default()
    });
    let changes = reach(2000, &attrs);
    let ctx = Context {
        four_octet_as: true,
    };
    let msgs: Vec<Message> = updates(&changes, true, true)
        .into_iter()
        .flat_map(|m| fit(m, &ctx))
        .collect();
    let reach: usize = on_the_wire(&msgs, &ctx).iter().map(|u| u.nlri.len()).sum();
    assert_eq!(reach, 2000);
    // Attributes that cannot fit with even one prefix: nothing is sent.
    let huge = Arc::new(Attributes {
        communities: (0..1100).collect(),
        ..(*attrs).clone()
    });
    let one = vec![Announce::Reach {
        prefix: "10.9.0.0/24".parse().expect("net"),
        next_hop: "10.0.0.1".parse().expect("ip"),
        attrs: huge,
    }];
    let msgs: Vec<Message> = updates(&one, true, true)
        .into_iter()
        .flat_map(|m| fit(m, &ctx))
        .collect();
    assert!(msgs.is_empty());
}

// Session timers, in paused time: the runtime's clock moves only when
// every task waits, straight to the next deadline, so a 240 s timer takes
// no time and its firing moment is exact.

mod timers {
    use super::*;
    use tokio::io::DuplexStream;
    use tokio::time::Instant;

    impl Transport for DuplexStream {
        fn local_ip(&self) -> Option<IpAddr> {
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        }
    }

    const PEER: &str = "10.0.0.2";

    fn local(router_id: &str, hold_time: u16) -> Local {
        Local {
            asn: 64512,
            router_id: router_id.parse().expect("id"),
            hold_time,
            restart_time: 0,
            restarted: false,
        }
    }

    /// The test's end of the connection: the peer.
    struct Peer {
        io: DuplexStream,
        buf: Vec<u8>,
    }

    impl Peer {
        async fn send(&mut self, m: &Message) {
            self.io
                .write_all(&encode(m, &Context::default()))
                .await
                .expect("write");
        }

        async fn recv(&mut self) -> Message {
            loop {
                if let Ok(Some(len)) = frame(&self.buf) {
                    let m = decode(&self.buf[..len], &Context::default()).expect("decodes");
                    self.buf.drain(..len);
                    return m;
                }
                let mut chunk = [0u8; 4096];
                let n = self.io.read(&mut chunk).await.expect("read");
                assert!(n > 0, "the session closed the connection");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }

    struct Running {
        peer: Peer,
        events: mpsc::Receiver<FromSession>,
        commands: mpsc::Sender<ToSession>,
    }

    /// A session with hold time `ours` on our side, the peer's OPEN not sent yet.
    fn start(ours: u16, pipe: usize) -> Running {
        let (a, b) = tokio::io::duplex(pipe);
        let (etx, erx) = mpsc::channel(16);
        let (ctx, crx) = mpsc::channel(16);
        let wiring = Wiring {
            events: etx,
            commands: crx,
            kill: Arc::new(tokio::sync::Notify::new()),
        };
        let peer = PEER.parse().expect("ip");
        tokio::spawn(run(a, peer, 64512, 1, local("10.0.0.1", ours), wiring));
        Running {
            peer: Peer {
                io: b,
                buf: Vec::new(),
            },
            events: erx,
            commands: ctx,
        }
    }

    /// Through OPEN and KEEPALIVE to Established, the peer offering `theirs`.
    async fn establish(r: &mut Running, theirs: u16) {
        assert!(matches!(r.peer.recv().await, Message::Open(_)));
        r.peer
            .send(&Message::Open(local(PEER, theirs).open()))
            .await;
        let Some(FromSession {
            event: SessionEvent::Opened { .. },
            reply: Some(reply),
        }) = r.events.recv().await
        else {
            panic!("Opened first");
        };
        let _ = reply.send(true);
        assert!(matches!(r.peer.recv().await, Message::Keepalive));
        r.peer.send(&Message::Keepalive).await;
        assert!(matches!(
            r.events.recv().await,
            Some(FromSession {
                event: SessionEvent::Established { .. },
                ..
            })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn keepalives_every_third_of_the_hold_time_then_the_hold_timer_ends_a_silent_peer() {
        let mut r = start(90, 1 << 16);
        // The smaller hold time wins: 9 s, keepalives every 3 s.
        establish(&mut r, 9).await;
        let t0 = Instant::now();
        let mut keepalives = Vec::new();
        let notification = loop {
            match r.peer.recv().await {
                Message::Keepalive => keepalives.push(t0.elapsed()),
                Message::Notification(n) => break n,
                m => panic!("unexpected {m:?}"),
            }
        };
        // (At 9 s the keepalive and the hold timer are due together: the
        // keepalive may go out first.)
        assert_eq!(
            keepalives[..2],
            [Duration::from_secs(3), Duration::from_secs(6)]
        );
        assert!(keepalives[2..].is_empty() || keepalives[2..] == [Duration::from_secs(9)]);
        assert_eq!(t0.elapsed(), Duration::from_secs(9));
        assert_eq!((notification.code, notification.subcode), (4, 0));
        let Some(FromSession {
            event: SessionEvent::Closed {
                graceful, reason, ..
            },
            ..
        }) = r.events.recv().await
        else {
            panic!("Closed last");
        };
        // The peer may be restarting: its routes are kept (RFC 4724).
        assert!(graceful, "{reason}");
        assert_eq!(reason, "hold timer expired");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_keeps_talking_is_kept() {
        let mut r = start(9, 1 << 16);
        establish(&mut r, 9).await;
        let t0 = Instant::now();
        // Its keepalives every 8 s keep the 9 s hold timer from running out.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(8)).await;
            r.peer.send(&Message::Keepalive).await;
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(80));
        assert!(r.events.try_recv().is_err(), "still up");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_that_never_comes_ends_the_session_after_four_minutes() {
        let mut r = start(90, 1 << 16);
        assert!(matches!(r.peer.recv().await, Message::Open(_)));
        let t0 = Instant::now();
        let Message::Notification(n) = r.peer.recv().await else {
            panic!("a NOTIFICATION");
        };
        assert_eq!(t0.elapsed(), OPEN_WAIT);
        assert_eq!((n.code, n.subcode), (4, 0), "hold timer expired");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_dropped_at_the_write_deadline() {
        // A pipe of 64 KiB that the peer never drains.
        let mut r = start(9, 1 << 16);
        establish(&mut r, 9).await;
        let t0 = Instant::now();
        let attrs = Arc::new(Attributes {
            origin: Some(calico_bgp_codec::Origin::Igp),
            as_path: Some(calico_bgp_codec::AsPath::default()),
            ..Attributes::default()
        });
        // Far more than the pipe holds; the peer reads none of it.
        for _ in 0..8 {
            let _ = r.commands.send(ToSession::Send(reach(4000, &attrs))).await;
        }
        let Some(FromSession {
            event: SessionEvent::Closed {
                graceful, reason, ..
            },
            ..
        }) = r.events.recv().await
        else {
            panic!("Closed");
        };
        assert!(reason.contains("read nothing"), "{reason}");
        assert!(graceful, "a lost transport, not a NOTIFICATION");
        // Dropped when one write had waited the hold time (9 s).
        assert!(
            t0.elapsed() >= Duration::from_secs(9) && t0.elapsed() < Duration::from_secs(10),
            "{:?}",
            t0.elapsed()
        );
    }
}
