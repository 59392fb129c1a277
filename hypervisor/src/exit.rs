/// Why a vCPU returned to the VMM. Port and MMIO data borrow the vCPU's exit buffer: for reads,
/// fill `data` before the next `run`.
#[derive(Debug)]
pub enum VcpuExit<'a> {
    /// Port read of `data.len()` bytes.
    IoIn { port: u16, data: &'a mut [u8] },
    /// Port write.
    IoOut { port: u16, data: &'a [u8] },
    /// MMIO read of `data.len()` bytes.
    MmioRead { addr: u64, data: &'a mut [u8] },
    /// MMIO write.
    MmioWrite { addr: u64, data: &'a [u8] },
    /// The vCPU halted and the interrupt controller is not in the hypervisor.
    Halt,
    /// The guest asked the platform to power off, reset or reported a crash.
    System(SystemEvent),
    /// The vCPU shut down on its own (x86: a triple fault); platforms treat it as a reset.
    Shutdown,
    /// Another thread kicked the vCPU (signal); check for requests and run again.
    Interrupted,
    /// The hypervisor could not run the guest any further: `code` is the backend's reason
    /// (KVM's suberror), `what` says what it means.
    InternalError { code: u32, what: &'static str },
    /// The hypervisor refused to enter the guest (`reason` is backend-specific).
    FailEntry { reason: u64 },
    /// An exit the VMM does not handle (`what` names it, backend-specific).
    Unhandled { what: String },
}

/// Platform-level events a guest can cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemEvent {
    /// Power off (ACPI S5, PSCI SYSTEM_OFF).
    PowerOff,
    /// Reset (keyboard-controller reset, ACPI reset register, PSCI SYSTEM_RESET).
    Reset,
    /// The guest reported a crash (pvpanic, PSCI crash event).
    Crash,
}
