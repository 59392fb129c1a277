//! virtio-console (virtio 1.2, 5.3) with a single port: transmitq text goes to an output
//! writer, bytes from an input fd fill receiveq buffers. No MULTIPORT, so no control queues.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use thiserror::Error;
use virtio_queue::{Queue, Reader, Writer};
use vmm_sys_util::eventfd::EventFd;

use super::queue_util::{self, Chain};
use super::worker::EventLoop;
use super::{
    ActivateError, Activation, GuestMemory, VirtioDevice, VirtioInterrupt, VirtioWorker,
    COMMON_FEATURES, TYPE_CONSOLE,
};
use crate::bus::lock;
use crate::log_limited;

/// Feature bit: the configuration space holds the console's columns and rows.
pub const VIRTIO_CONSOLE_F_SIZE: u32 = 0;
pub const QUEUE_SIZE: u16 = 256;
const RX: u16 = 0;
const TX: u16 = 1;
/// Input held for the guest at most; the input fd is not read while these bytes wait.
const INPUT_BUF: usize = 4096;
/// Output taken from one transmit chain at most, so a chain aliasing gigabytes cannot hold
/// the worker; Linux sends at most 32 KiB per chain.
const TX_CAP: u64 = 1 << 20;
/// `struct virtio_console_config`: cols, rows, max_nr_ports, emerg_wr.
const CONFIG_LEN: usize = 12;

#[derive(Debug, Error)]
pub enum ConsoleError {
    #[error("making the console input non-blocking: {0}")]
    NonBlocking(#[source] io::Error),
}

type Output = Arc<Mutex<Box<dyn Write + Send>>>;

/// The console device. Its input and output outlive each activation, so they are shared
/// with the worker rather than moved into it.
pub struct Console {
    input: Option<Arc<File>>,
    output: Output,
    size: Option<(u16, u16)>,
}

impl Console {
    /// `input` (a pipe or tty the VMM feeds) is made non-blocking; `output` receives the
    /// guest's text.
    pub fn new(
        input: Option<OwnedFd>,
        output: Box<dyn Write + Send>,
    ) -> Result<Self, ConsoleError> {
        if let Some(fd) = &input {
            set_nonblocking(fd).map_err(ConsoleError::NonBlocking)?;
        }
        Ok(Console {
            input: input.map(|fd| Arc::new(File::from(fd))),
            output: Arc::new(Mutex::new(output)),
            size: None,
        })
    }

    /// Offers VIRTIO_CONSOLE_F_SIZE with this size in the configuration space.
    pub fn with_size(mut self, cols: u16, rows: u16) -> Self {
        self.size = Some((cols, rows));
        self
    }

    fn config(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0; CONFIG_LEN];
        if let Some((cols, rows)) = self.size {
            c[0..2].copy_from_slice(&cols.to_le_bytes());
            c[2..4].copy_from_slice(&rows.to_le_bytes());
        }
        c
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let size = if self.size.is_some() {
            1 << VIRTIO_CONSOLE_F_SIZE
        } else {
            0
        };
        COMMON_FEATURES | size
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let config = self.config();
        let Some(src) = usize::try_from(offset).ok().and_then(|o| config.get(o..)) else {
            return;
        };
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }

    fn activate(&mut self, mut act: Activation) -> Result<Box<dyn VirtioWorker>, ActivateError> {
        queue_util::prepare_queues(&mut act, 2)?;
        let mut queues = act.queues.into_iter();
        let mut kicks = act.kicks.into_iter();
        Ok(Box::new(ConsoleWorker {
            mem: act.mem,
            rx: queues.next().unwrap(),
            tx: queues.next().unwrap(),
            rx_kick: kicks.next().unwrap(),
            tx_kick: kicks.next().unwrap(),
            interrupt: act.interrupt,
            input: self.input.clone(),
            input_open: self.input.is_some(),
            pending: Vec::with_capacity(INPUT_BUF),
            output: self.output.clone(),
        }))
    }
}

