//! Validation: every problem found in a resource, each with its field path.

use calico_net::{parse_cidr_or_ip, IpNet};
use std::fmt;

/// One problem: where (`spec.ingress[0].action`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// All problems found in one resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{resource} is invalid: {}", join(.errors))]
pub struct ValidationError {
    /// `Kind(name)` or `Kind(namespace/name)`.
    pub resource: String,
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    /// Every field error, `path: reason; path: reason`.
    pub fn reasons(&self) -> String {
        join(&self.errors)
    }
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects field errors while a resource is checked.
#[derive(Debug, Default)]
pub struct Errors {
    pub(crate) items: Vec<FieldError>,
}

impl Errors {
    /// Records a problem; a reason that echoes a huge value is cut short.
    pub fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.items.push(FieldError {
            path: truncated_message(&path.into()),
            reason: truncated_message(&reason.into()),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn into_result(self, resource: String) -> Result<(), ValidationError> {
        if self.items.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                resource,
                errors: self.items,
            })
        }
    }

    /// `global()` belongs only in a namespaceSelector.
    pub fn no_global(&mut self, path: &str, selector: &crate::types::Selector) {
        if selector.parsed().uses_global() {
            self.add(path, "global() is only allowed in a namespaceSelector");
        }
    }

    /// A CIDR or bare address in an untyped field.
    pub fn net(&mut self, path: &str, text: &str) -> Option<IpNet> {
        parse_cidr_or_ip(text)
            .map_err(|e| self.add(path, e.to_string()))
            .ok()
    }

    /// A value that must be one of a fixed set of spellings.
    pub fn one_of(&mut self, path: &str, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            self.add(
                path,
                format!("{value:?} is not one of {}", allowed.join(", ")),
            );
        }
    }

    pub fn label_map(&mut self, path: &str, labels: &std::collections::BTreeMap<String, String>) {
        for (k, v) in labels {
            if let Err(why) = label_key(k) {
                self.add(format!("{path}[{k}]"), format!("invalid label key: {why}"));
            }
            if let Err(why) = label_value(v) {
                self.add(
                    format!("{path}[{k}]"),
                    format!("invalid label value {v:?}: {why}"),
                );
            }
        }
    }
}

/// Why a name, label, AS number or interface name is not valid; the text
/// is the reason a field error shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("must be 1-{0} characters")]
    Length(usize),
    #[error(
        "must consist of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
    )]
    QualifiedName,
    #[error("must be lower-case alphanumerics, '-' and '.', each part starting and ending with an alphanumeric")]
    Subdomain,
    #[error("must be at most 63 lower-case alphanumerics or '-'")]
    DnsLabel,
    /// A label key's part (`prefix` or `name`) and what is wrong with it.
    #[error("{part} {value:?} {why}")]
    KeyPart {
        part: &'static str,
        value: String,
        why: Box<Invalid>,
    },
    /// A label key without a prefix.
    #[error("{value:?} {why}")]
    Key { value: String, why: Box<Invalid> },
    #[error("{0:?} is not an AS number")]
    AsDot(String),
    #[error("{0:?} is not an AS number (1-4294967295)")]
    AsNumber(String),
    #[error("AS number 0 is reserved")]
    AsZero,
    #[error("{0:?} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)")]
    InterfaceName(String),
}

fn qualified_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > 63 {
        return Err(Invalid::Length(63));
    }
    let ok_inner = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ends = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !ok_inner || !ends(name.bytes().next()) || !ends(name.bytes().last()) {
        return Err(Invalid::QualifiedName);
    }
    Ok(())
}

/// A Kubernetes label key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn label_key(key: &str) -> Result<(), Invalid> {
    fn part<'a>(part: &'static str, value: &'a str) -> impl FnOnce(Invalid) -> Invalid + 'a {
        move |why| Invalid::KeyPart {
            part,
            value: value.to_string(),
            why: Box::new(why),
        }
    }
    match key.rsplit_once('/') {
        Some((prefix, name)) => {
            dns_subdomain(prefix).map_err(part("prefix", prefix))?;
            qualified_name(name).map_err(part("name", name))
        }
        None => qualified_name(key).map_err(|why| Invalid::Key {
            value: key.to_string(),
            why: Box::new(why),
        }),
    }
}

/// A Kubernetes label value: empty, or a qualified name.
pub fn label_value(value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        Ok(())
    } else {
        qualified_name(value)
    }
}

/// A DNS subdomain (RFC 1123): lower-case alphanumerics, '-' and '.', at most 253.
pub fn dns_subdomain(name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > 253 {
        return Err(Invalid::Length(253));
    }
    for part in name.split('.') {
        let ok = !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-');
        if !ok {
            return Err(Invalid::Subdomain);
        }
    }
    Ok(())
}

/// A DNS label (RFC 1123): at most 63, no dots. Namespaces are DNS labels.
pub fn dns_label(name: &str) -> Result<(), Invalid> {
    if name.contains('.') || name.len() > 63 {
        return Err(Invalid::DnsLabel);
    }
    dns_subdomain(name)
}

/// An AS number, 1 to 4294967295, written as a plain number or as `high.low`.
pub fn as_number(text: &str) -> Result<u32, Invalid> {
    let parsed = match text.split_once('.') {
        Some((hi, lo)) => {
            let bad = || Invalid::AsDot(text.to_string());
            let hi: u32 = hi.parse().map_err(|_| bad())?;
            let lo: u32 = lo.parse().map_err(|_| bad())?;
            if hi > 0xffff || lo > 0xffff {
                return Err(bad());
            }
            (hi << 16) | lo
        }
        None => text
            .parse()
            .map_err(|_| Invalid::AsNumber(text.to_string()))?,
    };
    if parsed == 0 {
        return Err(Invalid::AsZero);
    }
    Ok(parsed)
}

/// A Linux interface name as Calico accepts one: 1-15 of `[A-Za-z0-9_.-]`,
/// and not `.` or `..`. Nothing else can reach a kernel call or an nft
/// script, so no name can carry a quote, a space or a separator.
pub fn interface_name(name: &str) -> Result<(), Invalid> {
    let ok = (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(Invalid::InterfaceName(truncated(name)))
    }
}

/// A value as error messages echo it: at most 64 characters, then `…`.
pub fn truncated(value: &str) -> String {
    cut(value, 64, "…".into())
}

/// An error message as it is shown: at most 512 characters, then `…`, so
/// that a message quoting a 50 MB value is not 50 MB long.
pub fn truncated_message(message: &str) -> String {
    cut(message, 512, format!("… ({} bytes in all)", message.len()))
}

/// `text` up to `max` characters, then `tail` if anything was cut.
fn cut(text: &str, max: usize, tail: String) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}{tail}", &text[..i]),
        None => text.to_string(),
    }
}
