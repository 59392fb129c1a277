//! virtio-console (virtio 1.2, 5.3) with a single port: transmitq text goes to an output
//! writer, bytes from an input fd fill receiveq buffers. No MULTIPORT, so no control queues.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

use thiserror::Error;
use virtio_queue::{Reader, Writer};

use super::backend::{Queues, VirtioBackend, FIRST_DEVICE_TOKEN};
use super::queue_util::Chain;
use super::{GuestMemory, COMMON_FEATURES};
use crate::log_limited;

/// Feature bit: the configuration space holds the console's columns and rows.
pub const VIRTIO_CONSOLE_F_SIZE: u32 = 0;
pub const QUEUE_SIZE: u16 = 256;
const RX: u16 = 0;
const TX: u16 = 1;
/// The input fd's token in the backend's event loop.
const INPUT: u64 = FIRST_DEVICE_TOKEN;
/// Input held for the guest at most; the input fd is not read while these bytes wait.
const INPUT_BUF: usize = 4096;
/// Output taken from one transmit chain at most, so a chain aliasing gigabytes cannot hold
/// the queue; Linux sends at most 32 KiB per chain.
const TX_CAP: u64 = 1 << 20;
/// `struct virtio_console_config`: cols, rows, max_nr_ports, emerg_wr.
const CONFIG_LEN: usize = 12;

#[derive(Debug, Error)]
pub enum ConsoleError {
    #[error("making the console input non-blocking: {0}")]
    NonBlocking(#[source] io::Error),
}

/// The console device: its input and output outlive each driver, as does input read but not
/// yet delivered.
pub struct Console {
    input: Option<File>,
    output: Mutex<Box<dyn Write + Send>>,
    size: Option<(u16, u16)>,
    state: Mutex<State>,
}

struct State {
    /// False after end of file or a read error.
    input_open: bool,
    /// Whether the event loop watches the input fd now.
    watching: bool,
    /// Input read but not yet given to the guest, at most INPUT_BUF bytes.
    pending: Vec<u8>,
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
            state: Mutex::new(State {
                input_open: input.is_some(),
                watching: false,
                pending: Vec::with_capacity(INPUT_BUF),
            }),
            input: input.map(File::from),
            output: Mutex::new(output),
            size: None,
        })
    }

    /// Offers VIRTIO_CONSOLE_F_SIZE with this size in the configuration space.
    pub fn with_size(mut self, cols: u16, rows: u16) -> Self {
        self.size = Some((cols, rows));
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes every available transmit chain to the output.
    fn transmit(&self, queues: &Queues<'_>) {
        let mem = queues.mem();
        let mut out = self.output.lock().unwrap_or_else(|e| e.into_inner());
        queues.serve(TX, |chain| {
            emit(mem, chain, &mut **out);
            Some(0)
        });
        if let Err(e) = out.flush() {
            log_limited!(log::Level::Warn, "virtio-console output: {e}");
        }
    }

    /// Gives pending input to the guest, as far as its receive buffers go.
    fn receive(&self, queues: &Queues<'_>) {
        let mem = queues.mem();
        let mut st = self.state();
        if st.pending.is_empty() {
            return;
        }
        let pending = &mut st.pending;
        queues.serve(RX, |chain| {
            // Without input, leave the buffer for later rather than return it empty.
            (!pending.is_empty()).then(|| deliver(mem, chain, pending))
        });
    }

    /// Whether the input fd should be watched: only while nothing waits for rx buffers,
    /// which is the flow control towards whoever feeds the input.
    fn wants_input(&self) -> bool {
        let st = self.state();
        st.input_open && st.pending.is_empty()
    }

    /// Reads what the input has (once, up to INPUT_BUF bytes) into the pending buffer.
    fn read_input(&self) {
        let Some(input) = &self.input else { return };
        if !self.wants_input() {
            return;
        }
        let mut buf = [0u8; INPUT_BUF];
        let mut st = self.state();
        match (&*input).read(&mut buf) {
            Ok(0) => st.input_open = false,
            Ok(n) => st.pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                // Not guest-provoked, and it happens once: input is not watched after it.
                log::warn!("virtio-console input: {e}; input closed");
                st.input_open = false;
            }
        }
    }

    /// Adds or removes the input fd so the loop watches it exactly when `wants_input`.
    fn sync_input(&self, queues: &Queues<'_>) {
        let Some(input) = &self.input else { return };
        let want = self.wants_input();
        let mut st = self.state();
        if want == st.watching {
            return;
        }
        let fd = input.as_raw_fd();
        let r = if want {
            queues.watch(fd, INPUT)
        } else {
            queues.unwatch(fd, INPUT)
        };
        match r {
            Ok(()) => st.watching = want,
            Err(e) => {
                log::warn!("virtio-console input: watching: {e}; input closed");
                st.input_open = false;
            }
        }
    }
}

