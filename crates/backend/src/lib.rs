//! Choosing and opening the datastore, the way Calico components do:
//! `DATASTORE_TYPE=etcdv3` with `ETCD_ENDPOINTS` selects etcd; otherwise
//! the embedded file at `CALICO_DATASTORE_PATH` (default
//! `/var/lib/calico/calico.db`). calicoctl also reads a CalicoAPIConfig
//! file, whose settings the environment overrides.
//!
//! The one place a backend is chosen, at each binary's edge: libraries
//! take an `Arc<dyn Store>`. Each backend is a feature (`sqlite`, `etcd`,
//! both by default); a binary built without one refuses that
//! configuration with a clear error.

use calico_datastore::{Store, StoreError};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const DEFAULT_PATH: &str = "/var/lib/calico/calico.db";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreConfig {
    Embedded {
        path: PathBuf,
    },
    Etcd {
        endpoints: Vec<String>,
        security: EtcdFiles,
    },
}

/// Calico's etcd security settings: files for the CA, the client
/// certificate and key, and etcd auth (`ETCD_CA_CERT_FILE`,
/// `ETCD_CERT_FILE`, `ETCD_KEY_FILE`, `ETCD_USERNAME`, `ETCD_PASSWORD`, or
/// `etcdCACertFile`... in a CalicoAPIConfig).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdFiles {
    pub ca_cert_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for EtcdFiles {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdFiles")
            .field("ca_cert_file", &self.ca_cert_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("username", &self.username)
            .finish()
    }
}

