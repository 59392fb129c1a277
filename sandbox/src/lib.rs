//! berth's sandbox: jails built in pure Rust from Linux primitives (user, mount, pid and net
//! namespaces, pivot_root, rlimits, capabilities, no_new_privs, seccomp). It knows nothing of
//! devices: the VMM says what a process may keep and do.
//!
//! Today it holds the namespace helper that the jail shares with guest memory: a short-lived,
//! single-threaded child in fresh user and mount namespaces that may mount what an
//! unprivileged process cannot (a tmpfs with huge pages) and hands back a file descriptor.

mod error;
pub mod huge_tmpfs;
pub mod ns_helper;

pub use error::{Error, Result};