/// Serves both queues and the input fd.
pub struct ConsoleWorker {
    mem: GuestMemory,
    rx: Queue,
    tx: Queue,
    rx_kick: EventFd,
    tx_kick: EventFd,
    interrupt: Arc<dyn VirtioInterrupt>,
    input: Option<Arc<File>>,
    /// False after end of file or a read error.
    input_open: bool,
    /// Input read but not yet given to the guest, at most INPUT_BUF bytes.
    pending: Vec<u8>,
    output: Output,
}

const STOP: u64 = 0;
const RX_KICK: u64 = 1;
const TX_KICK: u64 = 2;
const INPUT: u64 = 3;

impl ConsoleWorker {
    /// Writes every available transmit chain to the output.
    fn transmit(&mut self) {
        let ConsoleWorker {
            mem,
            tx,
            interrupt,
            output,
            ..
        } = self;
        let mut out = lock(output);
        queue_util::serve(mem, tx, TX, &**interrupt, |chain| {
            emit(mem, chain, &mut **out);
            Some(0)
        });
        if let Err(e) = out.flush() {
            log_limited!(log::Level::Warn, "virtio-console output: {e}");
        }
    }

    /// Gives pending input to the guest, as far as its receive buffers go.
    fn receive(&mut self) {
        let ConsoleWorker {
            mem,
            rx,
            interrupt,
            pending,
            ..
        } = self;
        if pending.is_empty() {
            return;
        }
        queue_util::serve(mem, rx, RX, &**interrupt, |chain| {
            // Without input, leave the buffer for later rather than return it empty.
            (!pending.is_empty()).then(|| deliver(mem, chain, pending))
        });
    }

    /// Whether the input fd should be watched: only while nothing waits for rx buffers,
    /// which is the flow control towards whoever feeds the input.
    fn wants_input(&self) -> bool {
        self.input_open && self.pending.is_empty()
    }

    /// Reads what the input has (once, up to INPUT_BUF bytes) into the pending buffer.
    fn read_input(&mut self) {
        let Some(input) = &self.input else { return };
        if !self.wants_input() {
            return;
        }
        let mut buf = [0u8; INPUT_BUF];
        match (&**input).read(&mut buf) {
            Ok(0) => self.input_open = false,
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                // Not guest-provoked, and it happens once: input is not watched after it.
                log::warn!("virtio-console input: {e}; input closed");
                self.input_open = false;
            }
        }
    }

    /// Adds or removes the input fd so the loop watches it exactly when `wants_input`.
    fn sync_input(&mut self, el: &mut EventLoop, watching: &mut bool) {
        let Some(input) = &self.input else { return };
        let want = self.wants_input();
        if want == *watching {
            return;
        }
        let fd = input.as_raw_fd();
        let r = if want {
            el.add_raw(fd, INPUT)
        } else {
            el.remove_raw(fd)
        };
        match r {
            Ok(()) => *watching = want,
            Err(e) => {
                log::warn!("virtio-console input: watching: {e}; input closed");
                self.input_open = false;
            }
        }
    }
}

