//! The reference store passes its own conformance suite.

use calico_datastore::{conformance_tests, MemoryStore, Store};
use std::sync::Arc;

conformance_tests!((
    Arc::new(MemoryStore::new()) as Arc<dyn Store>,
    "/test/".to_string()
));
