//! Test doubles shared by the device tests.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vm_superio::Trigger;

/// A trigger that counts how often it fired; clones share the count.
#[derive(Clone, Debug, Default)]
pub struct CountingTrigger(Arc<AtomicU32>);

impl CountingTrigger {
    pub fn count(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Trigger for CountingTrigger {
    type E = ();

    fn trigger(&self) -> Result<(), ()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
