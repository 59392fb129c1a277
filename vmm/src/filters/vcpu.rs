//! The vCPU threads' calls beyond [`super::control::COMMON`].

use sandbox::seccomp::Allow;

pub const VCPU: &[Allow] = &[
    // KVM_RUN and the exits' follow-ups (registers on a shutdown, MSI routes, ioeventfds
    // of a moved BAR, interrupt lines).
    Allow::Call(libc::SYS_ioctl),
    // A driver without MSI-X (INTx) enabling or resetting a queue: its call fd joins or
    // leaves the INTx call watcher's epoll set.
    Allow::Call(libc::SYS_epoll_ctl),
];
