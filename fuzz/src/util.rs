//! What the targets share: files made from fuzz bytes, small guest memories.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::FromRawFd;

use vm_memory::GuestAddress;

pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// An anonymous in-memory file holding `bytes`, positioned at the start (what a loader gets
/// from `File::open`, without touching the disk).
pub fn memfd(bytes: &[u8]) -> File {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"berth-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a new descriptor owned by nothing else.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(bytes).expect("memfd write");
    f.seek(SeekFrom::Start(0)).expect("memfd seek");
    f
}

/// A memfd of `len` bytes that reads as zeros without holding them (for sizes, not contents).
pub fn sparse(len: u64) -> File {
    let f = memfd(&[]);
    f.set_len(len).expect("memfd set_len");
    f
}

/// Guest RAM of `len` bytes from address 0, anonymous.
pub fn memory(len: usize) -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), len)]).expect("guest memory")
}

/// Guest RAM of `len` bytes from address 0 backed by a memfd (what vhost-user shares).
pub fn shared_memory(len: usize) -> GuestMemory {
    let f = sparse(len as u64);
    let region = vm_memory::FileOffset::new(f, 0);
    GuestMemory::from_ranges_with_files(&[(GuestAddress(0), len, Some(region))])
        .expect("guest memory")
}

/// A counter behind a `Trigger`, for interrupt lines and system events; clones share it.
#[derive(Clone, Default)]
pub struct Count(pub std::sync::Arc<std::sync::atomic::AtomicU64>);

impl devices::Trigger for Count {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// Reads fuzz bytes as little-endian fields; every read fails once the bytes run out. The
/// bus targets use it rather than `arbitrary` so that their seeds (what Linux does at boot)
/// can be written down plainly, field by field ([`crate::seeds`]).
pub struct Fields<'a>(pub &'a [u8]);

impl<'a> Fields<'a> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }

    /// A length byte (0 to 8: what a vCPU exit carries, and 0) and that many bytes.
    pub fn data(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()? % 9);
        self.take(n)
    }
}

/// Writes what [`Fields`] reads, for seeds.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn data(&mut self, d: &[u8]) -> &mut Self {
        assert!(d.len() <= 8);
        self.u8(d.len() as u8);
        self.0.extend_from_slice(d);
        self
    }
}