impl VirtioWorker for ConsoleWorker {
    fn run(mut self: Box<Self>, stop: EventFd) {
        let mut el = match EventLoop::new().and_then(|mut el| {
            el.add(&stop, STOP)?;
            el.add(&self.rx_kick, RX_KICK)?;
            el.add(&self.tx_kick, TX_KICK)?;
            Ok(el)
        }) {
            Ok(el) => el,
            Err(e) => {
                log::error!("virtio-console worker: {e}");
                return;
            }
        };
        // The driver may have queued output before the worker existed.
        self.transmit();
        let mut watching = false;
        loop {
            self.sync_input(&mut el, &mut watching);
            let tokens = match el.wait() {
                Ok(t) => t,
                Err(e) => {
                    log::error!("virtio-console worker: {e}");
                    return;
                }
            };
            if tokens.contains(&STOP) {
                return;
            }
            for t in tokens {
                match t {
                    TX_KICK => {
                        let _ = self.tx_kick.read();
                        self.transmit();
                    }
                    RX_KICK => {
                        let _ = self.rx_kick.read();
                        self.receive();
                    }
                    INPUT => {
                        self.read_input();
                        self.receive();
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Copies the device-readable buffers of one transmit chain to `out`.
fn emit(mem: &GuestMemory, chain: Chain<'_>, out: &mut dyn Write) {
    let reader: Reader<'_> = match Reader::new(mem, chain) {
        Ok(r) => r,
        Err(e) => {
            log_limited!(log::Level::Warn, "virtio-console: transmit refused: {e}");
            return;
        }
    };
    if reader.available_bytes() as u64 > TX_CAP {
        log_limited!(
            log::Level::Warn,
            "virtio-console: {}-byte transmit cut to {TX_CAP}",
            reader.available_bytes()
        );
    }
    if let Err(e) = io::copy(&mut reader.take(TX_CAP), out) {
        log_limited!(log::Level::Warn, "virtio-console output: {e}");
    }
}

/// Moves as much of `pending` as fits into one receive chain; returns the used length.
fn deliver(mem: &GuestMemory, chain: Chain<'_>, pending: &mut Vec<u8>) -> u32 {
    let mut w: Writer<'_> = match Writer::new(mem, chain) {
        Ok(w) => w,
        Err(e) => {
            log_limited!(
                log::Level::Warn,
                "virtio-console: receive buffer refused: {e}"
            );
            return 0;
        }
    };
    let n = w.write(pending).unwrap_or(0);
    pending.drain(..n);
    // At most INPUT_BUF.
    n as u32
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_GETFL only reads the flags of an fd we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL only changes the status flags of an fd we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::queue_util::test_support::*;
    use std::os::fd::{FromRawFd, RawFd};
    use std::os::unix::thread::JoinHandleExt;
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};
    use vm_memory::{Bytes, GuestAddress};

    const A: u64 = 0x10_0000;
    const B: u64 = 0x20_0000;
    const C: u64 = 0x30_0000;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Shared {
        fn text(&self) -> Vec<u8> {
            self.0.lock().unwrap().clone()
        }
    }

    /// (read end, write end)
    fn pipe() -> (OwnedFd, File) {
        let mut fds: [RawFd; 2] = [-1; 2];
        // SAFETY: pipe2 writes two fds into the array it is given.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds are new and owned by nothing else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    fn read(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    struct Rig<'a> {
        mem: &'a GuestMemory,
        rxq: TestQueue<'a>,
        txq: TestQueue<'a>,
        rx_kick: EventFd,
        tx_kick: EventFd,
        irq: Arc<CountingInterrupt>,
    }

    impl<'a> Rig<'a> {
        fn new(mem: &'a GuestMemory) -> Self {
            Rig {
                mem,
                rxq: TestQueue::new(mem, 0, QUEUE_SIZE),
                txq: TestQueue::new(mem, 1, QUEUE_SIZE),
                rx_kick: EventFd::new(0).unwrap(),
                tx_kick: EventFd::new(0).unwrap(),
                irq: interrupt(),
            }
        }

        fn activate(&self, c: &mut Console) -> Box<dyn VirtioWorker> {
            c.activate(Activation {
                mem: self.mem.clone(),
                queues: vec![self.rxq.queue(), self.txq.queue()],
                kicks: vec![
                    self.rx_kick.try_clone().unwrap(),
                    self.tx_kick.try_clone().unwrap(),
                ],
                interrupt: self.irq.clone(),
                features: COMMON_FEATURES,
            })
            .unwrap()
        }

        /// The worker, for driving by hand.
        fn worker(&self, c: &Console) -> ConsoleWorker {
            ConsoleWorker {
                mem: self.mem.clone(),
                rx: self.rxq.queue(),
                tx: self.txq.queue(),
                rx_kick: self.rx_kick.try_clone().unwrap(),
                tx_kick: self.tx_kick.try_clone().unwrap(),
                interrupt: self.irq.clone(),
                input: c.input.clone(),
                input_open: c.input.is_some(),
                pending: Vec::new(),
                output: c.output.clone(),
            }
        }
    }

    fn console(input: Option<OwnedFd>) -> (Console, Shared) {
        let out = Shared::default();
        (Console::new(input, Box::new(out.clone())).unwrap(), out)
    }

    #[test]
    fn device_shape_and_config() {
        let (c, _) = console(None);
        assert_eq!(c.device_type(), 3);
        assert_eq!(c.queue_max_sizes(), &[256, 256]);
        assert_eq!(c.features(), COMMON_FEATURES);
        let mut cfg = [0xaa; 12];
        c.read_config(0, &mut cfg);
        assert_eq!(cfg, [0; 12]);

        let c = c.with_size(80, 25);
        assert_eq!(c.features(), COMMON_FEATURES | 1);
        let mut cfg = [0xaa; 6];
        c.read_config(0, &mut cfg);
        assert_eq!(cfg, [80, 0, 25, 0, 0, 0]);
        let mut rows = [0; 2];
        c.read_config(2, &mut rows);
        assert_eq!(u16::from_le_bytes(rows), 25);
        let mut past = [0xaa; 4];
        c.read_config(10, &mut past);
        assert_eq!(past, [0; 4]);
        c.read_config(u64::MAX, &mut past);
        assert_eq!(past, [0; 4]);
    }

    #[test]
    fn input_is_made_non_blocking() {
        let (r, _w) = pipe();
        let fd = r.as_raw_fd();
        let (_c, _) = console(Some(r));
        // SAFETY: F_GETFL only reads the flags of an fd the console keeps open.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert_ne!(flags & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn transmit_concatenates_readable_buffers() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (c, out) = console(None);
        let mut w = rig.worker(&c);
        mem.write_slice(b"hello, ", GuestAddress(A)).unwrap();
        mem.write_slice(b"world\n", GuestAddress(C)).unwrap();
        // A device-writable buffer in a transmit chain is not output.
        rig.txq
            .add(0, &[desc(A, 7, false), desc(C, 6, false), desc(B, 8, true)]);
        w.transmit();
        assert_eq!(out.text(), b"hello, world\n");
        assert_eq!(rig.txq.used(0), (0, 0));
        assert_eq!(rig.irq.used_count(TX), 1);
        assert_eq!(read(&mem, B, 8), vec![0; 8], "writable buffer untouched");
    }

    #[test]
    fn transmit_follows_indirect_tables_and_caps_a_huge_chain() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (c, out) = console(None);
        let mut w = rig.worker(&c);
        mem.write_slice(b"in", GuestAddress(A)).unwrap();
        mem.write_slice(b"direct", GuestAddress(B)).unwrap();
        rig.txq
            .add_indirect(0, 0x8_0000, &[desc(A, 2, false), desc(B, 6, false)]);
        w.transmit();
        assert_eq!(out.text(), b"indirect");

        rig.txq.add(1, &[desc(A, 4 << 20, false)]);
        w.transmit();
        assert_eq!(out.text().len() as u64, 8 + TX_CAP);
        assert_eq!(rig.txq.used_idx(), 2);
    }

    #[test]
    fn transmit_drops_a_chain_outside_memory_and_goes_on() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (c, out) = console(None);
        let mut w = rig.worker(&c);
        mem.write_slice(b"ok", GuestAddress(A)).unwrap();
        rig.txq
            .add(0, &[desc(A, 2, false), desc(0x4000_0000, 8, false)]);
        rig.txq.add(2, &[desc(A, 2, false)]);
        w.transmit();
        assert_eq!(out.text(), b"ok", "only the second chain");
        assert_eq!(rig.txq.used_idx(), 2);
    }

    #[test]
    fn input_fills_receive_buffers_in_order() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (r, mut wr) = pipe();
        let (c, _) = console(Some(r));
        let mut w = rig.worker(&c);
        rig.rxq.add(0, &[desc(A, 2, true)]);
        rig.rxq.add(1, &[desc(B, 1, false), desc(C, 8, true)]);
        wr.write_all(b"abc").unwrap();
        w.read_input();
        w.receive();
        assert_eq!(rig.rxq.used(0), (0, 2));
        assert_eq!(rig.rxq.used(1), (1, 1));
        assert_eq!(read(&mem, A, 2), b"ab");
        assert_eq!(read(&mem, C, 1), b"c");
        assert_eq!(rig.irq.used_count(RX), 1);
        assert!(w.wants_input());
    }

