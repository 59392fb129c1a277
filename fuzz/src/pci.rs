//! `pci`: the root complex as the guest reaches it: the 0xcf8/0xcfc port pair, the ECAM
//! window and the 64-bit BAR window, over the host bridge and one virtio device (so the root's
//! routing, every configuration header, capability lists, BAR sizing and relocation and MSI-X
//! all run). Accesses of any width and alignment, to any bus, device and function.
//!
//! Input: the device's shape (as in `virtio_pci`), then the accesses ([`run`]).

use std::sync::{Arc, Mutex};

use devices::bus::BusAccess;
use devices::pci::{PciConfigIo, PciConfigMmio, PciMmio, PciRoot};
use devices::BusDevice;

use crate::util::Fields;
use crate::virtio_pci::{transport, Event, Shape, BAR_ADDR};

/// The BAR window starts below the device's BAR, so moves and sizing probes land inside it.
pub const WINDOW: u64 = BAR_ADDR - 0x1_0000;

/// Operation codes (the first byte of each, modulo their number): reads and writes of the
/// 0xcf8..0xd00 ports (an offset byte, below 8), the ECAM window (a `u32` offset: bus,
/// device, function, register) and the BAR window (a `u32` offset from [`WINDOW`]), each with
/// its data (a length byte, then the bytes; a read uses only the length); or an event, as in
/// `virtio_pci`.
pub const PORT_READ: u8 = 0;
pub const PORT_WRITE: u8 = 1;
pub const ECAM_READ: u8 = 2;
pub const ECAM_WRITE: u8 = 3;
pub const BAR_READ: u8 = 4;
pub const BAR_WRITE: u8 = 5;
pub const EVENT: u8 = 6;
const OPS: u8 = 7;

/// Input: the device's shape (as in `virtio_pci`), then operations.
pub fn run(data: &[u8]) {
    let mut f = Fields(data);
    let Some(shape) = Shape::read(&mut f) else {
        return;
    };
    let Some((dev, seen)) = transport(shape) else {
        return;
    };
    let mut root = PciRoot::new();
    if root.add_device(Arc::new(Mutex::new(dev))).is_err() {
        return;
    }
    let root = Arc::new(root);
    let mut ports = PciConfigIo::new(root.clone());
    let ecam = PciConfigMmio::new(root.clone());
    let bars = PciMmio::new(root, WINDOW);
    let mut buf = [0u8; 8];
    while !f.is_empty() {
        let Some(op) = f.u8() else { break };
        let op = op % OPS;
        if op == EVENT {
            let Some(e) = Event::read(&mut f) else { break };
            seen.apply(e);
            continue;
        }
        let offset = match op {
            PORT_READ | PORT_WRITE => f.u8().map(|o| u64::from(o % 8)),
            ECAM_READ | ECAM_WRITE => f.u32().map(|o| u64::from(o % (256 << 20))),
            _ => f.u32().map(u64::from),
        };
        let (Some(offset), Some(data)) = (offset, f.data()) else {
            break;
        };
        let read = &mut buf[..data.len()];
        match op {
            PORT_READ => ports.read(offset, read),
            PORT_WRITE => ports.write(offset, data),
            ECAM_READ => ecam.read(offset, read),
            ECAM_WRITE => ecam.write(offset, data),
            BAR_READ => bars.read(offset, read),
            _ => bars.write(offset, data),
        }
    }
    seen.clear();
}
