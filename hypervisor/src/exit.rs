/// Why a vCPU returned to the VMM. Port and MMIO accesses do not appear here: the backend hands
/// each one to the [`crate::IoHandler`] given to `run` (so a backend that must decode the
/// instruction, or split a string instruction, makes as many calls as the guest made accesses)
/// and returns [`VcpuExit::Io`].
#[derive(Debug)]
pub enum VcpuExit {
    /// The guest's port or MMIO accesses were handed to the I/O handler; run again.
    Io,
    /// The vCPU halted and the interrupt controller is not in the hypervisor.
    Halt,
    /// The guest asked the platform to power off, reset or reported a crash.
    System(SystemEvent),
    /// The vCPU shut down on its own (x86: a triple fault); platforms treat it as a reset.
    Shutdown,
    /// The guest ended a level-triggered interrupt with this vector; only with
    /// [`crate::arch::IrqChipMode::Split`] (x86_64), for the VMM's IOAPIC.
    IoapicEoi { vector: u8 },
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

/// The VMM's side of a vCPU's port and MMIO accesses. The backend calls it once per access, in
/// the guest's order, with the access's own width: a `rep outsw` of 5 is five 2-byte writes.
/// An access nobody claims is the handler's business (reads answer all ones, by convention).
pub trait IoHandler {
    /// A port read of `data.len()` bytes; fill `data`.
    fn pio_read(&self, port: u16, data: &mut [u8]);
    /// A port write.
    fn pio_write(&self, port: u16, data: &[u8]);
    /// An MMIO read of `data.len()` bytes; fill `data`.
    fn mmio_read(&self, addr: u64, data: &mut [u8]);
    /// An MMIO write.
    fn mmio_write(&self, addr: u64, data: &[u8]);
}
