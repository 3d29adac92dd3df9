//! Datastore state -> intents -> nft text. The calc crate's golden inputs
//! are rendered and compared with `tests/golden/<name>.nft` here (`BLESS=1`
//! rewrites them), and nft itself checks each ruleset in a throwaway
//! namespace.

use calico_api::decode_manifest;
use calico_calc::{CalcGraph, DesiredState, Update};
use calico_test_support::Netns;
use std::fs;
use std::path::Path;

#[test]
fn golden_rulesets_render_and_load() {
    let inputs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../calc/tests/golden");
    let outputs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("BLESS").is_some();
    let ns = Netns::new("nft-check");
    let mut failures = Vec::new();
    for entry in fs::read_dir(&inputs).expect("inputs") {
        let f = entry.expect("entry").path();
        if f.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let mut g = CalcGraph::new("node-1");
        let mut state = DesiredState::default();
        for r in decode_manifest(&fs::read_to_string(&f).expect("read")).expect("valid") {
            state.apply(&g.apply(Update::Put(r))).expect("ordering");
        }
        let text = calico_dataplane::render(&state);
        let out = outputs.join(f.with_extension("nft").file_name().expect("name"));
        if bless {
            fs::write(&out, &text).expect("bless");
        } else if fs::read_to_string(&out).unwrap_or_default() != text {
            failures.push(format!("--- {}\n{text}", out.display()));
        }
        // nft accepts it (checked, not committed, in a namespace of our own).
        let file =
            std::env::temp_dir().join(format!("{}.nft", calico_test_support::unique("ruleset")));
        fs::write(&file, &text).expect("write");
        let check = ns.exec(&["nft", "-c", "-f", file.to_str().expect("path")]);
        let _ = fs::remove_file(&file);
        assert!(
            check.status.success(),
            "nft rejects {}: {}",
            f.display(),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (BLESS=1 to accept):\n{}",
        failures.join("\n")
    );
}

#[test]
fn vxlan_only_from_other_nodes() {
    let state = DesiredState::default();
    let plain = calico_dataplane::render(&state);
    assert!(
        !plain.contains("4789"),
        "no tunnel, port untouched:\n{plain}"
    );
    let sources = calico_dataplane::VxlanSources {
        port: 4789,
        v4: Some(
            ["10.250.0.2", "10.250.1.3"]
                .iter()
                .map(|a| a.parse().expect("ip"))
                .collect(),
        ),
        v6: None,
    };
    let rules = calico_dataplane::NodeRules {
        vxlan: sources,
        ..Default::default()
    };
    let text = calico_dataplane::build_with(&state, &rules).to_text();
    assert!(text.contains("set vxlan-peers-v4"), "{text}");
    assert!(
        text.contains("10.250.0.2") && text.contains("10.250.1.3"),
        "{text}"
    );
    assert!(
        text.contains("ip saddr != @vxlan-peers-v4 udp dport 4789 counter drop")
            && text.contains("udp dport 4789 fib saddr . iif oif missing counter drop"),
        "{text}"
    );
    assert!(!text.contains("vxlan-peers-v6"), "{text}");
    // The drop comes before the established fast path (a spoofed flow
    // cannot ride on conntrack), and nft accepts the table.
    let input = &text[text.find("chain input").expect("input")..];
    assert!(input.find("4789").expect("rule") < input.find("ct state").expect("fast path"));
    let ns = Netns::new("nft-vxlan");
    let file = std::env::temp_dir().join(format!("{}.nft", calico_test_support::unique("vx")));
    fs::write(&file, &text).expect("write");
    let check = ns.exec(&["nft", "-f", file.to_str().expect("path")]);
    let _ = fs::remove_file(&file);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn outgoing_nat_translates_pool_traffic_leaving_the_pools_only() {
    let state = DesiredState::default();
    let plain = calico_dataplane::render(&state);
    assert!(
        !plain.contains("nat"),
        "no natOutgoing pool, no NAT:\n{plain}"
    );
    let nets = |v: &[&str]| v.iter().map(|n| n.parse().expect("net")).collect();
    let rules = calico_dataplane::NodeRules {
        nat: calico_dataplane::NatOutgoing {
            masquerade: nets(&["10.65.0.0/16", "fd00::/64"]),
            pools: nets(&["10.65.0.0/16", "10.66.0.0/16", "fd00::/64"]),
            to: Some("192.0.2.10".parse().expect("ip")),
            ports: None,
        },
        ..Default::default()
    };
    let nat_chain = |t: &calico_dataplane::Table| {
        t.chains
            .iter()
            .find(|c| c.name == "nat-postrouting")
            .cloned()
            .expect("a NAT chain")
    };
    let t = calico_dataplane::build_with(&state, &rules);
    let chain = nat_chain(&t);
    assert_eq!(
        chain.hook.as_deref(),
        Some("type nat hook postrouting priority srcnat; policy accept;")
    );
    assert_eq!(
        chain.rules,
        vec![
            "ip saddr @nat-masq-v4 ip daddr != @nat-pools-v4 snat ip to 192.0.2.10 fully-random",
            "ip6 saddr @nat-masq-v6 ip6 daddr != @nat-pools-v6 masquerade fully-random",
        ]
    );
    let elements = |name: &str| {
        t.collections
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.elements.clone())
            .unwrap_or_default()
    };
    assert_eq!(elements("nat-masq-v4"), vec!["10.65.0.0/16"]);
    assert_eq!(
        elements("nat-pools-v4"),
        vec!["10.65.0.0/16", "10.66.0.0/16"]
    );
    assert_eq!(elements("nat-pools-v6"), vec!["fd00::/64"]);
    // natPortRange: the translated source ports.
    let mut ranged = rules.clone();
    ranged.nat.ports = Some((40000, 40999));
    ranged.nat.to = Some("fd00::10".parse().expect("ip"));
    let chain = nat_chain(&calico_dataplane::build_with(&state, &ranged));
    assert_eq!(
        chain.rules,
        vec![
            "ip saddr @nat-masq-v4 ip daddr != @nat-pools-v4 meta l4proto { tcp, udp, sctp } masquerade to :40000-40999 fully-random",
            "ip saddr @nat-masq-v4 ip daddr != @nat-pools-v4 masquerade fully-random",
            "ip6 saddr @nat-masq-v6 ip6 daddr != @nat-pools-v6 meta l4proto { tcp, udp, sctp } snat ip6 to [fd00::10]:40000-40999 fully-random",
            "ip6 saddr @nat-masq-v6 ip6 daddr != @nat-pools-v6 snat ip6 to fd00::10 fully-random",
        ]
    );
}