impl VirtioBackend for Console {
    fn name(&self) -> &str {
        "virtio-console"
    }

    fn queue_sizes(&self) -> &[u16] {
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

    fn config(&self) -> Vec<u8> {
        let mut c = vec![0; CONFIG_LEN];
        if let Some((cols, rows)) = self.size {
            c[0..2].copy_from_slice(&cols.to_le_bytes());
            c[2..4].copy_from_slice(&rows.to_le_bytes());
        }
        c
    }

    fn started(&self, queues: &Queues<'_>) {
        self.sync_input(queues);
    }

    fn kicked(&self, index: u16, queues: &Queues<'_>) {
        match index {
            TX => self.transmit(queues),
            RX => self.receive(queues),
            _ => return,
        }
        self.sync_input(queues);
    }

    fn event(&self, token: u64, queues: &Queues<'_>) {
        if token == INPUT {
            self.read_input();
            self.receive(queues);
            self.sync_input(queues);
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
    use crate::virtio::backend::Watch;
    use crate::virtio::queue_util::test_support::*;
    use std::os::fd::{FromRawFd, RawFd};
    use std::sync::Arc;
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
    }

    impl<'a> Rig<'a> {
        fn new(mem: &'a GuestMemory) -> Self {
            Rig {
                mem,
                rxq: TestQueue::new(mem, 0, QUEUE_SIZE),
                txq: TestQueue::new(mem, 1, QUEUE_SIZE),
            }
        }

        fn vrings(&self) -> TestVrings {
            TestVrings::new(self.mem, &[&self.rxq, &self.txq], false)
        }
    }

    fn console(input: Option<OwnedFd>) -> (Console, Shared) {
        let out = Shared::default();
        (Console::new(input, Box::new(out.clone())).unwrap(), out)
    }

    #[test]
    fn device_shape_and_config() {
        let (c, _) = console(None);
        assert_eq!(c.queue_sizes(), &[256, 256]);
        assert_eq!(c.features(), COMMON_FEATURES);
        assert_eq!(c.config(), [0; 12]);

        let c = c.with_size(80, 25);
        assert_eq!(c.features(), COMMON_FEATURES | 1);
        assert_eq!(c.config()[..6], [80, 0, 25, 0, 0, 0]);
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
        let v = rig.vrings();
        let q = v.queues();
        mem.write_slice(b"hello, ", GuestAddress(A)).unwrap();
        mem.write_slice(b"world\n", GuestAddress(C)).unwrap();
        // A device-writable buffer in a transmit chain is not output.
        rig.txq
            .add(0, &[desc(A, 7, false), desc(C, 6, false), desc(B, 8, true)]);
        c.transmit(&q);
        assert_eq!(out.text(), b"hello, world\n");
        assert_eq!(rig.txq.used(0), (0, 0));
        assert_eq!(v.interrupts(usize::from(TX)), 1);
        assert_eq!(read(&mem, B, 8), vec![0; 8], "writable buffer untouched");
    }

    #[test]
    fn transmit_follows_indirect_tables_and_caps_a_huge_chain() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (c, out) = console(None);
        let v = rig.vrings();
        let q = v.queues();
        mem.write_slice(b"in", GuestAddress(A)).unwrap();
        mem.write_slice(b"direct", GuestAddress(B)).unwrap();
        rig.txq
            .add_indirect(0, 0x8_0000, &[desc(A, 2, false), desc(B, 6, false)]);
        c.transmit(&q);
        assert_eq!(out.text(), b"indirect");

        rig.txq.add(1, &[desc(A, 4 << 20, false)]);
        c.transmit(&q);
        assert_eq!(out.text().len() as u64, 8 + TX_CAP);
        assert_eq!(rig.txq.used_idx(), 2);
    }

    #[test]
    fn transmit_drops_a_chain_outside_memory_and_goes_on() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (c, out) = console(None);
        let v = rig.vrings();
        let q = v.queues();
        mem.write_slice(b"ok", GuestAddress(A)).unwrap();
        rig.txq
            .add(0, &[desc(A, 2, false), desc(0x4000_0000, 8, false)]);
        rig.txq.add(2, &[desc(A, 2, false)]);
        c.transmit(&q);
        assert_eq!(out.text(), b"ok", "only the second chain");
        assert_eq!(rig.txq.used_idx(), 2);
    }

