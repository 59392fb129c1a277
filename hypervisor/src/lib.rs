//! berth's hypervisor layer.
//!
//! Everything the rest of berth knows about a hypervisor goes through the traits in this crate:
//! [`Hypervisor`] (a host-wide handle), [`Vm`] (memory, ioevents, the interrupt controller) and
//! [`Vcpu`] (run it, read and write its registers). Register state and exits are neutral types
//! defined here; each backend (today `kvm`) converts them. Arch-specific methods live in per-arch
//! supertraits ([`arch::HypervisorArch`], [`arch::VmArch`], [`arch::VcpuArch`]) so a single
//! `dyn Vcpu` carries them without casts, the way crosvm's `VcpuX86_64` does.
//!
//! A new backend implements these traits in `src/<name>/` and is registered in `BACKENDS` and
//! `open_backend` (the only place [`open`] looks); nothing outside this crate changes (see
//! `docs/porting.md`), and `conformance` checks it.

pub mod conformance;
#[cfg(target_arch = "x86_64")]
pub mod emulator;
mod error;
mod exit;
pub mod irq;
#[cfg(feature = "kvm")]
pub mod kvm;
#[cfg(feature = "mshv")]
pub mod mshv;

#[cfg(target_arch = "x86_64")]
pub mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64 as arch;
// The aarch64 types are neutral data, built on every host so that the aarch64 boot code's pure
// parts (Image parsing, the device tree) can be tested and fuzzed at native speed on x86_64.
pub mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64 as arch;

use std::sync::Arc;

pub use error::{Error, Result};
pub use exit::{IoHandler, SystemEvent, VcpuExit};
pub use irq::{Datamatch, IoEventAddress, IrqChip, IrqRoute, MsiMessage};
pub use vmm_sys_util::eventfd::EventFd;

use arch::{HypervisorArch, IrqChipConfig, VcpuArch, VmArch};

/// Which hypervisor backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypervisorKind {
    /// Linux KVM through /dev/kvm.
    Kvm,
    /// Microsoft Hypervisor through /dev/mshv (Linux in Hyper-V's root partition).
    Mshv,
}

impl std::fmt::Display for HypervisorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HypervisorKind::Kvm => f.write_str("kvm"),
            HypervisorKind::Mshv => f.write_str("mshv"),
        }
    }
}

/// A host-wide handle on a hypervisor.
pub trait Hypervisor: HypervisorArch + Send + Sync {
    /// The backend behind this handle.
    fn kind(&self) -> HypervisorKind;
    /// Largest number of vCPUs one VM may have.
    fn max_vcpus(&self) -> u32;
    /// Creates an empty VM.
    fn create_vm(&self) -> Result<Arc<dyn Vm>>;
    /// The ioctl requests berth's threads make on this backend's fds once the VM runs,
    /// for their seccomp filters.
    fn runtime_ioctls(&self) -> RuntimeIoctls;
    /// What this backend offers beyond the traits' minimum, on this host.
    fn capabilities(&self) -> Capabilities;
}

/// What a backend offers beyond what every backend must, as found on this host. The VMM
/// and `berth check` consult it; a case or option that needs what is missing says so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The whole interrupt controller in the hypervisor (`IrqChipMode::Kernel`; on aarch64
    /// the GIC, always).
    pub irqchip_kernel: bool,
    /// Only the local APICs in the hypervisor, the IOAPIC the VMM's (`IrqChipMode::Split`;
    /// x86_64).
    pub irqchip_split: bool,
    /// Read-only memory slots, whose writes exit as MMIO.
    pub readonly_memory: bool,
    /// Ioeventfds on I/O ports (x86_64); MMIO ioeventfds every backend has.
    pub pio_ioeventfd: bool,
    /// The hypervisor decodes MMIO instructions itself; otherwise the backend runs
    /// `emulator` on each access (x86_64).
    pub decodes_mmio: bool,
}

