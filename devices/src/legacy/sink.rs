//! Ports Linux probes that berth does not emulate (other COM ports, VGA, DMA pages, POST
//! codes...): reads float high, writes vanish, nothing is logged.

use crate::BusDevice;

#[derive(Debug, Default)]
pub struct Sink;

impl BusDevice for Sink {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

/// x86 port ranges `(base, len)` Linux touches while probing for legacy hardware.
pub const X86_PROBED_PORTS: &[(u64, u64)] = &[
    (0x80, 0x10),  // POST code and DMA page registers
    (0x2e8, 0x8),  // COM4
    (0x2f8, 0x8),  // COM2
    (0x3c0, 0x20), // VGA
    (0x3e8, 0x8),  // COM3
    (0x3f0, 0x8),  // floppy controller
];
