//! Running a kit guest's vCPU to its end, with a watchdog, for both architectures.

use std::time::{Duration, Instant};

use super::recorder::Recorder;
use super::{check, step, CaseResult, Outcome};
use crate::{Kicker, Vcpu, VcpuExit};

/// How long a guest may run before the kit gives up and kicks it out.
const RUN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `vcpu` until the guest says it is done (the done port; on aarch64 the done address),
/// halts or stops, or `after_io` (called after each I/O exit) says it is finished; returns
/// the exit that ended the run unless it was I/O. A guest still running after a few seconds
/// is kicked out: FAIL.
pub fn run_vcpu(
    vcpu: &mut dyn Vcpu,
    io: &Recorder,
    mut after_io: impl FnMut(&Recorder) -> Result<bool, Outcome>,
) -> Result<Vec<VcpuExit>, Outcome> {
    let watchdog = Watchdog::start(RUN_TIMEOUT);
    let start = Instant::now();
    let mut exits = Vec::new();
    loop {
        match step("run", vcpu.run(io))? {
            VcpuExit::Io => {
                if after_io(io)? || io.done() {
                    return Ok(exits);
                }
            }
            VcpuExit::Interrupted if start.elapsed() >= RUN_TIMEOUT => {
                drop(watchdog);
                return Err(Outcome::Fail(format!(
                    "the guest did not finish within {} s (accesses so far: {:?})",
                    RUN_TIMEOUT.as_secs(),
                    io.accesses()
                )));
            }
            VcpuExit::Interrupted => {}
            other => {
                exits.push(other);
                return Ok(exits);
            }
        }
    }
}

/// Kicks the thread that made it, every 10 ms from `after` on, until dropped.
pub struct Watchdog {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(after: Duration) -> Self {
        let kicker = Kicker::for_current_thread();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            use std::sync::mpsc::RecvTimeoutError::Timeout;
            if rx.recv_timeout(after) != Err(Timeout) {
                return;
            }
            loop {
                kicker.kick();
                if rx.recv_timeout(Duration::from_millis(10)) != Err(Timeout) {
                    return;
                }
            }
        });
        Watchdog {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `vcpu` (a guest spinning for ever) while another thread kicks it: `run` must come
/// back as `Interrupted`.
pub fn kick_out_of_run(vcpu: &mut dyn Vcpu) -> CaseResult {
    let kicker = Kicker::for_current_thread();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let kicks = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        // Repeat until the vCPU is out: a kick just before entry is not seen.
        use std::sync::mpsc::RecvTimeoutError::Timeout;
        while rx.recv_timeout(Duration::from_millis(10)) == Err(Timeout) {
            kicker.kick();
        }
    });
    let io = Recorder::default();
    let r = vcpu.run(&io);
    drop(tx);
    let _ = kicks.join();
    let exit = step("run", r)?;
    check(matches!(exit, VcpuExit::Interrupted), || {
        format!("want Interrupted, got {exit:?}")
    })
}
