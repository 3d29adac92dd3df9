//! Sysctls through `/proc/sys`, with every key checked before it is used.

use crate::Sysctl;

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("{0:?} is not a sysctl name")]
    BadKey(String),
    #[error("{0:?} is not a sysctl value")]
    BadValue(String),
    #[error("writing /proc/sys/{key}")]
    Write {
        key: String,
        #[source]
        cause: std::io::Error,
    },
}

/// The real `/proc/sys` of this process's network namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSysctl;

/// A key is path components of letters, digits, `.`, `-`, `_` (an
/// interface name may hold dots), never `.` or `..` themselves.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        })
}

fn valid_value(value: &str) -> bool {
    !value.is_empty() && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_graphic())
}

impl Sysctl for ProcSysctl {
    fn write(&self, key: &str, value: &str) -> Result<(), SysctlError> {
        if !valid_key(key) {
            return Err(SysctlError::BadKey(key.to_string()));
        }
        if !valid_value(value) {
            return Err(SysctlError::BadValue(value.to_string()));
        }
        std::fs::write(format!("/proc/sys/{key}"), value).map_err(|cause| SysctlError::Write {
            key: key.to_string(),
            cause,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_checked_before_the_kernel_sees_them() {
        assert!(valid_key("net/ipv4/conf/cali0123456789a/rp_filter"));
        assert!(valid_key("net/ipv4/conf/eth0.100/rp_filter"));
        for bad in [
            "",
            "/etc/passwd",
            "net/ipv4/../../../etc/passwd",
            "net/ipv4/conf/./rp_filter",
            "net//x",
            "net/ipv4/conf/a b/rp_filter",
            "net/ipv4/conf/a\nb/rp_filter",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
            assert!(matches!(
                ProcSysctl.write(bad, "1"),
                Err(SysctlError::BadKey(_))
            ));
        }
        for bad in ["", "1 2", "1\n", &"9".repeat(65)] {
            assert!(matches!(
                ProcSysctl.write("net/ipv4/ip_forward", bad),
                Err(SysctlError::BadValue(_))
            ));
        }
    }
}
