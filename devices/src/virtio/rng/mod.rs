//! virtio-rng (virtio 1.2, 5.4): fills the driver's buffers with bytes from the host's
//! `getrandom`. One queue, no device features, no configuration space.

use std::io::{self, Write};
use std::sync::Mutex;

use virtio_queue::Writer;

use super::backend::{Queues, VirtioBackend};
use super::queue_util::Chain;
use super::{GuestMemory, COMMON_FEATURES};
use crate::log_limited;

pub const QUEUE_SIZE: u16 = 256;
/// Bytes served per request at most, so one huge chain cannot hold the queue (and a reset
/// waiting for it) for long; the driver simply asks again.
pub const REQUEST_CAP: usize = 64 << 10;

/// The entropy device; it keeps no state between activations.
pub struct Rng {
    /// Bounce buffer: random bytes are generated here, then copied into the guest.
    buf: Mutex<Vec<u8>>,
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng {
    pub fn new() -> Self {
        Rng {
            buf: Mutex::new(vec![0; REQUEST_CAP]),
        }
    }
}

impl VirtioBackend for Rng {
    fn name(&self) -> &str {
        "virtio-rng"
    }

    fn queue_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES
    }

    fn config(&self) -> Vec<u8> {
        Vec::new()
    }

    fn kicked(&self, index: u16, queues: &Queues<'_>) {
        if index != 0 {
            return;
        }
        let mem = queues.mem();
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        queues.serve(0, |chain| Some(fill(mem, chain, &mut buf)));
    }
}

/// Fills the device-writable buffers of one request (read-only ones are skipped) with up to
/// `buf.len()` random bytes; returns the used length.
fn fill(mem: &GuestMemory, chain: Chain<'_>, buf: &mut [u8]) -> u32 {
    let mut w: Writer<'_> = match Writer::new(mem, chain) {
        Ok(w) => w,
        Err(e) => {
            log_limited!(log::Level::Warn, "virtio-rng: request refused: {e}");
            return 0;
        }
    };
    let n = w.available_bytes().min(buf.len());
    if let Err(e) = getrandom(&mut buf[..n]) {
        log_limited!(log::Level::Error, "virtio-rng: getrandom: {e}");
        return 0;
    }
    if let Err(e) = w.write_all(&buf[..n]) {
        log_limited!(log::Level::Warn, "virtio-rng: writing the request: {e}");
    }
    // At most REQUEST_CAP, so it fits.
    w.bytes_written() as u32
}

/// Fills `buf` from the kernel's CSPRNG, across short reads and signals.
fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`, which we own
        // mutably for the duration of the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::queue_util::test_support::*;
    use vm_memory::{Bytes, GuestAddress};

    const A: u64 = 0x10_0000;
    const B: u64 = 0x20_0000;

    /// What the backend does on a kick of the queue set up on `tq`; returns the interrupts.
    fn process(mem: &GuestMemory, tq: &TestQueue) -> u64 {
        let v = TestVrings::new(mem, &[tq], false);
        Rng::new().kicked(0, &v.queues());
        v.interrupts(0)
    }

    fn read(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    #[test]
    fn fills_every_writable_buffer_of_a_chain() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, 16);
        tq.add(0, &[desc(A, 32, true), desc(B, 32, true)]);
        process(&mem, &tq);
        assert_eq!(tq.used_idx(), 1);
        assert_eq!(tq.used(0), (0, 64));
        let mut bytes = read(&mem, A, 32);
        bytes.extend(read(&mem, B, 32));
        assert!(
            bytes.iter().any(|b| *b != 0),
            "64 random bytes are not all zero"
        );
    }

    #[test]
    fn skips_read_only_buffers() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, 16);
        tq.add(0, &[desc(A, 64, false), desc(B, 64, true)]);
        tq.add(2, &[desc(A, 64, false)]);
        process(&mem, &tq);
        assert_eq!(tq.used(0), (0, 64));
        assert_eq!(tq.used(1), (2, 0));
        assert_eq!(read(&mem, A, 64), vec![0; 64], "read-only buffer untouched");
        assert!(read(&mem, B, 64).iter().any(|b| *b != 0));
    }

    #[test]
    fn caps_a_huge_request() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, 16);
        tq.add(0, &[desc(A, 4 << 20, true)]);
        process(&mem, &tq);
        assert_eq!(tq.used(0), (0, REQUEST_CAP as u32));
        let past = A + REQUEST_CAP as u64;
        assert_eq!(
            read(&mem, past, 4096),
            vec![0; 4096],
            "nothing past the cap"
        );
    }

    #[test]
    fn a_buffer_outside_memory_is_returned_empty_and_the_queue_goes_on() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, 16);
        tq.add(0, &[desc(A, 16, true), desc(0x4000_0000, 16, true)]);
        tq.add(2, &[desc(B, 16, true)]);
        process(&mem, &tq);
        assert_eq!(tq.used(0), (0, 0));
        assert_eq!(
            read(&mem, A, 16),
            vec![0; 16],
            "no partial fill of a bad chain"
        );
        assert_eq!(tq.used(1), (2, 16));
    }

    #[test]
    fn device_shape() {
        let d = Rng::new();
        assert_eq!(d.queue_sizes(), &[256]);
        assert_eq!(d.features(), COMMON_FEATURES);
        assert!(d.config().is_empty());
    }

    #[test]
    fn one_interrupt_per_batch_of_requests() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, QUEUE_SIZE);
        for i in 0..100 {
            tq.add(i, &[desc(A, 16, true)]);
        }
        // Served in batches of 64, each ending with the interrupt the driver asked for.
        assert_eq!(process(&mem, &tq), 2, "two interrupts for 100 requests");
        assert_eq!(tq.used_idx(), 100);
    }

    #[test]
    fn a_kick_of_a_queue_the_device_lacks_is_ignored() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, 16);
        tq.add(0, &[desc(A, 16, true)]);
        let v = TestVrings::new(&mem, &[&tq], false);
        Rng::new().kicked(5, &v.queues());
        assert_eq!(tq.used_idx(), 0);
    }
}
