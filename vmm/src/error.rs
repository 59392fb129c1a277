use std::path::PathBuf;

use thiserror::Error;

/// Errors of the VMM. Each is printed as one line naming the problem and the fix.
#[derive(Debug, Error)]
pub enum Error {
    #[error("kernel {path}: {source} (check --kernel)")]
    KernelOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("initrd {path}: {source} (check --initrd)")]
    InitrdOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serial output file {path}: {source}")]
    SerialFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--cpus 0: a VM needs at least one vCPU")]
    NoCpus,
    #[error("--cpus {requested} is more than {backend} supports on this host (at most {max})")]
    TooManyCpus {
        requested: u32,
        max: u32,
        backend: String,
    },
    #[error("--memory {mib} MiB is too small: berth needs at least {min} MiB")]
    MemoryTooSmall { mib: u64, min: u64 },
    #[error("--memory {mib} MiB is too large for this host's address space")]
    MemoryTooLarge { mib: u64 },
    #[error("allocating {mib} MiB of guest memory failed: {source}")]
    GuestMemory { mib: u64, source: std::io::Error },
    #[error("{0}")]
    HugePages(String),
    #[error(transparent)]
    Hypervisor(#[from] hypervisor::Error),
    #[error(transparent)]
    Boot(#[from] arch::Error),
    #[error(transparent)]
    Disk(devices::virtio::blk::BlockError),
    #[error("device setup: {0}")]
    Device(String),
    #[error("cannot jail {device}: {why}; user namespaces may be unavailable or restricted here (AppArmor on Ubuntu 24.04 refuses mounts in them): allow them, or run with --disable-sandbox to run the devices unjailed, as threads of berth")]
    Sandbox { device: String, why: String },
    #[error("berth's seccomp filters: {0}")]
    Filter(sandbox::Error),
    #[error("--irqchip {wanted}: the {backend} backend has no such interrupt controller on this host; use --irqchip {other}")]
    IrqchipMode {
        wanted: &'static str,
        other: &'static str,
        backend: String,
    },
    #[cfg(target_arch = "aarch64")]
    #[error("--irqchip split: aarch64 has no split interrupt controller (the GIC is the hypervisor's); use --irqchip kernel")]
    SplitIrqchipUnsupported,
    #[error("starting vCPU thread {cpu}: {source}")]
    VcpuThread { cpu: u32, source: std::io::Error },
    #[error("vCPU {cpu}: {what}")]
    VcpuRun { cpu: u32, what: String },
}

pub type Result<T> = std::result::Result<T, Error>;
