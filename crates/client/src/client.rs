//! The resource client: get, list, create, replace, apply, delete.

use crate::checks;
use crate::keys::{kind_prefix, resource_key};
use calico_api::{Kind, Resource, ValidationError};
use calico_datastore::{KeyValue, Revision, Store, StoreError};
use std::sync::Arc;

/// Supplies creation timestamps (RFC 3339). Binaries pass the wall clock;
/// tests pass a fixed one.
pub trait Clock: Send + Sync {
    fn now_rfc3339(&self) -> String;
}

/// The wall clock, for binaries.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one clock the libraries are handed: the wall clock itself.
    #[allow(clippy::disallowed_methods)]
    fn now_rfc3339(&self) -> String {
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("resource does not exist: {0}")]
    NotFound(String),
    #[error("resource already exists: {0}")]
    AlreadyExists(String),
    #[error("update conflict: {resource} was modified concurrently (resourceVersion {expected} is not current)")]
    Conflict { resource: String, expected: String },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{resource} is rejected: {reason}")]
    Rejected { resource: String, reason: String },
    #[error(transparent)]
    Store(StoreError),
    #[error("the stored value at {key} cannot be read")]
    Corrupt {
        key: String,
        #[source]
        cause: Unreadable,
    },
}

/// Why a stored value cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("not JSON")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Resource(#[from] calico_api::DecodeError),
}

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Updated,
}

/// A list of resources and the datastore revision it was read at.
#[derive(Debug, Clone)]
pub struct ResourceList {
    pub items: Vec<Resource>,
    pub revision: Revision,
}

pub struct Client {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

fn key_of(r: &Resource) -> String {
    let m = r.meta();
    resource_key(r.kind(), m.namespace.as_deref(), &m.name)
}

fn name_of(kind: Kind, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) if kind.namespaced() => format!("{kind}({ns}/{name})"),
        _ => format!("{kind}({name})"),
    }
}

/// Parses a user-supplied resourceVersion.
fn parse_version(r: &Resource, text: &str) -> Result<Revision, ClientError> {
    text.parse().map_err(|_| ClientError::Rejected {
        resource: r.display_name(),
        reason: format!("metadata.resourceVersion {text:?} is not a revision number"),
    })
}

impl Client {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Client { store, clock }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn decode(kv: &KeyValue) -> Result<Resource, ClientError> {
        let corrupt = |cause: Unreadable| ClientError::Corrupt {
            key: kv.key.clone(),
            cause,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&kv.value).map_err(|e| corrupt(e.into()))?;
        let mut r = calico_api::decode_resource(value).map_err(|e| corrupt(e.into()))?;
        r.meta_mut().resource_version = Some(kv.mod_revision.to_string());
        Ok(r)
    }

    /// The stored form: JSON without resourceVersion, at most etcd's
    /// request limit (a larger one could not be stored in etcd, and is
    /// refused in every backend alike).
    fn encode(r: &Resource) -> Result<Vec<u8>, ClientError> {
        let mut stored = r.clone();
        stored.meta_mut().resource_version = None;
        let bytes = serde_json::to_vec(&stored).map_err(|e| ClientError::Rejected {
            resource: r.display_name(),
            reason: format!("cannot be encoded: {e}"),
        })?;
        if bytes.len() > calico_api::strict::MAX_DOCUMENT_BYTES {
            return Err(ClientError::Rejected {
                resource: r.display_name(),
                reason: format!(
                    "it is {} bytes stored; a resource may be at most {} (etcd's request limit)",
                    bytes.len(),
                    calico_api::strict::MAX_DOCUMENT_BYTES
                ),
            });
        }
        Ok(bytes)
    }

    fn map_store(
        &self,
        e: StoreError,
        resource: String,
        expected: Option<Revision>,
    ) -> ClientError {
        match e {
            StoreError::NotFound { .. } => ClientError::NotFound(resource),
            StoreError::AlreadyExists { .. } => ClientError::AlreadyExists(resource),
            StoreError::Conflict { .. } => ClientError::Conflict {
                resource,
                expected: expected.map(|r| r.to_string()).unwrap_or_default(),
            },
            other => ClientError::Store(other),
        }
    }

