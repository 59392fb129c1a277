//! The kit's I/O handler: it records every access and answers reads with a known pattern.

use std::cell::RefCell;

use crate::IoHandler;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    PioRead,
    PioWrite,
    MmioRead,
    MmioWrite,
}

/// One access as the backend handed it over.
#[derive(Clone, PartialEq, Eq)]
pub struct Access {
    pub kind: AccessKind,
    pub addr: u64,
    pub data: Vec<u8>,
}

/// Addresses in hex, as people read them in failure messages.
impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {:#x} {:x?}", self.kind, self.addr, self.data)
    }
}

impl Access {
    pub fn new(kind: AccessKind, addr: u64, data: &[u8]) -> Self {
        Access {
            kind,
            addr,
            data: data.to_vec(),
        }
    }
}

/// Port the kit's x86_64 guests write to when they are done.
pub const DONE_PORT: u16 = 0x5ff;
/// Address the kit's aarch64 guests (no ports) write to when they are done.
pub const DONE_MMIO: u64 = 0x0fff_f000;

/// Records accesses; read number `n` (counting from 0, over all reads) answers bytes
/// `0x10*n + 1, 0x10*n + 2, ...`, so each read's data is distinct and ordered.
#[derive(Default)]
pub struct Recorder {
    log: RefCell<Vec<Access>>,
    reads: RefCell<u8>,
}

impl Recorder {
    /// The answer read number `n` of `len` bytes gets.
    pub fn answer(n: u8, len: usize) -> Vec<u8> {
        (0..len as u8)
            .map(|i| n.wrapping_mul(0x10).wrapping_add(i + 1))
            .collect()
    }

    /// Every access so far except the final write to [`DONE_PORT`] or [`DONE_MMIO`].
    pub fn accesses(&self) -> Vec<Access> {
        let log = self.log.borrow();
        let end = log.len() - usize::from(self.done());
        log[..end].to_vec()
    }

    /// The guest wrote to [`DONE_PORT`] or [`DONE_MMIO`] last.
    pub fn done(&self) -> bool {
        self.log.borrow().last().is_some_and(|a| {
            (a.kind == AccessKind::PioWrite && a.addr == u64::from(DONE_PORT))
                || (a.kind == AccessKind::MmioWrite && a.addr == DONE_MMIO)
        })
    }

    /// Writes to `port` so far.
    #[cfg(target_arch = "x86_64")]
    pub fn writes_to(&self, port: u16) -> usize {
        self.log
            .borrow()
            .iter()
            .filter(|a| a.kind == AccessKind::PioWrite && a.addr == u64::from(port))
            .count()
    }

    fn read(&self, kind: AccessKind, addr: u64, data: &mut [u8]) {
        let mut n = self.reads.borrow_mut();
        data.copy_from_slice(&Self::answer(*n, data.len()));
        *n = n.wrapping_add(1);
        self.log.borrow_mut().push(Access::new(kind, addr, data));
    }

    fn write(&self, kind: AccessKind, addr: u64, data: &[u8]) {
        self.log.borrow_mut().push(Access::new(kind, addr, data));
    }
}

impl IoHandler for Recorder {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        self.read(AccessKind::PioRead, u64::from(port), data)
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        self.write(AccessKind::PioWrite, u64::from(port), data)
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        self.read(AccessKind::MmioRead, addr, data)
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.write(AccessKind::MmioWrite, addr, data)
    }
}
