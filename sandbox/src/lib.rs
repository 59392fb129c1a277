//! berth's sandbox: jails built in pure Rust from Linux primitives (user, mount, pid and net
//! namespaces, pivot_root, rlimits, capabilities, no_new_privs, seccomp). It knows nothing of
//! devices: the VMM says what a process may keep and do.
//!
//! - [`spawn`]: start a process in new user, mount, pid, net, ipc, uts and cgroup namespaces,
//!   as an unprivileged uid and gid.
//! - [`lockdown`]: what that process then does to itself: an empty read-only root, only its
//!   own fds, rlimits, no capabilities, no_new_privs, Landlock.
//! - [`seccomp`]: allow-lists compiled with seccompiler, applied to every thread, and the
//!   SIGSYS reporter.
//! - [`ns_helper`] and [`huge_tmpfs`]: a short-lived child in its own user and mount
//!   namespaces that mounts what an unprivileged process cannot (a tmpfs with huge pages for
//!   guest RAM) and hands back an fd.

mod error;
pub mod huge_tmpfs;
pub mod lockdown;
pub mod ns_helper;
pub mod report;
pub mod seccomp;
pub mod spawn;
pub mod syscalls;

pub use error::{Error, Result};