    #[test]
    fn input_waits_for_receive_buffers_without_reading_more() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (r, mut wr) = pipe();
        let (c, _) = console(Some(r));
        let mut w = rig.worker(&c);
        wr.write_all(b"xyz").unwrap();
        w.read_input();
        w.receive();
        assert!(!w.wants_input(), "no buffers: stop reading");
        wr.write_all(b"more").unwrap();
        w.read_input(); // must not read while bytes wait
        assert_eq!(w.pending, b"xyz");
        assert_eq!(rig.rxq.used_idx(), 0);

        // A buffer with no writable room takes nothing and loses nothing.
        rig.rxq.add(0, &[desc(A, 8, false)]);
        rig.rxq.add(1, &[desc(B, 16, true)]);
        w.receive();
        assert_eq!(rig.rxq.used(0), (0, 0));
        assert_eq!(rig.rxq.used(1), (1, 3));
        assert_eq!(read(&mem, B, 3), b"xyz");
        assert!(w.wants_input());
        w.read_input();
        assert_eq!(w.pending, b"more", "the rest stayed in the pipe");
    }

    #[test]
    fn a_receive_buffer_outside_memory_loses_no_input() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (r, mut wr) = pipe();
        let (c, _) = console(Some(r));
        let mut w = rig.worker(&c);
        rig.rxq.add(0, &[desc(0x4000_0000, 8, true)]);
        rig.rxq.add(1, &[desc(A, 8, true)]);
        wr.write_all(b"hi").unwrap();
        w.read_input();
        w.receive();
        assert_eq!(rig.rxq.used(0), (0, 0));
        assert_eq!(rig.rxq.used(1), (1, 2));
        assert_eq!(read(&mem, A, 2), b"hi");
    }

    #[test]
    fn end_of_input_stops_watching_it() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (r, wr) = pipe();
        let (c, _) = console(Some(r));
        let mut w = rig.worker(&c);
        assert!(w.wants_input());
        drop(wr);
        w.read_input();
        assert!(!w.wants_input());
        let (c, _) = console(None);
        assert!(!rig.worker(&c).wants_input());
    }

    /// CPU time the thread used so far.
    fn cpu_time(t: &JoinHandle<()>) -> Duration {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the thread is alive (joined only later); the call writes one clock id.
        assert_eq!(
            unsafe { libc::pthread_getcpuclockid(t.as_pthread_t(), &mut clock) },
            0
        );
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec.
        assert_eq!(unsafe { libc::clock_gettime(clock, &mut ts) }, 0);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    fn assert_idle(t: &JoinHandle<()>) {
        let before = cpu_time(t);
        std::thread::sleep(Duration::from_millis(200));
        let used = cpu_time(t) - before;
        assert!(used < Duration::from_millis(50), "worker spun: {used:?}");
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn worker_end_to_end() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (r, mut wr) = pipe();
        let (mut c, out) = console(Some(r));
        let worker = rig.activate(&mut c);
        let stop = EventFd::new(0).unwrap();
        let stop2 = stop.try_clone().unwrap();
        let t = std::thread::spawn(move || worker.run(stop2));

        mem.write_slice(b"boot\n", GuestAddress(A)).unwrap();
        rig.txq.add(0, &[desc(A, 5, false)]);
        rig.tx_kick.write(1).unwrap();
        wait_for("output", || out.text() == b"boot\n");

        // Input with no receive buffers waits, neither lost nor spun on.
        wr.write_all(b"ping").unwrap();
        assert_idle(&t);
        assert_eq!(rig.rxq.used_idx(), 0);
        rig.rxq.add(0, &[desc(B, 64, true)]);
        rig.rx_kick.write(1).unwrap();
        wait_for("ping", || rig.rxq.used_idx() == 1);
        assert_eq!(rig.rxq.used(0), (0, 4));
        assert_eq!(read(&mem, B, 4), b"ping");

        // Buffers first, input later.
        rig.rxq.add(1, &[desc(C, 64, true)]);
        rig.rx_kick.write(1).unwrap();
        wr.write_all(b"pong").unwrap();
        wait_for("pong", || rig.rxq.used_idx() == 2);
        assert_eq!(read(&mem, C, 4), b"pong");
        assert!(rig.irq.used_count(RX) >= 1);

        // End of input: a level-triggered EOF still watched would spin.
        drop(wr);
        assert_idle(&t);

        stop.write(1).unwrap();
        t.join().unwrap();
    }
}