impl EtcdFiles {
    fn tls(&self) -> bool {
        self.ca_cert_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// The files read, checked for consistency.
    #[cfg(feature = "etcd")]
    fn load(&self) -> Result<calico_datastore_etcd::EtcdSecurity, ConfigError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|cause| ConfigError::File {
                path: p.display().to_string(),
                cause,
            })
        };
        let client = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Etcd(
                    "ETCD_CERT_FILE and ETCD_KEY_FILE go together".into(),
                ))
            }
        };
        let user = match (&self.username, &self.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Etcd(
                    "ETCD_USERNAME and ETCD_PASSWORD go together".into(),
                ))
            }
        };
        Ok(calico_datastore_etcd::EtcdSecurity {
            ca_cert: self.ca_cert_file.as_ref().map(read).transpose()?,
            client,
            user,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("DATASTORE_TYPE={0:?} is not supported (use etcdv3, or leave it unset for the embedded datastore)")]
    UnsupportedType(String),
    #[error("DATASTORE_TYPE=etcdv3 needs ETCD_ENDPOINTS (like http://127.0.0.1:2379)")]
    NoEndpoints,
    #[error("cannot read {path}")]
    File {
        path: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("{path} is not a CalicoAPIConfig")]
    Syntax {
        path: String,
        #[source]
        cause: serde_norway::Error,
    },
    #[error("cannot create the directory for the embedded datastore {path}")]
    Directory {
        path: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("this binary was built without the {0} datastore (cargo feature {0:?})")]
    NotBuilt(&'static str),
    #[error("etcd settings: {0}")]
    Etcd(String),
    #[error("there is no embedded datastore at {path} (set CALICO_DATASTORE_PATH, or write something first)")]
    Missing { path: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The `spec` of a CalicoAPIConfig file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiConfigSpec {
    #[serde(default)]
    datastore_type: String,
    #[serde(default)]
    etcd_endpoints: String,
    #[serde(default)]
    datastore_path: String,
    #[serde(default, rename = "etcdCACertFile")]
    etcd_ca_cert_file: String,
    #[serde(default)]
    etcd_cert_file: String,
    #[serde(default)]
    etcd_key_file: String,
    #[serde(default)]
    etcd_username: String,
    #[serde(default)]
    etcd_password: String,
}

#[derive(Debug, Deserialize)]
struct ApiConfig {
    #[serde(default)]
    spec: ApiConfigSpec,
}

impl DatastoreConfig {
    /// From a config file (if given and present) overridden by `env`.
    pub fn resolve(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut spec = ApiConfigSpec::default();
        if let Some(path) = file.filter(|p| p.exists()) {
            let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::File {
                path: path.display().to_string(),
                cause,
            })?;
            let cfg: ApiConfig =
                serde_norway::from_str(&text).map_err(|cause| ConfigError::Syntax {
                    path: path.display().to_string(),
                    cause,
                })?;
            spec = cfg.spec;
        }
        let get =
            |name: &str, fallback: String| env(name).filter(|v| !v.is_empty()).unwrap_or(fallback);
        let ty = get("DATASTORE_TYPE", spec.datastore_type);
        let endpoints = get("ETCD_ENDPOINTS", spec.etcd_endpoints);
        let path = get("CALICO_DATASTORE_PATH", spec.datastore_path);
        match ty.as_str() {
            "etcdv3" => {
                let endpoints: Vec<String> = endpoints
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(String::from)
                    .collect();
                if endpoints.is_empty() {
                    return Err(ConfigError::NoEndpoints);
                }
                let opt = |name: &str, fallback: String| {
                    Some(get(name, fallback)).filter(|v| !v.is_empty())
                };
                let security = EtcdFiles {
                    ca_cert_file: opt("ETCD_CA_CERT_FILE", spec.etcd_ca_cert_file)
                        .map(PathBuf::from),
                    cert_file: opt("ETCD_CERT_FILE", spec.etcd_cert_file).map(PathBuf::from),
                    key_file: opt("ETCD_KEY_FILE", spec.etcd_key_file).map(PathBuf::from),
                    username: opt("ETCD_USERNAME", spec.etcd_username),
                    password: opt("ETCD_PASSWORD", spec.etcd_password),
                };
                // TLS and plain endpoints do not mix: a certificate given
                // for an http:// endpoint would silently not be used.
                let https = endpoints.iter().all(|e| e.starts_with("https://"));
                let http = endpoints.iter().any(|e| !e.starts_with("https://"));
                if security.tls() && http {
                    return Err(ConfigError::Etcd(format!(
                        "TLS settings are given, so every endpoint must be https:// (got {})",
                        endpoints.join(",")
                    )));
                }
                if https && security.ca_cert_file.is_none() {
                    return Err(ConfigError::Etcd(
                        "https:// endpoints need the CA certificate (ETCD_CA_CERT_FILE)".into(),
                    ));
                }
                Ok(DatastoreConfig::Etcd {
                    endpoints,
                    security,
                })
            }
            "" | "embedded" => Ok(DatastoreConfig::Embedded {
                path: PathBuf::from(if path.is_empty() {
                    DEFAULT_PATH.to_string()
                } else {
                    path
                }),
            }),
            other => Err(ConfigError::UnsupportedType(other.to_string())),
        }
    }

    /// From the process environment alone.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::resolve(None, &|k| std::env::var(k).ok())
    }

    pub fn describe(&self) -> String {
        match self {
            DatastoreConfig::Embedded { path } => {
                format!("embedded datastore at {}", path.display())
            }
            DatastoreConfig::Etcd { endpoints, .. } => format!("etcd at {}", endpoints.join(",")),
        }
    }
}

/// Opens the configured store (creating the embedded file's directory if needed).
pub fn open_store(cfg: &DatastoreConfig) -> Result<Arc<dyn Store>, ConfigError> {
    match cfg {
        DatastoreConfig::Embedded { path } => open_embedded(path),
        DatastoreConfig::Etcd {
            endpoints,
            security,
        } => open_etcd(endpoints, security),
    }
}

#[cfg(feature = "sqlite")]
fn open_embedded(path: &Path) -> Result<Arc<dyn Store>, ConfigError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        // Directories made here are the owner's alone (0700).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|cause| ConfigError::Directory {
                path: dir.display().to_string(),
                cause,
            })?;
    }
    Ok(Arc::new(calico_datastore_sqlite::SqliteStore::open(path)?))
}

#[cfg(not(feature = "sqlite"))]
fn open_embedded(_: &Path) -> Result<Arc<dyn Store>, ConfigError> {
    Err(ConfigError::NotBuilt("sqlite"))
}

#[cfg(feature = "etcd")]
fn open_etcd(endpoints: &[String], security: &EtcdFiles) -> Result<Arc<dyn Store>, ConfigError> {
    Ok(Arc::new(calico_datastore_etcd::EtcdStore::connect_with(
        endpoints,
        &security.load()?,
    )?))
}

