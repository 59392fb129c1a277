//! A minimal i8042 keyboard controller: enough for Linux to find it quickly and for a
//! `reboot=k` reset (command 0xFE). Written here rather than taken from vm-superio because
//! vm-superio's only handles the reset command, and Linux's probe then spins on ~0.5 s of
//! timeouts waiting for replies to controller commands.

use std::collections::VecDeque;

use vm_superio::Trigger;

use crate::BusDevice;

// Offsets from port 0x60.
const DATA: u64 = 0;
const COMMAND: u64 = 4;

const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM: u8 = 0x04;
const STATUS_COMMAND: u8 = 0x08;

const CTR_KBD_INT: u8 = 0x01;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_RESET_CPU: u8 = 0xfe;

const KBD_RESET: u8 = 0xff;
const KBD_GET_ID: u8 = 0xf2;
const KBD_ACK: u8 = 0xfa;
const KBD_SELF_TEST_OK: u8 = 0xaa;

/// Output buffer bound: the guest cannot grow it by sending commands without reading.
const OUTPUT_MAX: usize = 16;

/// The controller. `reset` fires on command 0xFE; `irq` (IRQ 1) when the keyboard has data.
pub struct I8042<R: Trigger, I: Trigger> {
    reset: R,
    irq: I,
    ctr: u8,
    status: u8,
    pending_cmd: Option<u8>,
    output: VecDeque<u8>,
}

impl<R: Trigger, I: Trigger> I8042<R, I> {
    pub fn new(reset: R, irq: I) -> Self {
        I8042 {
            reset,
            irq,
            ctr: CTR_KBD_INT,
            status: STATUS_SYSTEM,
            pending_cmd: None,
            output: VecDeque::new(),
        }
    }

    fn push(&mut self, byte: u8, from_keyboard: bool) {
        if self.output.len() < OUTPUT_MAX {
            self.output.push_back(byte);
        }
        if from_keyboard && self.ctr & CTR_KBD_INT != 0 {
            let _ = self.irq.trigger();
        }
    }

    fn command(&mut self, cmd: u8) {
        self.status |= STATUS_COMMAND;
        match cmd {
            CMD_READ_CTR => self.push(self.ctr, false),
            CMD_WRITE_CTR | CMD_WRITE_OUTPUT_PORT => self.pending_cmd = Some(cmd),
            CMD_SELF_TEST => self.push(0x55, false),
            CMD_KBD_TEST => self.push(0x00, false),
            CMD_READ_OUTPUT_PORT => self.push(0x01, false),
            CMD_KBD_DISABLE | CMD_KBD_ENABLE | CMD_AUX_DISABLE | CMD_AUX_ENABLE => {}
            CMD_RESET_CPU => {
                log::debug!("i8042: reset command");
                if let Err(e) = self.reset.trigger() {
                    log::error!("i8042: signalling the reset failed: {e:?}");
                }
            }
            _ => {}
        }
    }

    fn data(&mut self, byte: u8) {
        self.status &= !STATUS_COMMAND;
        match self.pending_cmd.take() {
            Some(CMD_WRITE_CTR) => self.ctr = byte,
            Some(_) => {}
            // A byte for the keyboard itself: answer like a plain AT keyboard.
            None => match byte {
                KBD_RESET => {
                    self.push(KBD_ACK, true);
                    self.push(KBD_SELF_TEST_OK, true);
                }
                KBD_GET_ID => {
                    self.push(KBD_ACK, true);
                    self.push(0xab, true);
                    self.push(0x83, true);
                }
                _ => self.push(KBD_ACK, true),
            },
        }
    }
}

impl<R: Trigger + Send, I: Trigger + Send> BusDevice for I8042<R, I> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = match offset {
            DATA => self.output.pop_front().unwrap_or(0),
            COMMAND => {
                let full = if self.output.is_empty() {
                    0
                } else {
                    STATUS_OUTPUT_FULL
                };
                self.status | full
            }
            _ => 0,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            DATA => self.data(data[0]),
            COMMAND => self.command(data[0]),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::CountingTrigger as Count;

    fn read(d: &mut I8042<Count, Count>, off: u64) -> u8 {
        let mut b = [0u8];
        BusDevice::read(d, off, &mut b);
        b[0]
    }

    fn dev() -> (I8042<Count, Count>, Count, Count) {
        let (r, i) = (Count::default(), Count::default());
        (I8042::new(r.clone(), i.clone()), r, i)
    }

    #[test]
    fn reset_command_fires_the_reset_trigger() {
        let (mut d, reset, _) = dev();
        d.command(CMD_RESET_CPU);
        assert_eq!(reset.count(), 1);
    }

    #[test]
    fn controller_commands_answer_like_linux_expects() {
        let (mut d, _, _) = dev();
        d.command(CMD_SELF_TEST);
        assert_eq!(read(&mut d, COMMAND) & STATUS_OUTPUT_FULL, 1);
        assert_eq!(read(&mut d, DATA), 0x55);
        assert_eq!(read(&mut d, COMMAND) & STATUS_OUTPUT_FULL, 0);
        d.command(CMD_WRITE_CTR);
        d.data(0x47);
        d.command(CMD_READ_CTR);
        assert_eq!(read(&mut d, DATA), 0x47);
    }

    #[test]
    fn keyboard_bytes_are_acked_with_an_interrupt_and_the_buffer_is_bounded() {
        let (mut d, _, irq) = dev();
        d.data(KBD_GET_ID);
        assert_eq!(irq.count(), 3);
        assert_eq!(
            [read(&mut d, DATA), read(&mut d, DATA), read(&mut d, DATA)],
            [0xfa, 0xab, 0x83]
        );
        for _ in 0..1000 {
            d.data(0x00);
        }
        assert_eq!(d.output.len(), OUTPUT_MAX);
    }

    #[test]
    fn empty_buffer_reads_zero() {
        let (mut d, _, _) = dev();
        assert_eq!(read(&mut d, DATA), 0);
    }
}
