//! The vCPU thread: run the guest, dispatch its port and MMIO accesses to the buses, hand everything
//! else to the control loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use devices::{log_limited, Bus};
use hypervisor::{IoHandler, Kicker, SystemEvent, Vcpu, VcpuExit};

use crate::events::VmEvent;
use crate::interrupts::Interrupts;

/// What a vCPU thread shares with the control loop.
pub struct VcpuContext {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    /// Where the guest's EOIs go in split irqchip mode.
    pub interrupts: Arc<Interrupts>,
    pub stop: Arc<AtomicBool>,
    pub events: Sender<VmEvent>,
    pub start: Instant,
}

/// Runs `vcpu` until the VM stops; reports its kicker first through `kicker_tx`.
pub fn run(mut vcpu: Box<dyn Vcpu>, ctx: VcpuContext, kicker_tx: Sender<(u32, Kicker)>) {
    let id = vcpu.id();
    let _ = kicker_tx.send((id, Kicker::for_current_thread()));
    drop(kicker_tx);
    if id == 0 {
        log::debug!(
            "first vCPU entry {} us after berth start",
            ctx.start.elapsed().as_micros()
        );
    }
    crate::filters::enter(crate::filters::Filter::Vcpu);
    let panic_at = if id == 0 {
        crate::vm::test_trigger_at("BERTH_TEST_PANIC", "vcpu")
    } else {
        None
    };
    while !ctx.stop.load(Ordering::Acquire) {
        if panic_at.is_some_and(|t| Instant::now() >= t) {
            panic!("test trigger: vCPU 0 panics");
        }
        let event = match vcpu.run(&ctx) {
            Ok(VcpuExit::Shutdown) => {
                crate::platform::log_shutdown(&*vcpu);
                VmEvent::System(SystemEvent::Reset)
            }
            Ok(exit) => match handle_exit(id, exit, &ctx.interrupts) {
                Some(ev) => ev,
                None => continue,
            },
            Err(e) => VmEvent::VcpuFailed {
                cpu: id,
                what: e.to_string(),
            },
        };
        let _ = ctx.events.send(event);
        return;
    }
}

/// The guest's port and MMIO accesses, dispatched to the buses. An access no device claims
/// reads as all ones and is logged (rate-limited: a guest can probe without end).
impl IoHandler for VcpuContext {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        if !self.pio.read(u64::from(port), data) {
            data.fill(0xff);
            log_limited!(
                log::Level::Debug,
                "unhandled port read {port:#x} ({} bytes)",
                data.len()
            );
        }
    }

    fn pio_write(&self, port: u16, data: &[u8]) {
        if !self.pio.write(u64::from(port), data) {
            log_limited!(
                log::Level::Debug,
                "unhandled port write {port:#x} ({} bytes)",
                data.len()
            );
        }
    }

    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        if !self.mmio.read(addr, data) {
            data.fill(0xff);
            log_limited!(
                log::Level::Debug,
                "unhandled MMIO read {addr:#x} ({} bytes)",
                data.len()
            );
        }
    }

    fn mmio_write(&self, addr: u64, data: &[u8]) {
        if !self.mmio.write(addr, data) {
            log_limited!(
                log::Level::Debug,
                "unhandled MMIO write {addr:#x} ({} bytes)",
                data.len()
            );
        }
    }
}

/// Handles one exit other than I/O; returns an event when the VM must stop.
fn handle_exit(cpu: u32, exit: VcpuExit, interrupts: &Interrupts) -> Option<VmEvent> {
    log::trace!("exit {exit:?}");
    match exit {
        // With the interrupt controller in the hypervisor a halt never reaches us; if a backend
        // reports one, running again waits in the hypervisor for the next interrupt.
        VcpuExit::Io | VcpuExit::Halt | VcpuExit::Interrupted => {}
        // Split irqchip mode: berth's IOAPIC may deliver a level pin again.
        VcpuExit::IoapicEoi { vector } => interrupts.end_of_interrupt(vector),
        VcpuExit::System(ev) => return Some(VmEvent::System(ev)),
        VcpuExit::Shutdown => return Some(VmEvent::System(SystemEvent::Reset)),
        VcpuExit::InternalError { code, what } => {
            return Some(VmEvent::VcpuFailed {
                cpu,
                what: format!("the hypervisor stopped the guest: {what} (internal error {code})"),
            })
        }
        VcpuExit::FailEntry { reason } => {
            return Some(VmEvent::VcpuFailed {
                cpu,
                what: format!("the hypervisor refused to enter the guest (reason {reason:#x})"),
            })
        }
        VcpuExit::Unhandled { what } => {
            return Some(VmEvent::VcpuFailed {
                cpu,
                what: format!("unexpected exit: {what}"),
            })
        }
    }
    None
}
