//! Route changes into UPDATE messages: as few as fit, each within BGP's
//! 4,096 bytes once encoded.

use super::*;

/// The room a message leaves for prefixes once its attributes are in.
const BUDGET: usize = calico_bgp_codec::MAX_LEN - 64;

fn prefix_size(p: &IpNet) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

/// Packs announcements into as few UPDATEs as fit: withdrawals together,
/// reachable prefixes grouped by identical next hop and attributes.
pub(crate) fn updates(changes: &[Announce], v4: bool, v6: bool) -> Vec<Message> {
    let mut out = Vec::new();
    let (mut w4, mut w6): (Vec<Ipv4Net>, Vec<IpNet>) = (Vec::new(), Vec::new());
    let mut groups: Vec<(IpAddr, Arc<Attributes>, Vec<IpNet>)> = Vec::new();
    for a in changes {
        match a {
            Announce::Withdraw(IpNet::V4(p)) if v4 => w4.push(*p),
            Announce::Withdraw(p @ IpNet::V6(_)) if v6 => w6.push(*p),
            Announce::Withdraw(_) => {}
            Announce::Reach {
                prefix,
                next_hop,
                attrs,
            } => {
                if (prefix.addr().is_ipv4() && !v4) || (prefix.addr().is_ipv6() && !v6) {
                    continue;
                }
                match groups
                    .iter_mut()
                    .find(|(nh, a, _)| nh == next_hop && (Arc::ptr_eq(a, attrs) || a == attrs))
                {
                    Some(g) => g.2.push(*prefix),
                    None => groups.push((*next_hop, Arc::clone(attrs), vec![*prefix])),
                }
            }
        }
    }
    for chunk in chunks(w4.iter().map(|p| IpNet::V4(*p)).collect(), BUDGET) {
        out.push(Message::Update(Update {
            withdrawn: chunk
                .into_iter()
                .filter_map(|p| match p {
                    IpNet::V4(p) => Some(p),
                    IpNet::V6(_) => None,
                })
                .collect(),
            ..Update::default()
        }));
    }
    for chunk in chunks(w6, BUDGET) {
        out.push(Message::Update(Update {
            attributes: Attributes {
                mp_unreach: Some(MpUnreach {
                    afi: 2,
                    safi: 1,
                    withdrawn: chunk,
                }),
                ..Attributes::default()
            },
            ..Update::default()
        }));
    }
    for (nh, attrs, prefixes) in groups {
        let attr_size = attr_estimate(&attrs);
        for chunk in chunks(prefixes, BUDGET.saturating_sub(attr_size).max(64)) {
            let mut a = (*attrs).clone();
            let update = match nh {
                IpAddr::V4(nh4) if chunk[0].addr().is_ipv4() => {
                    a.next_hop = Some(nh4);
                    Update {
                        withdrawn: Vec::new(),
                        attributes: a,
                        nlri: chunk
                            .into_iter()
                            .filter_map(|p| match p {
                                IpNet::V4(p) => Some(p),
                                IpNet::V6(_) => None,
                            })
                            .collect(),
                    }
                }
                _ => {
                    a.mp_reach = Some(MpReach {
                        afi: if chunk[0].addr().is_ipv4() { 1 } else { 2 },
                        safi: 1,
                        next_hops: vec![nh],
                        nlri: chunk,
                    });
                    Update {
                        attributes: a,
                        ..Update::default()
                    }
                }
            };
            out.push(Message::Update(update));
        }
    }
    out
}

/// The message as one or more that each encode within BGP's 4,096
/// bytes: packing by estimate can overshoot (long AS paths, many
/// communities or unknown attributes), so the encoded size decides; a
/// message too large is split in half until each part fits. A single
/// prefix whose attributes alone are too large cannot be sent at all.
pub(crate) fn fit(m: Message, ctx: &Context) -> Vec<Message> {
    if encode(&m, ctx).len() <= calico_bgp_codec::MAX_LEN {
        return vec![m];
    }
    let Message::Update(u) = m else {
        return vec![m];
    };
    let halves = split_update(u);
    if halves.len() < 2 {
        tracing::warn!("an UPDATE for one prefix does not fit in 4096 bytes; not sent");
        return Vec::new();
    }
    halves
        .into_iter()
        .flat_map(|h| fit(Message::Update(h), ctx))
        .collect()
}

/// Two UPDATEs carrying half of `u`'s prefixes each (the same attributes),
/// or `u` alone when it carries one prefix or fewer.
fn split_update(u: Update) -> Vec<Update> {
    fn halve<T: Clone>(v: &[T]) -> Option<(Vec<T>, Vec<T>)> {
        (v.len() > 1).then(|| (v[..v.len() / 2].to_vec(), v[v.len() / 2..].to_vec()))
    }
    if let Some((a, b)) = halve(&u.withdrawn) {
        return vec![
            Update {
                withdrawn: a,
                ..u.clone()
            },
            Update { withdrawn: b, ..u },
        ];
    }
    if let Some((a, b)) = halve(&u.nlri) {
        return vec![
            Update {
                nlri: a,
                ..u.clone()
            },
            Update { nlri: b, ..u },
        ];
    }
    if let Some(r) = &u.attributes.mp_reach {
        if let Some((a, b)) = halve(&r.nlri) {
            let with = |nlri: Vec<IpNet>| {
                let mut x = u.clone();
                if let Some(r) = x.attributes.mp_reach.as_mut() {
                    r.nlri = nlri;
                }
                x
            };
            return vec![with(a), with(b)];
        }
    }
    if let Some(r) = &u.attributes.mp_unreach {
        if let Some((a, b)) = halve(&r.withdrawn) {
            let with = |withdrawn: Vec<IpNet>| {
                let mut x = u.clone();
                if let Some(r) = x.attributes.mp_unreach.as_mut() {
                    r.withdrawn = withdrawn;
                }
                x
            };
            return vec![with(a), with(b)];
        }
    }
    vec![u]
}

fn attr_estimate(a: &Attributes) -> usize {
    let path = a
        .as_path
        .as_ref()
        .map_or(0, |p| p.segments.iter().map(|s| 2 + 4 * s.asns.len()).sum());
    64 + path
        + 4 * a.communities.len()
        + 4 * a.cluster_list.len()
        + a.other.iter().map(|o| 4 + o.value.len()).sum::<usize>()
}

fn chunks(prefixes: Vec<IpNet>, budget: usize) -> Vec<Vec<IpNet>> {
    let mut out: Vec<Vec<IpNet>> = Vec::new();
    let mut size = 0;
    for p in prefixes {
        let s = prefix_size(&p);
        match out.last_mut() {
            Some(cur) if size + s <= budget => {
                cur.push(p);
                size += s;
            }
            _ => {
                out.push(vec![p]);
                size = s;
            }
        }
    }
    out
}
