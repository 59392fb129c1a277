use thiserror::Error;

/// Errors of the hypervisor layer. Messages name the problem and, where one exists, the fix.
#[derive(Debug, Error)]
pub enum Error {
    /// `fix` is the backend's own advice.
    #[error("{path} does not exist: {fix}")]
    DeviceMissing { path: String, fix: &'static str },
    #[error("no permission to open {path}: add your user to the 'kvm' group or run as root")]
    DeviceAccess { path: String },
    #[error("cannot open {path}: {source}")]
    DeviceOpen {
        path: String,
        source: std::io::Error,
    },
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
    #[error("the hypervisor lacks a required capability: {0}")]
    MissingCapability(&'static str),
    #[error("no hypervisor backend was built into berth")]
    NoBackend,
    #[error("no hypervisor backend could be opened: {0}")]
    NoUsableBackend(String),
    #[error("the {0} backend was not built into this berth (rebuild with its cargo feature)")]
    NotBuilt(crate::HypervisorKind),
    #[error("{op} failed: {source}")]
    Ioctl {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("installing the vCPU kick signal handler failed: {0}")]
    Signal(vmm_sys_util::errno::Error),
    #[error("not available: {0}")]
    Unsupported(&'static str),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// Opening a backend's device node failed with `errno`: missing (with the backend's
    /// `fix`), no permission, or anything else as it is.
    pub fn device_open(path: &str, errno: i32, fix: &'static str) -> Self {
        let path = path.to_string();
        match errno {
            libc::ENOENT => Error::DeviceMissing { path, fix },
            libc::EACCES | libc::EPERM => Error::DeviceAccess { path },
            _ => Error::DeviceOpen {
                path,
                source: std::io::Error::from_raw_os_error(errno),
            },
        }
    }

    /// Wraps a failed ioctl (errno) with the name of the operation.
    pub fn ioctl(op: &'static str, e: impl Into<std::io::Error>) -> Self {
        Error::Ioctl {
            op,
            source: e.into(),
        }
    }
}

/// Result of the hypervisor layer.
pub type Result<T> = std::result::Result<T, Error>;
