//! The VXLAN overlay plan at cluster scale: 1,000 nodes on four subnets,
//! 4,000 blocks of a CrossSubnet pool, 100,000 workload endpoints (1% on
//! addresses borrowed from another node's block). The plan runs whenever
//! nodes, pools, blocks or endpoints change; the baseline in the same run
//! is one pass over the endpoints (reading every address once).

use calico_api::{EncapMode, IpPoolSpec, NodeBgpSpec, NodeSpec};
use calico_calc::overlay::{plan, OverlayInputs, TunnelSettings};
use calico_net::IpNet;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

const NODES: u32 = 1_000;
const BLOCKS_PER_NODE: u32 = 4;
const WORKLOADS: u32 = 100_000;

fn inputs() -> OverlayInputs {
    let mut i = OverlayInputs::default();
    i.pools.insert(
        "pool".into(),
        IpPoolSpec {
            vxlan_mode: Some(EncapMode::CrossSubnet),
            node_selector: "all()".parse().expect("selector"),
            ..IpPoolSpec::new("10.0.0.0/8".parse().expect("cidr"))
        },
    );
    let block = |n: u32, b: u32| {
        let start = u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (n * BLOCKS_PER_NODE + b) * 64;
        IpNet::new(IpAddr::V4(Ipv4Addr::from(start)), 26).expect("block")
    };
    for n in 0..NODES {
        let name = format!("node-{n}");
        let addr = format!("172.16.{}.{}/24", n / 250, n % 250 + 1);
        i.nodes.insert(
            name.clone(),
            NodeSpec {
                bgp: Some(NodeBgpSpec {
                    ipv4_address: Some(addr.parse().expect("address")),
                    ..NodeBgpSpec::default()
                }),
                ipv4_vxlan_tunnel_addr: match block(n, 0).addr() {
                    IpAddr::V4(a) => Some(a),
                    IpAddr::V6(_) => None,
                },
                ..NodeSpec::default()
            },
        );
        for b in 0..BLOCKS_PER_NODE {
            i.blocks.insert(block(n, b), name.clone());
        }
    }
    for w in 0..WORKLOADS {
        let node = w % NODES;
        // Every hundredth workload runs on the next node over.
        let on = if w % 100 == 0 {
            (node + 1) % NODES
        } else {
            node
        };
        let b = block(node, (w / NODES) % BLOCKS_PER_NODE);
        let ip = u32::from(match b.addr() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!(),
        }) + 1
            + (w / (NODES * BLOCKS_PER_NODE)) % 62;
        i.workloads.insert(
            format!("wep{w}"),
            (
                format!("node-{on}").into(),
                vec![IpNet::from(IpAddr::V4(Ipv4Addr::from(ip)))].into(),
            ),
        );
    }
    i
}

fn bench(c: &mut Criterion) {
    let i = inputs();
    let settings = TunnelSettings {
        vni: 4096,
        port: 4789,
        mtu_v4: 1450,
        mtu_v6: 1430,
    };
    let o = plan(&i, "node-0", &settings);
    assert_eq!(o.tunnels[0].peers.len(), (NODES - 1) as usize);
    assert!(o.routes.len() > ((NODES - 1) * BLOCKS_PER_NODE) as usize);
    c.bench_function("baseline/read_every_workload_address", |b| {
        b.iter(|| {
            black_box(
                i.workloads
                    .values()
                    .map(|(n, ips)| n.len() + ips.len())
                    .sum::<usize>(),
            )
        });
    });
    c.bench_function("overlay/plan_1000_nodes_100k_workloads", |b| {
        b.iter(|| black_box(plan(&i, "node-0", &settings)));
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
