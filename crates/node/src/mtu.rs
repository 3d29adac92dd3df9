//! MTU auto-detection, as Felix does it: the underlay's MTU is the smallest
//! of the interfaces matching `mtuIfacePattern`; a tunnel device gets that
//! less its encapsulation overhead unless configured; workloads get the
//! smallest MTU of the tunnels in use (the underlay's when there is none),
//! written to a file the CNI plugin reads (`/var/lib/calico/mtu`).

use std::path::Path;

/// MTU assumed when no interface matches the pattern.
pub const FALLBACK_MTU: u32 = 1500;

/// The smallest MTU among the interfaces whose name matches `pattern`.
pub fn underlay_mtu(links: &[(String, u32, bool)], pattern: &regex::Regex) -> Option<u32> {
    links
        .iter()
        .filter(|(name, _, _)| pattern.is_match(name))
        .map(|(_, mtu, _)| *mtu)
        .min()
}

/// A tunnel device's MTU: the configured one, else the underlay's less the
/// overhead.
pub fn tunnel_mtu(configured: u32, underlay: u32, overhead: u32) -> u32 {
    if configured != 0 {
        configured
    } else {
        underlay.saturating_sub(overhead)
    }
}

/// The MTU workloads get: the smallest tunnel MTU, else the underlay's.
pub fn pod_mtu(underlay: u32, tunnels: impl IntoIterator<Item = u32>) -> u32 {
    tunnels.into_iter().min().unwrap_or(underlay)
}

/// Writes `mtu` to `path` (replacing it whole, so a reader never sees half
/// a number) unless it already says so. Whether it changed.
pub fn write_file(path: &Path, mtu: u32) -> std::io::Result<bool> {
    let text = format!("{mtu}\n");
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Vec<(String, u32, bool)> {
        [
            ("lo", 65536),
            ("eth0", 1500),
            ("ens5", 9001),
            ("cali1234", 1450),
            ("vxlan.calico", 1450),
            ("docker0", 1400),
        ]
        .into_iter()
        .map(|(n, m)| (n.to_string(), m, true))
        .collect()
    }

    #[test]
    fn detects_the_smallest_matching_interface() {
        let default = regex::Regex::new(crate::config::DEFAULT_MTU_IFACE_PATTERN).expect("re");
        assert_eq!(underlay_mtu(&links(), &default), Some(1500));
        let ens = regex::Regex::new("^ens").expect("re");
        assert_eq!(underlay_mtu(&links(), &ens), Some(9001));
        let none = regex::Regex::new("^bond").expect("re");
        assert_eq!(underlay_mtu(&links(), &none), None);
    }

    #[test]
    fn tunnels_subtract_their_overhead_unless_configured() {
        assert_eq!(tunnel_mtu(0, 1500, 50), 1450);
        assert_eq!(tunnel_mtu(0, 9001, 70), 8931);
        assert_eq!(tunnel_mtu(1400, 1500, 50), 1400);
        assert_eq!(pod_mtu(1500, [1450, 1430]), 1430);
        assert_eq!(pod_mtu(9001, []), 9001);
    }

    #[test]
    fn the_file_is_rewritten_only_when_it_changes() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("calico/mtu");
        assert!(write_file(&path, 1450).expect("write"));
        assert!(!write_file(&path, 1450).expect("write"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "1450\n");
        assert!(write_file(&path, 1500).expect("write"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "1500\n");
        assert_eq!(
            std::fs::read_dir(path.parent().expect("dir"))
                .expect("ls")
                .count(),
            1
        );
    }
}
