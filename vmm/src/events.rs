//! What the control loop hears about and how a VM ends. Its own module so that the console,
//! the vCPU threads, the platform devices and the device supervisors report without
//! importing the orchestrator.

use hypervisor::SystemEvent;

/// What the control loop hears about.
#[derive(Clone, Debug)]
pub enum VmEvent {
    System(SystemEvent),
    UserQuit,
    VcpuFailed {
        cpu: u32,
        what: String,
    },
    /// A device backend died, hung or broke the protocol; the guest cannot go on safely.
    DeviceFailed {
        device: String,
        what: String,
    },
}

/// How the VM ended, when it ended without a VMM error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    PowerOff,
    Reset,
    Crash,
    UserQuit,
    Signal(i32),
    /// A device failed (its process died, or its backend stopped answering).
    DeviceFailed {
        device: String,
        what: String,
    },
}