    #[test]
    fn input_fills_receive_buffers_in_order() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (r, mut wr) = pipe();
        let (c, _) = console(Some(r));
        let v = rig.vrings();
        let q = v.queues();
        rig.rxq.add(0, &[desc(A, 2, true)]);
        rig.rxq.add(1, &[desc(B, 1, false), desc(C, 8, true)]);
        wr.write_all(b"abc").unwrap();
        c.read_input();
        c.receive(&q);
        assert_eq!(rig.rxq.used(0), (0, 2));
        assert_eq!(rig.rxq.used(1), (1, 1));
        assert_eq!(read(&mem, A, 2), b"ab");
        assert_eq!(read(&mem, C, 1), b"c");
        assert_eq!(v.interrupts(usize::from(RX)), 1);
        assert!(c.wants_input());
    }

    #[test]
    fn input_waits_for_receive_buffers_without_reading_more() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (r, mut wr) = pipe();
        let (c, _) = console(Some(r));
        let v = rig.vrings();
        let q = v.queues();
        wr.write_all(b"xyz").unwrap();
        c.read_input();
        c.receive(&q);
        assert!(!c.wants_input(), "no buffers: stop reading");
        wr.write_all(b"more").unwrap();
        c.read_input(); // must not read while bytes wait
        assert_eq!(c.state().pending, b"xyz");
        assert_eq!(rig.rxq.used_idx(), 0);

        // A buffer with no writable room takes nothing and loses nothing.
        rig.rxq.add(0, &[desc(A, 8, false)]);
        rig.rxq.add(1, &[desc(B, 16, true)]);
        c.receive(&q);
        assert_eq!(rig.rxq.used(0), (0, 0));
        assert_eq!(rig.rxq.used(1), (1, 3));
        assert_eq!(read(&mem, B, 3), b"xyz");
        assert!(c.wants_input());
        c.read_input();
        assert_eq!(c.state().pending, b"more", "the rest stayed in the pipe");
    }

    #[test]
    fn a_receive_buffer_outside_memory_loses_no_input() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (r, mut wr) = pipe();
        let (c, _) = console(Some(r));
        let v = rig.vrings();
        let q = v.queues();
        rig.rxq.add(0, &[desc(0x4000_0000, 8, true)]);
        rig.rxq.add(1, &[desc(A, 8, true)]);
        wr.write_all(b"hi").unwrap();
        c.read_input();
        c.receive(&q);
        assert_eq!(rig.rxq.used(0), (0, 0));
        assert_eq!(rig.rxq.used(1), (1, 2));
        assert_eq!(read(&mem, A, 2), b"hi");
    }

    #[test]
    fn end_of_input_stops_watching_it() {
        let (r, wr) = pipe();
        let (c, _) = console(Some(r));
        assert!(c.wants_input());
        drop(wr);
        c.read_input();
        assert!(!c.wants_input());
        let (c, _) = console(None);
        assert!(!c.wants_input());
    }

    /// Records what the device asks its event loop to watch.
    #[derive(Default)]
    struct Watched(Mutex<Vec<(RawFd, bool)>>);

    impl Watch for Watched {
        fn watch(&self, fd: RawFd, _token: u64) -> io::Result<()> {
            self.0.lock().unwrap().push((fd, true));
            Ok(())
        }
        fn unwatch(&self, fd: RawFd, _token: u64) -> io::Result<()> {
            self.0.lock().unwrap().push((fd, false));
            Ok(())
        }
    }

    #[test]
    fn input_is_watched_only_while_nothing_waits_for_buffers() {
        let mem = memory();
        let rig = Rig::new(&mem);
        let (r, mut wr) = pipe();
        let fd = r.as_raw_fd();
        let (c, _) = console(Some(r));
        let v = rig.vrings();
        let watched = Watched::default();
        let q = Queues::new(&v.vrings, &mem, Some(&watched));
        c.started(&q);
        assert_eq!(*watched.0.lock().unwrap(), [(fd, true)]);
        // Input with no receive buffers: stop watching (a level-triggered fd would spin).
        wr.write_all(b"ping").unwrap();
        c.event(INPUT, &q);
        assert_eq!(watched.0.lock().unwrap().last(), Some(&(fd, false)));
        // The driver posts a buffer and kicks: the input goes in, watching resumes.
        rig.rxq.add(0, &[desc(B, 64, true)]);
        c.kicked(RX, &q);
        assert_eq!(read(&mem, B, 4), b"ping");
        assert_eq!(watched.0.lock().unwrap().last(), Some(&(fd, true)));
        // End of input: not watched again.
        drop(wr);
        c.event(INPUT, &q);
        assert_eq!(watched.0.lock().unwrap().last(), Some(&(fd, false)));
        c.kicked(RX, &q);
        assert_eq!(watched.0.lock().unwrap().len(), 4, "{:?}", watched.0);
    }
}