impl std::fmt::Display for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "in-kernel irqchip {}, split irqchip {}, read-only memory {}, port ioeventfds {}, MMIO decoded by {}",
            yes_no(self.irqchip_kernel),
            yes_no(self.irqchip_split),
            yes_no(self.readonly_memory),
            yes_no(self.pio_ioeventfd),
            if self.decodes_mmio { "the hypervisor" } else { "berth's emulator" }
        )
    }
}

/// The ioctl requests a VM's threads make once it runs, by kind of thread: a seccomp filter
/// allows these and no other. A backend that makes none returns empty lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeIoctls {
    /// A vCPU thread: running the vCPU and what its exits need (interrupt lines, MSI
    /// routes, irqfds, ioeventfds, the registers of a shutdown report).
    pub vcpu: Vec<u64>,
    /// The VMM's other threads: interrupt lines, MSI routes, irqfds, ioeventfds.
    pub vm: Vec<u64>,
}

/// A guest memory mapping handed to the hypervisor.
#[derive(Clone, Copy, Debug)]
pub struct MemoryRegion {
    /// Slot number, unique per VM.
    pub slot: u32,
    /// Guest physical address of the first byte.
    pub guest_addr: u64,
    /// Length in bytes; a multiple of the host page size.
    pub size: u64,
    /// Host virtual address of the mapping backing the region.
    pub host_addr: u64,
    /// The guest may not write the region; writes exit as MMIO.
    pub read_only: bool,
}

/// A virtual machine: address space, interrupt controller and vCPUs.
pub trait Vm: VmArch + Send + Sync {
    /// Maps host memory into the guest physical address space.
    ///
    /// # Safety
    /// `region.host_addr .. + region.size` must be a mapping that stays valid, and is not
    /// unmapped or remapped, for as long as the VM exists.
    unsafe fn add_memory_region(&self, region: MemoryRegion) -> Result<()>;

    /// Unmaps the region added with this slot number; the guest's accesses there exit as MMIO
    /// again, and the host mapping may then go.
    fn remove_memory_region(&self, region: MemoryRegion) -> Result<()>;

    /// Creates the platform interrupt controller (on x86_64 the PIC/IOAPIC/LAPIC model and the
    /// PIT; on aarch64 the GIC, v3 or else v2). Call once, before creating vCPUs; call
    /// [`IrqChip::finalize`] once they all exist.
    fn create_irq_chip(&self, config: &IrqChipConfig) -> Result<Arc<dyn IrqChip>>;

    /// Creates vCPU `id` (0-based; also its APIC id / MPIDR affinity). On aarch64 the vCPU is
    /// also initialised: PSCI 0.2, and every vCPU but 0 powered off until PSCI CPU_ON.
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>>;

    /// Makes a guest write to `addr` that `datamatch` accepts signal `evt` without exiting to
    /// user space; other writes there exit as usual.
    fn register_ioevent(
        &self,
        evt: &EventFd,
        addr: IoEventAddress,
        datamatch: Datamatch,
    ) -> Result<()>;

    /// Undoes [`Vm::register_ioevent`].
    fn unregister_ioevent(
        &self,
        evt: &EventFd,
        addr: IoEventAddress,
        datamatch: Datamatch,
    ) -> Result<()>;
}

/// A virtual CPU. Owned by the thread that runs it.
pub trait Vcpu: VcpuArch + Send {
    /// This vCPU's id.
    fn id(&self) -> u32;

    /// Runs the vCPU until it needs the VMM. The guest's port and MMIO accesses on the way go
    /// to `io`, one call per access (see [`IoHandler`]); `run` then returns [`VcpuExit::Io`].
    fn run(&mut self, io: &dyn IoHandler) -> Result<VcpuExit>;
}

