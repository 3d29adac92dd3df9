//! The overlay's kernel side: VXLAN tunnel devices (`vxlan.calico`,
//! `vxlan-v6.calico`), the node's VTEP address on each, and one permanent
//! neighbour entry (VTEP address → MAC) and one forwarding entry (MAC →
//! remote host) per remote VTEP.
//!
//! [`plan`] compares a wanted [`Tunnel`](calico_calc::overlay::Tunnel)
//! with what the kernel shows and says what to change; `calico-kernel`'s
//! `TunnelDevices` reads and changes the kernel. A device is owned by name:
//! one that is not wanted is deleted (taking its entries and the routes
//! through it along), one whose fixed settings differ (VNI, port, local
//! address, parent, learning) is recreated.

mod plan;

pub use plan::{device_action, diff, DeviceAction, Observed};
