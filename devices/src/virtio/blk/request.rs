//! One virtio-blk request: parse a descriptor chain defensively, then execute it against the
//! image with data moving straight between the file and guest memory.

use std::io;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use thiserror::Error;
use virtio_bindings::virtio_blk::*;
use virtio_queue::DescriptorChain;
use vm_memory::bitmap::Bitmap;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::image::{DiskImage, SECTOR_SIZE};
use crate::log_limited;
use crate::virtio::GuestMemory;

/// Longest chain accepted; a guest sends at most seg_max + 2, anything longer is hostile.
pub const MAX_DESCRIPTORS: usize = 1024;
/// Segments per discard / write-zeroes request, as advertised in the config space.
pub const MAX_DISCARD_SEG: u32 = 1;
const HEADER_LEN: u64 = 16;
/// A power of two, like SECTOR_SIZE, so `& (x - 1)` tests multiples (MSRV 1.85).
const DISCARD_SEG_LEN: u64 = 16;
/// Most sectors one discard or write-zeroes segment may cover (advertised as
/// max_discard_sectors and max_write_zeroes_sectors, and enforced): 32 MiB, so that a request
/// the file system cannot punch or zero costs at most 512 writes of 64 KiB before the worker
/// serves the next. Linux splits bigger ranges into requests of this size.
pub const MAX_ZERO_SECTORS: u32 = 65536;
/// preadv/pwritev take at most this many iovecs per call.
const IOV_MAX: usize = 1024;

/// Why a request failed; decides the status byte and the log line.
#[derive(Debug, Error)]
pub enum RequestError {
    #[error("descriptor chain longer than {MAX_DESCRIPTORS}")]
    TooLong,
    #[error(
        "descriptor chain ends early (loop, bad next index, unreadable descriptor or over 4 GiB)"
    )]
    Truncated,
    #[error("descriptor chain has no device-writable status byte")]
    NoStatus,
    #[error("device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
    #[error("descriptor {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("request header shorter than {HEADER_LEN} bytes")]
    ShortHeader,
    #[error("request type {0} with data in the wrong direction")]
    WrongDirection(u32),
    #[error("data length {0} is not a whole number of sectors")]
    Unaligned(u64),
    #[error("discard/write-zeroes data length {0} is not 1..={MAX_DISCARD_SEG} segments")]
    BadSegments(u64),
    #[error("discard/write-zeroes of {0} sectors, more than the {MAX_ZERO_SECTORS} advertised")]
    TooManySectors(u32),
    #[error("sectors {sector}+{len} bytes are past the end of the disk")]
    OutOfRange { sector: u64, len: u64 },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("unsupported flags {0:#x}")]
    UnsupportedFlags(u32),
    #[error("guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

impl RequestError {
    fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_)
            | RequestError::UnsupportedFlags(_)
            | RequestError::TooManySectors(_) => VIRTIO_BLK_S_UNSUPP as u8,
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// A guest buffer, already checked to lie inside guest memory.
#[derive(Clone, Copy, Debug)]
struct Seg {
    addr: GuestAddress,
    len: u64,
}

/// What the device needs to run requests; the worker owns one.
pub struct Executor {
    pub disk: std::sync::Arc<DiskImage>,
    pub read_only: bool,
    pub id: [u8; VIRTIO_BLK_ID_BYTES as usize],
}

/// The parsed chain: readable bytes (header, then data for writes) and writable bytes (data
/// for reads, then the status byte).
struct Chain {
    readable: Vec<Seg>,
    writable: Vec<Seg>,
}

impl Executor {
    /// Runs the request in `chain`; returns the used length (bytes written to the guest), or
    /// 0 when the chain has no status byte to report through.
    pub fn process<M>(&self, mem: &GuestMemory, chain: DescriptorChain<M>) -> u32
    where
        M: Deref<Target = GuestMemory>,
    {
        let (parsed, status) = match parse(mem, chain) {
            Ok(c) => c,
            Err((e, status)) => {
                log_limited!(log::Level::Warn, "virtio-blk: malformed request: {e}");
                return status.map_or(0, |a| write_status(mem, a, e.status()));
            }
        };
        match self.execute(mem, &parsed) {
            Ok(written) => write_status(mem, status, VIRTIO_BLK_S_OK as u8) + written as u32,
            Err(e) => {
                match &e {
                    RequestError::Io(_) | RequestError::Memory(_) => {
                        log_limited!(
                            log::Level::Warn,
                            "virtio-blk {}: {e}",
                            self.disk.path().display()
                        )
                    }
                    _ => log_limited!(log::Level::Debug, "virtio-blk: request failed: {e}"),
                }
                write_status(mem, status, e.status())
            }
        }
    }

