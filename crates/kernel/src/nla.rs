//! Netlink messages and their attributes read in place from a receive
//! buffer: the walk the NFLOG and ctnetlink readers share. By hand (a
//! length, a type, the value, padding to 4 bytes): it runs for every
//! logged packet, where the general parser cost the flow collector a sixth
//! of its time. Whatever does not fit ends its walk with a `None`, never a
//! read past its bounds.

/// A netlink message header's length.
const HEADER: usize = 16;

/// The messages of one receive, each as its type and payload. A message
/// whose length does not fit the buffer is the last item, as None.
pub(crate) fn messages(buf: &[u8]) -> impl Iterator<Item = Option<(u16, &[u8])>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let item = (|| {
            let len = u32::from_ne_bytes(rest.get(0..4)?.try_into().ok()?);
            let len = usize::try_from(len).ok()?;
            let kind = u16::from_ne_bytes(rest.get(4..6)?.try_into().ok()?);
            let payload = rest.get(HEADER..len)?;
            Some((len, kind, payload))
        })();
        match item {
            Some((len, kind, payload)) => {
                rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
                Some(Some((kind, payload)))
            }
            None => {
                rest = &[];
                Some(None)
            }
        }
    })
}

/// The attributes in `buf`, each as its type (without the nested and
/// byte-order flags) and value. An attribute that does not fit is the
/// last item, as None.
pub(crate) fn attributes(buf: &[u8]) -> impl Iterator<Item = Option<(u16, &[u8])>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        let Some(value) = rest.get(4..len) else {
            rest = &[];
            return Some(None);
        };
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some(Some((kind, value)))
    })
}
