//! Network values shared by the API, IPAM and the dataplane: CIDRs that
//! accept Calico's spellings, ports and port ranges, protocols.

mod cidr;
mod port;
mod protocol;

pub use cidr::{overlaps, parse_cidr_or_ip, parse_network, CidrError};
pub use ipnet::{IpNet, Ipv4Net, Ipv6Net};
pub use port::{Port, PortError};
pub use protocol::{Protocol, ProtocolError};
