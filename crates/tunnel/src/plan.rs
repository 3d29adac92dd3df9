//! What to change: pure, so it is tested without a kernel.

use calico_calc::overlay::{Mac, Tunnel};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// A VXLAN device as the kernel shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub index: u32,
    /// The link is a VXLAN device at all.
    pub vxlan: bool,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<IpAddr>,
    pub parent: Option<u32>,
    pub learning: Option<bool>,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
    pub up: bool,
}

/// What to do with a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAction {
    Create,
    /// Delete and create again: a setting fixed at creation differs.
    Recreate(String),
    /// Change in place what may change (MAC, MTU, state).
    Update {
        mac: bool,
        mtu: bool,
        up: bool,
    },
    Keep,
}

/// The action that brings `have` (on parent device `parent`) to `want`.
pub fn device_action(want: &Tunnel, parent: u32, have: Option<&Observed>) -> DeviceAction {
    let Some(h) = have else {
        return DeviceAction::Create;
    };
    let fixed = [
        (!h.vxlan).then(|| "not a VXLAN device".to_string()),
        (h.vni != Some(want.vni)).then(|| format!("VNI {:?}, want {}", h.vni, want.vni)),
        (h.port != Some(want.port)).then(|| format!("port {:?}, want {}", h.port, want.port)),
        (h.local != Some(want.local))
            .then(|| format!("local address {:?}, want {}", h.local, want.local)),
        (h.parent != Some(parent)).then(|| format!("parent {:?}, want {parent}", h.parent)),
        (h.learning != Some(false)).then(|| "learning is on".to_string()),
    ];
    if let Some(why) = fixed.into_iter().flatten().next() {
        return DeviceAction::Recreate(why);
    }
    let mac = h.mac != Some(want.mac);
    let mtu = h.mtu != Some(want.mtu);
    let up = !h.up;
    if mac || mtu || up {
        DeviceAction::Update { mac, mtu, up }
    } else {
        DeviceAction::Keep
    }
}

/// What to add and what to delete to turn `have` into `want`.
pub fn diff<T: Ord + Clone>(want: &BTreeSet<T>, have: &BTreeSet<T>) -> (Vec<T>, Vec<T>) {
    (
        want.difference(have).cloned().collect(),
        have.difference(want).cloned().collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Tunnel {
        Tunnel {
            name: "vxlan.calico".into(),
            vni: 4096,
            port: 4789,
            mtu: 1450,
            mac: [0x66, 1, 2, 3, 4, 5],
            local: "10.0.0.1".parse().expect("ip"),
            address: "10.244.1.0".parse().expect("ip"),
            peers: BTreeSet::new(),
        }
    }

    fn matching() -> Observed {
        let w = want();
        Observed {
            index: 7,
            vxlan: true,
            vni: Some(w.vni),
            port: Some(w.port),
            local: Some(w.local),
            parent: Some(2),
            learning: Some(false),
            mac: Some(w.mac),
            mtu: Some(w.mtu),
            up: true,
        }
    }

    #[test]
    fn creates_keeps_updates_and_recreates() {
        let w = want();
        assert_eq!(device_action(&w, 2, None), DeviceAction::Create);
        assert_eq!(device_action(&w, 2, Some(&matching())), DeviceAction::Keep);
        let mut h = matching();
        h.mtu = Some(1500);
        h.up = false;
        assert_eq!(
            device_action(&w, 2, Some(&h)),
            DeviceAction::Update {
                mac: false,
                mtu: true,
                up: true
            }
        );
        for change in [
            |h: &mut Observed| h.vni = Some(1),
            |h: &mut Observed| h.port = Some(8472),
            |h: &mut Observed| h.local = "10.0.0.9".parse().ok(),
            |h: &mut Observed| h.learning = Some(true),
            |h: &mut Observed| h.vxlan = false,
        ] {
            let mut h = matching();
            change(&mut h);
            assert!(matches!(
                device_action(&w, 2, Some(&h)),
                DeviceAction::Recreate(_)
            ));
        }
        assert!(matches!(
            device_action(&w, 3, Some(&matching())),
            DeviceAction::Recreate(_)
        ));
    }

    #[test]
    fn diff_adds_missing_and_removes_extra() {
        let want: BTreeSet<u8> = [1, 2, 3].into();
        let have: BTreeSet<u8> = [2, 3, 4].into();
        assert_eq!(diff(&want, &have), (vec![1], vec![4]));
        assert_eq!(diff(&want, &want), (vec![], vec![]));
    }
}
