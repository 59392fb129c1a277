//! The UART's output, off the vCPU threads: the guest's bytes go into a bounded buffer that a
//! thread of its own writes to stdout or the file. Neither a vCPU nor the guest ever waits on
//! a slow, stuck or vanished reader: when the buffer is full the oldest output is dropped and
//! counted (logged, rate-limited), and a reader that went away (EPIPE) ends the writing
//! quietly. Console output is best effort; guest data on disks is what must never be lost.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::log_limited;

/// Output held for a reader that does not keep up.
pub const CAPACITY: usize = 1 << 20;
/// Most bytes written out at once: small, so that a slow reader still shows progress often.
const CHUNK: usize = 4096;

struct State {
    buf: VecDeque<u8>,
    capacity: usize,
    /// Bytes dropped since the drain last said so.
    dropped: u64,
    /// No more output: the drain writes what is left and ends.
    closed: bool,
    /// Chunks written so far: [`Drain::finish`] waits while this moves.
    written: u64,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

/// What the UART writes to; never blocks for longer than a lock.
pub struct GuestOutput {
    shared: Shared,
}

/// The drain thread; [`Drain::finish`] writes what is left.
pub struct Drain {
    shared: Shared,
    thread: JoinHandle<()>,
}

/// Starts the drain thread writing to `out` (a helper thread of berth: call it after the
/// filters are initialised).
pub fn start(out: Box<dyn Write + Send>, capacity: usize) -> io::Result<(GuestOutput, Drain)> {
    let shared: Shared = Arc::new((
        Mutex::new(State {
            buf: VecDeque::with_capacity(capacity.min(CHUNK)),
            capacity,
            dropped: 0,
            closed: false,
            written: 0,
        }),
        Condvar::new(),
    ));
    let s = shared.clone();
    let thread = crate::filters::spawn_helper("guest-output".into(), move || drain(&s, out))?;
    Ok((
        GuestOutput {
            shared: shared.clone(),
        },
        Drain { shared, thread },
    ))
}

impl Write for GuestOutput {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let (m, cv) = &*self.shared;
        let mut st = devices::bus::lock(m);
        let cap = st.capacity;
        // Keep the newest output: what is past the capacity goes, oldest first.
        let keep = &bytes[bytes.len().saturating_sub(cap)..];
        let over = (st.buf.len() + keep.len()).saturating_sub(cap);
        st.buf.drain(..over);
        st.dropped += (over + bytes.len() - keep.len()) as u64;
        st.buf.extend(keep);
        cv.notify_one();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn drain(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let (m, cv) = &**shared;
    let mut gone = false;
    loop {
        let (chunk, dropped) = {
            let mut st = devices::bus::lock(m);
            while st.buf.is_empty() && !st.closed {
                st = cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.buf.is_empty() {
                return;
            }
            let n = st.buf.len().min(CHUNK);
            let chunk: Vec<u8> = st.buf.drain(..n).collect();
            (chunk, std::mem::take(&mut st.dropped))
        };
        if dropped > 0 {
            log_limited!(
                log::Level::Warn,
                "console output: {dropped} bytes dropped (nothing read them in time)"
            );
        }
        if gone {
            continue;
        }
        match out.write_all(&chunk).and_then(|()| out.flush()) {
            Ok(()) => devices::bus::lock(m).written += 1,
            // The reader went away: the rest of the output is discarded, without complaint.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => gone = true,
            Err(e) => log_limited!(log::Level::Warn, "console output: {e}"),
        }
    }
}

impl Drain {
    /// Writes what is buffered and ends the thread. It waits as long as the reader takes
    /// output (a slow one, e.g. a serial line, still gets the guest's last words), and gives
    /// up once it has taken nothing for `stall` (a stuck reader must not keep berth from
    /// exiting).
    pub fn finish(self, stall: Duration) {
        let (m, cv) = &*self.shared;
        let mut seen = {
            let mut st = devices::bus::lock(m);
            st.closed = true;
            st.written
        };
        cv.notify_all();
        let mut deadline = Instant::now() + stall;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
            let now = devices::bus::lock(m).written;
            if now != seen {
                seen = now;
                deadline = Instant::now() + stall;
            }
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A reader that takes nothing until told to, then everything.
    struct Stuck(mpsc::Receiver<()>, Arc<Mutex<Vec<u8>>>);
    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            self.1.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_reader_never_blocks_the_writer_and_the_newest_output_survives() {
        let (tx, rx) = mpsc::channel();
        let got = Arc::new(Mutex::new(Vec::new()));
        let (mut w, drain) = start(Box::new(Stuck(rx, got.clone())), 4096).unwrap();
        let t = Instant::now();
        for i in 0..10_000u32 {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        // 10 000 lines into a reader that takes nothing: no wait.
        assert!(t.elapsed() < Duration::from_secs(5));
        drop(tx); // the reader takes everything from now on
        drain.finish(Duration::from_secs(5));
        let got = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        assert!(got.ends_with("line 9999\n"), "{:?}", &got[got.len() - 40..]);
        assert!(got.len() <= 4096 + CHUNK, "{} bytes kept", got.len());
    }

    #[test]
    fn everything_arrives_in_order_when_the_reader_keeps_up() {
        let got = Arc::new(Mutex::new(Vec::new()));
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (mut w, drain) = start(Box::new(Sink(got.clone())), CAPACITY).unwrap();
        let want: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for c in want.chunks(7) {
            w.write_all(c).unwrap();
        }
        drain.finish(Duration::from_secs(5));
        assert_eq!(*got.lock().unwrap(), want);
    }

    /// A slow reader (a serial line) gets everything at the end, however long that takes,
    /// as long as it keeps reading.
    #[test]
    fn a_slow_reader_gets_everything_at_the_end() {
        struct Slow(Arc<Mutex<Vec<u8>>>);
        impl Write for Slow {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_millis(20));
                let n = b.len().min(512);
                self.0.lock().unwrap().extend_from_slice(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        let (mut w, drain) = start(Box::new(Slow(got.clone())), CAPACITY).unwrap();
        let want = vec![b'x'; 64 << 10];
        w.write_all(&want).unwrap();
        // 128 writes of 20 ms: about 2.6 s, longer than the stall allowance of 0.5 s.
        drain.finish(Duration::from_millis(500));
        assert_eq!(got.lock().unwrap().len(), want.len());
    }

    #[test]
    fn a_vanished_reader_is_not_an_error() {
        struct Gone;
        impl Write for Gone {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (mut w, drain) = start(Box::new(Gone), 1024).unwrap();
        for _ in 0..1000 {
            w.write_all(b"output nobody reads\n").unwrap();
        }
        drain.finish(Duration::from_secs(5));
    }
}
