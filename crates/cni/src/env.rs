//! The CNI_* environment, validated.

use crate::error::{code, CniError};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: BTreeMap<String, String>,
    pub path: Vec<String>,
}

fn bad(msg: String) -> CniError {
    CniError::new(code::INVALID_ENV, msg, "")
}

/// Container IDs: alphanumerics plus `_.-`, starting with an alphanumeric.
fn valid_container_id(id: &str) -> bool {
    id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Interface names: 1-15 bytes, no '/', ':' or whitespace, not "." or "..".
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

/// `K=V;K2=V2` as runtimes pass CNI_ARGS.
pub fn parse_args(text: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("CNI_ARGS: {pair:?} is not KEY=VALUE")))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

impl Env {
    /// Reads the environment through `get`; checks what the command needs.
    pub fn read(get: &dyn Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some("VERSION") => Command::Version,
            Some(other) => {
                return Err(bad(format!(
                    "CNI_COMMAND {other:?} is not ADD, DEL, CHECK, STATUS, GC or VERSION"
                )))
            }
            None => return Err(bad("CNI_COMMAND is not set".into())),
        };
        let per_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let required = |name: &str, needed: bool| -> Result<String, CniError> {
            match get(name).filter(|v| !v.is_empty()) {
                Some(v) => Ok(v),
                None if needed => Err(bad(format!("{name} is required for this command"))),
                None => Ok(String::new()),
            }
        };
        let container_id = required("CNI_CONTAINERID", per_container)?;
        if per_container && !valid_container_id(&container_id) {
            return Err(bad(format!("CNI_CONTAINERID {container_id:?} must be alphanumerics, '_', '.' or '-', starting with an alphanumeric")));
        }
        let netns = required(
            "CNI_NETNS",
            matches!(command, Command::Add | Command::Check),
        )?;
        let ifname = required("CNI_IFNAME", per_container)?;
        if per_container && !valid_ifname(&ifname) {
            return Err(bad(format!("CNI_IFNAME {ifname:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)")));
        }
        let args = parse_args(&get("CNI_ARGS").unwrap_or_default())?;
        let path = get("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn validation() {
        let ok = Env::read(&env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ]))
        .unwrap();
        assert_eq!(ok.args["K8S_POD_NAME"], "web");
        assert_eq!(ok.path.len(), 2);
        let e = Env::read(&env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (4, "CNI_NETNS is required for this command")
        );
        let e = Env::read(&env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap_err();
        assert!(e.msg.contains("CNI_CONTAINERID"));
        let e = Env::read(&env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a"),
            ("CNI_IFNAME", "a-very-long-interface"),
        ]))
        .unwrap_err();
        assert!(e.msg.contains("CNI_IFNAME"));
        assert!(
            Env::read(&env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "a"),
                ("CNI_IFNAME", "eth0")
            ]))
            .is_ok(),
            "DEL needs no netns"
        );
        assert_eq!(
            Env::read(&env(&[("CNI_COMMAND", "VERSION")]))
                .unwrap()
                .command,
            Command::Version
        );
        assert!(Env::read(&env(&[("CNI_COMMAND", "BOOT")])).is_err());
        assert!(parse_args("A=1;broken").is_err());
    }
}
