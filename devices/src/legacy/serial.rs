//! 16550A UART (vm-superio's state machine) on the bus, with input flow control.

use std::io::Write;

use vm_superio::serial::SerialEvents;

use crate::{log_limited, BusDevice, EventFd, EventFdTrigger};

/// Tells the input feeder that the guest drained the receive FIFO.
pub struct InputEvents {
    drained: Option<EventFd>,
}

impl SerialEvents for InputEvents {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        if let Some(e) = &self.drained {
            let _ = e.write(1);
        }
    }
}

/// A UART whose output goes to `out` and whose interrupt is an event fd.
pub struct Serial {
    uart: vm_superio::Serial<EventFdTrigger, InputEvents, Box<dyn Write + Send>>,
}

impl Serial {
    /// `drained` (optional) is signalled whenever the guest empties the receive FIFO.
    pub fn new(irq: EventFdTrigger, out: Box<dyn Write + Send>, drained: Option<EventFd>) -> Self {
        Serial {
            uart: vm_superio::Serial::with_events(irq, InputEvents { drained }, out),
        }
    }

    /// Queues host input for the guest; returns how many bytes fit in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(n) => n,
            Err(vm_superio::serial::Error::FullFifo) => 0,
            Err(e) => {
                log_limited!(log::Level::Warn, "serial input: {e}");
                0
            }
        }
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 {
            log_limited!(
                log::Level::Debug,
                "serial: {}-byte read ignored",
                data.len()
            );
            data.fill(0xff);
            return;
        }
        data[0] = self.uart.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 {
            log_limited!(
                log::Level::Debug,
                "serial: {}-byte write ignored",
                data.len()
            );
            return;
        }
        if let Err(e) = self.uart.write(offset as u8, data[0]) {
            log_limited!(log::Level::Warn, "serial output: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const IER: u64 = 1;
    const LSR: u64 = 5;

    fn serial() -> (Serial, Shared, EventFd, EventFd) {
        let out = Shared::default();
        let irq = EventFd::new(libc_nonblock()).unwrap();
        let drained = EventFd::new(libc_nonblock()).unwrap();
        let s = Serial::new(
            EventFdTrigger::new(irq.try_clone().unwrap()),
            Box::new(out.clone()),
            Some(drained.try_clone().unwrap()),
        );
        (s, out, irq, drained)
    }

    fn libc_nonblock() -> i32 {
        vmm_sys_util::eventfd::EFD_NONBLOCK
    }

    #[test]
    fn transmits_bytes_to_the_output() {
        let (mut s, out, _, _) = serial();
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn input_raises_the_interrupt_and_reads_back() {
        let (mut s, _, irq, drained) = serial();
        s.write(IER, &[0x01]); // receive-data interrupt on
        assert_eq!(s.enqueue_input(b"ab"), 2);
        assert_eq!(irq.read().unwrap(), 1);
        let mut d = [0u8];
        s.read(LSR, &mut d);
        assert_eq!(d[0] & 1, 1, "data ready");
        s.read(0, &mut d);
        assert_eq!(d[0], b'a');
        s.read(0, &mut d);
        assert_eq!(d[0], b'b');
        assert_eq!(drained.read().unwrap(), 1, "drain signalled");
    }

    #[test]
    fn full_fifo_accepts_nothing_and_wide_accesses_are_ignored() {
        let (mut s, out, _, _) = serial();
        let big = [b'x'; 200];
        let n = s.enqueue_input(&big);
        assert!(n > 0 && n < 200);
        assert_eq!(s.enqueue_input(b"y"), 0);
        let mut d = [0u8; 4];
        s.read(0, &mut d);
        assert_eq!(d, [0xff; 4]);
        s.write(0, &[1, 2]);
        assert!(out.0.lock().unwrap().is_empty());
    }
}