    /// Returns the number of data bytes written to the guest.
    fn execute(&self, mem: &GuestMemory, c: &Chain) -> Result<u64, RequestError> {
        let mut header = [0u8; HEADER_LEN as usize];
        if read_bytes(mem, &c.readable, 0, &mut header)? < header.len() {
            return Err(RequestError::ShortHeader);
        }
        let kind = u32::from_le_bytes(header[0..4].try_into().unwrap());
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap());
        let out = sub_range(&c.readable, HEADER_LEN, total(&c.readable) - HEADER_LEN);
        let inp = sub_range(&c.writable, 0, total(&c.writable) - 1);
        let (out_len, in_len) = (total(&out), total(&inp));
        let writes = matches!(
            kind,
            VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES
        );
        let reads = matches!(kind, VIRTIO_BLK_T_IN | VIRTIO_BLK_T_GET_ID);
        if (writes && in_len != 0) || (reads && out_len != 0) {
            return Err(RequestError::WrongDirection(kind));
        }
        if writes && self.read_only {
            return Err(RequestError::ReadOnly);
        }
        let fd = self.disk.file().as_raw_fd();
        match kind {
            VIRTIO_BLK_T_IN => {
                let off = self.range(sector, in_len)?;
                rw_all(mem, &inp, fd, off, Dir::Read)?;
                Ok(in_len)
            }
            VIRTIO_BLK_T_OUT => {
                let off = self.range(sector, out_len)?;
                rw_all(mem, &out, fd, off, Dir::Write)?;
                Ok(0)
            }
            VIRTIO_BLK_T_FLUSH => {
                if !self.read_only {
                    self.disk.file().sync_data()?;
                }
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = (in_len as usize).min(self.id.len());
                write_bytes(mem, &inp, &self.id[..n])?;
                Ok(n as u64)
            }
            VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
                if out_len == 0
                    || out_len & (DISCARD_SEG_LEN - 1) != 0
                    || out_len / DISCARD_SEG_LEN > u64::from(MAX_DISCARD_SEG)
                {
                    return Err(RequestError::BadSegments(out_len));
                }
                for i in 0..out_len / DISCARD_SEG_LEN {
                    let mut seg = [0u8; DISCARD_SEG_LEN as usize];
                    read_bytes(mem, &out, i * DISCARD_SEG_LEN, &mut seg)?;
                    let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap());
                    let sectors = u32::from_le_bytes(seg[8..12].try_into().unwrap());
                    let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap());
                    if sectors > MAX_ZERO_SECTORS {
                        return Err(RequestError::TooManySectors(sectors));
                    }
                    let len = u64::from(sectors) * SECTOR_SIZE;
                    let off = self.range(sector, len)?;
                    self.zero(kind, off, len, flags)?;
                }
                Ok(0)
            }
            other => Err(RequestError::Unsupported(other)),
        }
    }

    /// The byte offset of `len` bytes at `sector`, if they lie inside the disk.
    fn range(&self, sector: u64, len: u64) -> Result<u64, RequestError> {
        let err = || RequestError::OutOfRange { sector, len };
        if len & (SECTOR_SIZE - 1) != 0 {
            return Err(RequestError::Unaligned(len));
        }
        let off = sector.checked_mul(SECTOR_SIZE).ok_or_else(err)?;
        let end = off.checked_add(len).ok_or_else(err)?;
        if end > self.disk.size() {
            return Err(err());
        }
        Ok(off)
    }

    fn zero(&self, kind: u32, off: u64, len: u64, flags: u32) -> Result<(), RequestError> {
        let unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
        // Reserved flags, and unmap on a discard, must be refused (virtio 1.2, 5.2.6.2).
        if flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0
            || (kind == VIRTIO_BLK_T_DISCARD && unmap)
        {
            return Err(RequestError::UnsupportedFlags(flags));
        }
        if len == 0 {
            return Ok(());
        }
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        if kind == VIRTIO_BLK_T_DISCARD {
            return match self.fallocate(punch, off, len) {
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    Err(RequestError::Unsupported(kind))
                }
                r => Ok(r?),
            };
        }
        // Write zeroes: a hole when the driver allows unmapping, else allocated zeroes;
        // fall back step by step where the file system cannot.
        if unmap && self.fallocate(punch, off, len).is_ok() {
            return Ok(());
        }
        let zero_range = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
        if self.fallocate(zero_range, off, len).is_ok() {
            return Ok(());
        }
        self.write_zeroes(off, len)
    }

    fn fallocate(&self, mode: libc::c_int, off: u64, len: u64) -> io::Result<()> {
        // SAFETY: fallocate only reads its integer arguments; the file outlives the call.
        // `range` bounded off + len by the disk size, which fits an off64_t.
        let ret = unsafe {
            libc::fallocate64(
                self.disk.file().as_raw_fd(),
                mode,
                off as libc::off64_t,
                len as libc::off64_t,
            )
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn write_zeroes(&self, mut off: u64, len: u64) -> Result<(), RequestError> {
        static ZEROES: [u8; 64 << 10] = [0; 64 << 10];
        let end = off + len;
        while off < end {
            let n = (end - off).min(ZEROES.len() as u64) as usize;
            self.disk.file().write_all_at(&ZEROES[..n], off)?;
            off += n as u64;
        }
        Ok(())
    }
}

/// Walks the chain, checking everything the guest controls; returns it with the address of
/// its status byte. On error, also returns where the status byte is, if the chain has one.
fn parse<M>(
    mem: &GuestMemory,
    chain: DescriptorChain<M>,
) -> Result<(Chain, GuestAddress), (RequestError, Option<GuestAddress>)>
where
    M: Deref<Target = GuestMemory>,
{
    let mut c = Chain {
        readable: Vec::with_capacity(2),
        writable: Vec::with_capacity(4),
    };
    let mut err = None;
    let mut count = 0;
    let mut last_has_next = false;
    for desc in chain {
        count += 1;
        if count > MAX_DESCRIPTORS {
            return Err((RequestError::TooLong, None));
        }
        last_has_next = desc.has_next();
        let seg = Seg {
            addr: desc.addr(),
            len: u64::from(desc.len()),
        };
        if seg.len == 0 {
            continue;
        }
        if !mem.check_range(seg.addr, seg.len as usize) {
            err.get_or_insert(RequestError::OutsideMemory {
                addr: seg.addr.raw_value(),
                len: desc.len(),
            });
        }
        if desc.is_write_only() {
            c.writable.push(seg);
        } else {
            if !c.writable.is_empty() {
                err.get_or_insert(RequestError::ReadableAfterWritable);
            }
            c.readable.push(seg);
        }
    }
    // The iterator stops silently on loops, bad indices and chains over 4 GiB; a last
    // descriptor that still points on means we never saw the real end (or any status).
    if count == 0 || last_has_next {
        return Err((RequestError::Truncated, None));
    }
    // The status byte: the last byte of the last device-writable descriptor. A descriptor
    // that runs past the end of the address space has none (an unchecked add would wrap to
    // a low address, perhaps in guest RAM).
    #[cfg(not(berth_planted_bug))]
    let status = c
        .writable
        .last()
        .and_then(|s| s.addr.checked_add(s.len - 1))
        .filter(|a| mem.check_range(*a, 1));
    // The bug this code once had, put back only to show the fuzzer finds it
    // (scripts/fuzz.sh planted; docs/security.md). Never built otherwise.
    #[cfg(berth_planted_bug)]
    let status = c
        .writable
        .last()
        .map(|s| GuestAddress(s.addr.0 + (s.len - 1)));
    match (err, status) {
        (_, None) => Err((RequestError::NoStatus, None)),
        (Some(e), status) => Err((e, status)),
        (None, Some(status)) => Ok((c, status)),
    }
}

fn total(segs: &[Seg]) -> u64 {
    segs.iter().map(|s| s.len).sum()
}

/// The `len` bytes of `segs` starting `skip` bytes in (both clamped to what is there).
fn sub_range(segs: &[Seg], mut skip: u64, mut len: u64) -> Vec<Seg> {
    let mut out = Vec::with_capacity(segs.len());
    for s in segs {
        if len == 0 {
            break;
        }
        if skip >= s.len {
            skip -= s.len;
            continue;
        }
        let n = (s.len - skip).min(len);
        out.push(Seg {
            addr: s.addr.unchecked_add(skip),
            len: n,
        });
        skip = 0;
        len -= n;
    }
    out
}

fn read_bytes(
    mem: &GuestMemory,
    segs: &[Seg],
    skip: u64,
    buf: &mut [u8],
) -> Result<usize, RequestError> {
    let mut done = 0;
    for s in sub_range(segs, skip, buf.len() as u64) {
        mem.read_slice(&mut buf[done..done + s.len as usize], s.addr)?;
        done += s.len as usize;
    }
    Ok(done)
}

fn write_bytes(mem: &GuestMemory, segs: &[Seg], buf: &[u8]) -> Result<(), RequestError> {
    let mut done = 0;
    for s in sub_range(segs, 0, buf.len() as u64) {
        mem.write_slice(&buf[done..done + s.len as usize], s.addr)?;
        done += s.len as usize;
    }
    Ok(())
}

/// Writes the status byte; returns the bytes written (1, or 0 if that failed).
fn write_status(mem: &GuestMemory, addr: GuestAddress, status: u8) -> u32 {
    match mem.write_obj(status, addr) {
        Ok(()) => 1,
        Err(e) => {
            log_limited!(log::Level::Warn, "virtio-blk: cannot write status: {e}");
            0
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    /// File to guest memory.
    Read,
    /// Guest memory to file.
    Write,
}

/// Moves all of `segs` between guest memory and the file at `off` with preadv/pwritev on the
/// host addresses of the guest buffers: one system call for a whole request, no bounce copy.
fn rw_all(
    mem: &GuestMemory,
    segs: &[Seg],
    fd: libc::c_int,
    mut off: u64,
    dir: Dir,
) -> Result<(), RequestError> {
    // Guards keep the host mappings valid while the kernel uses the iovecs.
    let mut guards = Vec::with_capacity(segs.len());
    let mut iovs = Vec::with_capacity(segs.len());
    for s in segs {
        for slice in GuestMemoryBackend::get_slices(mem, s.addr, s.len as usize) {
            let slice = slice?;
            if dir == Dir::Read {
                slice.bitmap().mark_dirty(0, slice.len());
            }
            let g = slice.ptr_guard_mut();
            iovs.push(libc::iovec {
                iov_base: g.as_ptr().cast(),
                iov_len: g.len(),
            });
            guards.push(g);
        }
    }
    let mut iovs = &mut iovs[..];
    while !iovs.is_empty() {
        let cnt = iovs.len().min(IOV_MAX) as libc::c_int;
        // SAFETY: every iovec points into a guest memory mapping that `mem` keeps alive and
        // `guards` keeps mapped for the whole call, with the length of that mapping's slice,
        // checked by get_slices. Guest memory is only ever accessed volatilely, so the
        // kernel writing (or reading) it behind Rust's back breaks no reference's guarantee.
        // `cnt` is at most the number of iovecs. The offset is below the disk size.
        let n = unsafe {
            match dir {
                Dir::Read => libc::preadv64(fd, iovs.as_ptr(), cnt, off as libc::off64_t),
                Dir::Write => libc::pwritev64(fd, iovs.as_ptr(), cnt, off as libc::off64_t),
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n == 0 {
            // The file shrank under us, or the device stopped taking data.
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        off += n as u64;
        iovs = advance(iovs, n as usize);
    }
    drop(guards);
    Ok(())
}

/// Drops the first `n` bytes from `iovs` after a short transfer.
fn advance(iovs: &mut [libc::iovec], mut n: usize) -> &mut [libc::iovec] {
    let mut i = 0;
    while i < iovs.len() && n >= iovs[i].iov_len {
        n -= iovs[i].iov_len;
        i += 1;
    }
    let rest = &mut iovs[i..];
    if n > 0 {
        // n < rest[0].iov_len here, so the pointer stays inside its buffer.
        rest[0].iov_base = rest[0].iov_base.wrapping_byte_add(n);
        rest[0].iov_len -= n;
    }
    rest
}
