//! virtio-rng (virtio 1.2, 5.4): fills the driver's buffers with bytes from the host's
//! `getrandom`. One queue, no device features, no configuration space.

use std::io::{self, Write};
use std::sync::Arc;

use virtio_queue::{Queue, Writer};
use vmm_sys_util::eventfd::EventFd;

use super::queue_util::{self, Chain};
use super::worker::run_one_queue;
use super::{
    ActivateError, Activation, GuestMemory, VirtioDevice, VirtioInterrupt, VirtioWorker,
    COMMON_FEATURES, TYPE_RNG,
};
use crate::log_limited;

pub const QUEUE_SIZE: u16 = 256;
/// Bytes served per request at most, so one huge chain cannot hold the worker (and its stop
/// fd) for long; the driver simply asks again.
pub const REQUEST_CAP: usize = 64 << 10;

/// The entropy device; it keeps no state between activations.
#[derive(Debug, Default)]
pub struct Rng;

impl Rng {
    pub fn new() -> Self {
        Rng
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, mut act: Activation) -> Result<Box<dyn VirtioWorker>, ActivateError> {
        queue_util::prepare_queues(&mut act, 1)?;
        Ok(Box::new(RngWorker {
            queue: act.queues.remove(0),
            kick: act.kicks.remove(0),
            mem: act.mem,
            interrupt: act.interrupt,
            buf: vec![0; REQUEST_CAP],
        }))
    }
}

/// Serves the request queue.
pub struct RngWorker {
    mem: GuestMemory,
    queue: Queue,
    kick: EventFd,
    interrupt: Arc<dyn VirtioInterrupt>,
    /// Bounce buffer: random bytes are generated here, then copied into the guest.
    buf: Vec<u8>,
}

impl RngWorker {
    /// Answers every request the driver has made available.
    #[cfg(test)]
    fn process(&mut self) {
        serve(&self.mem, &mut self.queue, &*self.interrupt, &mut self.buf);
    }
}

/// Answers every request the driver has made available.
fn serve(mem: &GuestMemory, queue: &mut Queue, interrupt: &dyn VirtioInterrupt, buf: &mut [u8]) {
    queue_util::serve(mem, queue, 0, interrupt, |chain| {
        Some(fill(mem, chain, buf))
    });
}

impl VirtioWorker for RngWorker {
    fn run(self: Box<Self>, stop: EventFd) {
        let RngWorker {
            mem,
            mut queue,
            kick,
            interrupt,
            mut buf,
        } = *self;
        run_one_queue("virtio-rng", &kick, &stop, || {
            serve(&mem, &mut queue, &*interrupt, &mut buf)
        });
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
    use std::time::{Duration, Instant};
    use virtio_queue::QueueT;
    use vm_memory::{Bytes, GuestAddress};

    const A: u64 = 0x10_0000;
    const B: u64 = 0x20_0000;

    fn worker(mem: &GuestMemory, tq: &TestQueue) -> RngWorker {
        RngWorker {
            mem: mem.clone(),
            queue: tq.queue(),
            kick: EventFd::new(0).unwrap(),
            interrupt: interrupt(),
            buf: vec![0; REQUEST_CAP],
        }
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
        let mut w = worker(&mem, &tq);
        tq.add(0, &[desc(A, 32, true), desc(B, 32, true)]);
        w.process();
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
        let mut w = worker(&mem, &tq);
        tq.add(0, &[desc(A, 64, false), desc(B, 64, true)]);
        tq.add(2, &[desc(A, 64, false)]);
        w.process();
        assert_eq!(tq.used(0), (0, 64));
        assert_eq!(tq.used(1), (2, 0));
        assert_eq!(read(&mem, A, 64), vec![0; 64], "read-only buffer untouched");
        assert!(read(&mem, B, 64).iter().any(|b| *b != 0));
    }

    #[test]
    fn caps_a_huge_request() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, 16);
        let mut w = worker(&mem, &tq);
        tq.add(0, &[desc(A, 4 << 20, true)]);
        w.process();
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
        let mut w = worker(&mem, &tq);
        tq.add(0, &[desc(A, 16, true), desc(0x4000_0000, 16, true)]);
        tq.add(2, &[desc(B, 16, true)]);
        w.process();
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
        let mut d = Rng::new();
        assert_eq!(d.device_type(), 4);
        assert_eq!(d.queue_max_sizes(), &[256]);
        assert_eq!(d.features(), COMMON_FEATURES);
        let mut cfg = [0xaa; 8];
        d.read_config(0, &mut cfg);
        assert_eq!(cfg, [0; 8]);
        d.write_config(0, &[1, 2]);
    }

    #[test]
    fn activation_refuses_a_queue_the_driver_did_not_set_up() {
        let mem = memory();
        let act = Activation {
            mem,
            queues: vec![Queue::new(QUEUE_SIZE).unwrap()],
            kicks: vec![EventFd::new(0).unwrap()],
            interrupt: interrupt(),
            features: COMMON_FEATURES,
        };
        assert!(matches!(
            Rng::new().activate(act),
            Err(ActivateError::QueueNotReady(0))
        ));
    }

    #[test]
    fn activation_refuses_rings_outside_memory() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, QUEUE_SIZE);
        let mut q = tq.queue();
        q.set_used_ring_address(Some(0xff_fc00), Some(0)); // 1 KiB before the end: too short
        let act = Activation {
            mem: mem.clone(),
            queues: vec![q],
            kicks: vec![EventFd::new(0).unwrap()],
            interrupt: interrupt(),
            features: COMMON_FEATURES,
        };
        assert!(matches!(
            Rng::new().activate(act),
            Err(ActivateError::Device(_))
        ));
    }

    #[test]
    fn worker_serves_kicks_until_stopped() {
        let mem = memory();
        let tq = TestQueue::new(&mem, 0, QUEUE_SIZE);
        let kick = EventFd::new(0).unwrap();
        let irq = interrupt();
        let act = Activation {
            mem: mem.clone(),
            queues: vec![tq.queue()],
            kicks: vec![kick.try_clone().unwrap()],
            interrupt: irq.clone(),
            features: COMMON_FEATURES,
        };
        let w = Rng::new().activate(act).unwrap();
        let stop = EventFd::new(0).unwrap();
        let stop2 = stop.try_clone().unwrap();
        let t = std::thread::spawn(move || w.run(stop2));
        tq.add(0, &[desc(A, 64, true)]);
        kick.write(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while tq.used_idx() < 1 {
            assert!(Instant::now() < deadline, "request not served");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(tq.used(0), (0, 64));
        // EVENT_IDX with used_event 0: the first used buffer interrupts.
        while irq.used_count(0) < 1 {
            assert!(Instant::now() < deadline, "no interrupt");
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.write(1).unwrap();
        t.join().unwrap();
    }
}