    pub fn get(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Resource, ClientError> {
        let key = resource_key(kind, namespace, name);
        match self.store.get(&key).map_err(ClientError::Store)? {
            Some(kv) => Self::decode(&kv),
            None => Err(ClientError::NotFound(name_of(
                kind,
                namespace.or(Some("default")),
                name,
            ))),
        }
    }

    /// Every resource of `kind`; for namespaced kinds, in `namespace` or (None) in all.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Result<ResourceList, ClientError> {
        let listing = self
            .store
            .list(&kind_prefix(kind, namespace))
            .map_err(ClientError::Store)?;
        let items = listing
            .items
            .iter()
            .map(Self::decode)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ResourceList {
            items,
            revision: listing.revision,
        })
    }

    fn prepare(&self, mut r: Resource) -> Result<Resource, ClientError> {
        r.apply_defaults();
        r.validate()?;
        checks::references(self, &r)?;
        Ok(r)
    }

    /// Creates a resource that must not exist yet.
    pub fn create(&self, r: Resource) -> Result<Resource, ClientError> {
        let mut r = self.prepare(r)?;
        let m = r.meta_mut();
        m.uid = Some(uuid::Uuid::new_v4().to_string());
        m.creation_timestamp = Some(self.clock.now_rfc3339());
        m.resource_version = None;
        let rev = self
            .store
            .create(&key_of(&r), &Self::encode(&r)?)
            .map_err(|e| self.map_store(e, r.display_name(), None))?;
        r.meta_mut().resource_version = Some(rev.to_string());
        Ok(r)
    }

    /// Replaces an existing resource. With `metadata.resourceVersion` set,
    /// only if it is still current; server-set metadata is kept.
    pub fn replace(&self, r: Resource) -> Result<Resource, ClientError> {
        let mut r = self.prepare(r)?;
        let current = self.get(r.kind(), r.meta().namespace.as_deref(), &r.meta().name)?;
        checks::immutable(&current, &r)?;
        let expected = match r.meta().resource_version.clone() {
            Some(v) if !v.is_empty() => parse_version(&r, &v)?,
            _ => parse_version(
                &current,
                current.meta().resource_version.as_deref().unwrap_or("0"),
            )?,
        };
        let cm = current.meta();
        let m = r.meta_mut();
        m.uid.clone_from(&cm.uid);
        m.creation_timestamp.clone_from(&cm.creation_timestamp);
        let rev = self
            .store
            .update(&key_of(&r), &Self::encode(&r)?, expected)
            .map_err(|e| self.map_store(e, r.display_name(), Some(expected)))?;
        r.meta_mut().resource_version = Some(rev.to_string());
        Ok(r)
    }

    /// Creates or replaces, whichever applies. A concurrent change between
    /// the read and the write is retried (apply has last-writer-wins semantics,
    /// unless the resource names a resourceVersion).
    pub fn apply(&self, r: Resource) -> Result<(Resource, Applied), ClientError> {
        let pinned = r
            .meta()
            .resource_version
            .as_ref()
            .is_some_and(|v| !v.is_empty());
        for _ in 0..10 {
            let exists = self
                .store
                .get(&key_of(&r))
                .map_err(ClientError::Store)?
                .is_some();
            let outcome = if exists {
                self.replace(r.clone()).map(|r| (r, Applied::Updated))
            } else {
                self.create(r.clone()).map(|r| (r, Applied::Created))
            };
            match outcome {
                Err(ClientError::AlreadyExists(_) | ClientError::NotFound(_)) => continue,
                Err(ClientError::Conflict { .. }) if !pinned => continue,
                other => return other,
            }
        }
        Err(ClientError::Conflict {
            resource: r.display_name(),
            expected: String::new(),
        })
    }

    /// Deletes a resource; with `resource_version`, only if still current.
    pub fn delete(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<Resource, ClientError> {
        let current = self.get(kind, namespace, name)?;
        checks::deletable(self, &current)?;
        let expected = match resource_version {
            Some(v) if !v.is_empty() => Some(parse_version(&current, v)?),
            _ => current
                .meta()
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok()),
        };
        self.store
            .delete(&key_of(&current), expected)
            .map_err(|e| self.map_store(e, current.display_name(), expected))?;
        Ok(current)
    }
}
