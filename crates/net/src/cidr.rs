//! CIDR parsing as Calico accepts it.

use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address or CIDR")]
    Syntax(String),
    #[error("{given:?} has host bits set; did you mean {network}?")]
    HostBits { given: String, network: IpNet },
}

/// Parses `a.b.c.d/n`, `x::/n`, or a bare address (as a /32 or /128), and
/// returns the network with host bits cleared, as Calico does for rule nets.
pub fn parse_cidr_or_ip(text: &str) -> Result<IpNet, CidrError> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| CidrError::Syntax(text.to_string()))
}

/// Parses a CIDR that must name a network exactly (no host bits), as an
/// IP pool or reservation must.
pub fn parse_network(text: &str) -> Result<IpNet, CidrError> {
    let net: IpNet = text
        .parse()
        .map_err(|_| CidrError::Syntax(text.to_string()))?;
    if net.trunc() != net {
        return Err(CidrError::HostBits {
            given: text.to_string(),
            network: net.trunc(),
        });
    }
    Ok(net)
}

/// Whether two networks share any address (one contains the other's
/// first address; networks are nested or disjoint).
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!(
            parse_cidr_or_ip("10.0.0.1").unwrap().to_string(),
            "10.0.0.1/32"
        );
        assert_eq!(
            parse_cidr_or_ip("10.0.0.1/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_cidr_or_ip("fd00::1").unwrap().to_string(),
            "fd00::1/128"
        );
        assert!(parse_cidr_or_ip("10.0.0/8").is_err());
        assert!(parse_cidr_or_ip("10.0.0.0/33").is_err());
        assert_eq!(parse_network("192.168.0.0/16").unwrap().prefix_len(), 16);
        let err = parse_network("192.168.1.0/16").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"192.168.1.0/16\" has host bits set; did you mean 192.168.0.0/16?"
        );
    }
}