/// Interrupts a vCPU thread's `run` with a signal. Send it again until the thread reports that
/// it stopped: a signal that arrives just before the thread enters the guest is not seen, so
/// the caller repeats (the cheap, race-free alternative to sharing the run structure).
#[derive(Clone, Copy, Debug)]
pub struct Kicker {
    thread: libc::pthread_t,
}

/// Signal used to kick vCPU threads out of the guest.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

impl Kicker {
    /// A kicker for the calling thread, which must be the one that runs the vCPU.
    pub fn for_current_thread() -> Self {
        // SAFETY: pthread_self has no preconditions.
        Kicker {
            thread: unsafe { libc::pthread_self() },
        }
    }

    /// Sends the kick signal; a thread that has exited is not an error.
    pub fn kick(&self) {
        // SAFETY: pthread_kill with a valid signal number; an id of an exited thread gives ESRCH
        // at worst (threads are joined only after the last kick).
        unsafe { libc::pthread_kill(self.thread, kick_signal()) };
    }
}

/// Installs the (empty) kick signal handler for the process. Its only job is to make KVM_RUN
/// return EINTR instead of the signal killing the process.
pub fn install_kick_handler() -> Result<()> {
    extern "C" fn noop(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    vmm_sys_util::signal::register_signal_handler(kick_signal(), noop).map_err(Error::Signal)
}

/// The backends built into berth, in the order `open(None)` tries them.
const BACKENDS: &[HypervisorKind] = &[
    #[cfg(feature = "kvm")]
    HypervisorKind::Kvm,
    #[cfg(feature = "mshv")]
    HypervisorKind::Mshv,
];

/// Opens the hypervisor named by `kind`, or for `None` ("auto") the first built-in backend
/// that opens, saying which it chose and why it skipped the ones before.
pub fn open(kind: Option<HypervisorKind>) -> Result<Arc<dyn Hypervisor>> {
    let Some(kind) = kind else {
        let mut skipped = Vec::new();
        for &k in BACKENDS {
            match open_backend(k) {
                Ok(hv) => {
                    if skipped.is_empty() {
                        log::debug!("hypervisor: {k}");
                    } else {
                        log::info!("hypervisor: {k}; skipped {}", list(&skipped));
                    }
                    return Ok(hv);
                }
                Err(e) => skipped.push((k, e)),
            }
        }
        // One backend: its own error, which names its own fix.
        return match skipped.len() {
            0 => Err(Error::NoBackend),
            1 => Err(skipped.remove(0).1),
            _ => Err(Error::NoUsableBackend(list(&skipped))),
        };
    };
    open_backend(kind)
}

fn list(skipped: &[(HypervisorKind, Error)]) -> String {
    let parts: Vec<String> = skipped.iter().map(|(k, e)| format!("{k}: {e}")).collect();
    parts.join("; ")
}

fn open_backend(kind: HypervisorKind) -> Result<Arc<dyn Hypervisor>> {
    match kind {
        #[cfg(feature = "kvm")]
        HypervisorKind::Kvm => Ok(Arc::new(kvm::KvmHypervisor::new()?)),
        #[cfg(not(feature = "kvm"))]
        HypervisorKind::Kvm => Err(Error::NotBuilt(kind)),
        #[cfg(feature = "mshv")]
        HypervisorKind::Mshv => Ok(Arc::new(mshv::MshvHypervisor::new()?)),
        #[cfg(not(feature = "mshv"))]
        HypervisorKind::Mshv => Err(Error::NotBuilt(kind)),
    }
}

#[cfg(test)]
mod capabilities_tests {
    use super::Capabilities;

    #[test]
    fn capabilities_read_as_one_line() {
        let c = Capabilities {
            irqchip_kernel: false,
            irqchip_split: true,
            readonly_memory: true,
            pio_ioeventfd: false,
            decodes_mmio: false,
        };
        assert_eq!(
            c.to_string(),
            "in-kernel irqchip no, split irqchip yes, read-only memory yes, port ioeventfds no, MMIO decoded by berth's emulator"
        );
    }
}
