//! What the transport asks of the VMM, and what the VMM tells it back. The transport runs on
//! vCPU threads, so nothing here blocks: activation, reset and configuration writes are handed
//! to a device's control side (the VMM's vhost-user frontend thread), which reports through
//! [`ControlState`]; hypervisor plumbing the devices crate cannot name goes through
//! [`Wiring`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::virtio::frontend::QueueSetup;
use crate::virtio::VirtioInterrupt;

/// The device behind a transport, driven asynchronously. Each call returns at once.
pub trait DeviceControl: Send {
    /// Start the device for a driver that accepted `features`; `queues[i]` is queue i's set-up
    /// if the driver enabled it. Failure is reported with [`ControlState::fail`].
    fn activate(&self, features: u64, queues: Vec<Option<QueueSetup>>);
    /// Stop every queue and reset the device; [`ControlState::reset_done`] when finished.
    fn reset(&self);
    /// The driver wrote the device configuration space.
    fn write_config(&self, offset: u32, data: Vec<u8>);
}

/// Hypervisor-side plumbing the VMM does for the transport.
pub trait Wiring: Send + Sync {
    /// Calls `on_signal` whenever `fd` is signalled, until [`Wiring::unwatch_call`] (a call
    /// fd while the driver uses INTx: the VMM raises the line).
    fn watch_call(&self, fd: &EventFd, on_signal: Box<dyn Fn() + Send + Sync>);
    fn unwatch_call(&self, fd: &EventFd);
    /// The queue notification fd `fd` now belongs at `new` instead of `old` (a BAR moved).
    fn move_notify(&self, fd: &EventFd, old: u64, new: u64);
}

/// Shared between the transport and the device's control side.
pub struct ControlState {
    resetting: AtomicBool,
    failed: AtomicBool,
    config: Mutex<Vec<u8>>,
    interrupt: Arc<dyn VirtioInterrupt>,
}

impl ControlState {
    pub(super) fn new(config: Vec<u8>, interrupt: Arc<dyn VirtioInterrupt>) -> Self {
        ControlState {
            resetting: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            config: Mutex::new(config),
            interrupt,
        }
    }

    /// The device cannot go on: the driver sees DEVICE_NEEDS_RESET and a configuration
    /// interrupt. A reset in progress counts as finished.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.resetting.store(false, Ordering::Release);
        self.interrupt.signal_config();
    }

    /// The reset asked of [`DeviceControl::reset`] has completed.
    pub fn reset_done(&self) {
        self.resetting.store(false, Ordering::Release);
    }

    /// The backend's configuration space changed (or was read anew).
    pub fn set_config(&self, config: Vec<u8>) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }

    pub(super) fn start_reset(&self) {
        self.resetting.store(true, Ordering::Release);
    }

    pub(super) fn resetting(&self) -> bool {
        self.resetting.load(Ordering::Acquire)
    }

    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(super) fn clear_failed(&self) {
        self.failed.store(false, Ordering::Release);
    }

    pub(super) fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let config = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let Some(src) = usize::try_from(offset).ok().and_then(|o| config.get(o..)) else {
            return;
        };
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }

    pub(super) fn write_config(&self, offset: u64, data: &[u8]) {
        let mut config = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let Some(end) = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(data.len()))
        else {
            return;
        };
        if end <= config.len() {
            config[end - data.len()..end].copy_from_slice(data);
        }
    }
}