#[cfg(not(feature = "etcd"))]
fn open_etcd(_: &[String], _: &EtcdFiles) -> Result<Arc<dyn Store>, ConfigError> {
    Err(ConfigError::NotBuilt("etcd"))
}

/// Opens a datastore that must exist already: for commands that only
/// read, a missing embedded file is an error (naming the path), never a
/// new empty datastore that answers "nothing here".
pub fn open_existing_store(cfg: &DatastoreConfig) -> Result<Arc<dyn Store>, ConfigError> {
    if let DatastoreConfig::Embedded { path } = cfg {
        if !path.exists() {
            return Err(ConfigError::Missing {
                path: path.display().to_string(),
            });
        }
    }
    open_store(cfg)
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
    fn selection() {
        assert_eq!(
            DatastoreConfig::resolve(None, &env(&[])).unwrap(),
            DatastoreConfig::Embedded {
                path: DEFAULT_PATH.into()
            }
        );
        assert_eq!(
            DatastoreConfig::resolve(
                None,
                &env(&[
                    ("DATASTORE_TYPE", "etcdv3"),
                    ("ETCD_ENDPOINTS", "http://a:1, http://b:2")
                ])
            )
            .unwrap(),
            DatastoreConfig::Etcd {
                endpoints: vec!["http://a:1".into(), "http://b:2".into()],
                security: EtcdFiles::default(),
            }
        );
        assert!(matches!(
            DatastoreConfig::resolve(None, &env(&[("DATASTORE_TYPE", "etcdv3")])),
            Err(ConfigError::NoEndpoints)
        ));
        assert!(matches!(
            DatastoreConfig::resolve(None, &env(&[("DATASTORE_TYPE", "kubernetes")])),
            Err(ConfigError::UnsupportedType(_))
        ));
    }

    #[test]
    fn config_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("calicoctl.cfg");
        std::fs::write(&file, "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: http://10.0.0.1:2379\n").unwrap();
        assert_eq!(
            DatastoreConfig::resolve(Some(&file), &env(&[])).unwrap(),
            DatastoreConfig::Etcd {
                endpoints: vec!["http://10.0.0.1:2379".into()],
                security: EtcdFiles::default(),
            }
        );
        assert_eq!(
            DatastoreConfig::resolve(
                Some(&file),
                &env(&[
                    ("DATASTORE_TYPE", "embedded"),
                    ("CALICO_DATASTORE_PATH", "/tmp/x.db")
                ])
            )
            .unwrap(),
            DatastoreConfig::Embedded {
                path: "/tmp/x.db".into()
            }
        );
    }

    #[test]
    fn etcd_tls_and_auth_settings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("calicoctl.cfg");
        std::fs::write(&file, "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: https://10.0.0.1:2379\n  etcdCACertFile: /ca.pem\n  etcdCertFile: /c.pem\n  etcdKeyFile: /k.pem\n  etcdUsername: calico\n  etcdPassword: pw\n").unwrap();
        let DatastoreConfig::Etcd { security, .. } =
            DatastoreConfig::resolve(Some(&file), &env(&[])).unwrap()
        else {
            panic!("etcd")
        };
        assert_eq!(security.ca_cert_file.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(security.username.as_deref(), Some("calico"));
        assert!(
            !format!("{security:?}").contains("pw"),
            "the password is never printed"
        );
        // The environment wins, as for every other setting.
        let DatastoreConfig::Etcd { security, .. } =
            DatastoreConfig::resolve(Some(&file), &env(&[("ETCD_CA_CERT_FILE", "/other.pem")]))
                .unwrap()
        else {
            panic!("etcd")
        };
        assert_eq!(
            security.ca_cert_file.as_deref(),
            Some(Path::new("/other.pem"))
        );
        // Certificates for a plain endpoint, or https without a CA: refused.
        for pairs in [
            &[
                ("DATASTORE_TYPE", "etcdv3"),
                ("ETCD_ENDPOINTS", "http://a:1"),
                ("ETCD_CA_CERT_FILE", "/ca.pem"),
            ][..],
            &[
                ("DATASTORE_TYPE", "etcdv3"),
                ("ETCD_ENDPOINTS", "https://a:1"),
            ],
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(pairs.to_vec().into_boxed_slice());
            assert!(matches!(
                DatastoreConfig::resolve(None, &env(pairs)),
                Err(ConfigError::Etcd(_))
            ));
        }
    }
}
