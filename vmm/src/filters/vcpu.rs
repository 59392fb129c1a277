//! The vCPU threads' calls beyond [`super::control::COMMON`].

use sandbox::seccomp::Allow;

/// (Its ioctls are the hypervisor backend's `RuntimeIoctls::vcpu`.)
pub const VCPU: &[Allow] = &[
    // A driver without MSI-X (INTx) enabling or resetting a queue: its call fd joins or
    // leaves the INTx call watcher's epoll set.
    Allow::Call(libc::SYS_epoll_ctl),
];
