//! The backend conformance kit: tiny guest programs that check, against any [`Hypervisor`],
//! what berth relies on (port and MMIO accesses with their widths and data, string port I/O,
//! HLT, memory slots, ioeventfds, interrupt injection, several vCPUs, kicks, register round
//! trips, system events). A porter runs it while writing a backend; `berth check` runs it on a
//! user's machine. Each case says PASS, FAIL (with what differed) or SKIP (with why).

#[cfg(target_arch = "aarch64")]
mod aarch64;
mod guest_ram;
mod recorder;
mod run;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use std::fmt;
use std::sync::mpsc;
use std::time::Duration;

use crate::Hypervisor;

use recorder::Recorder;
pub use recorder::{Access, AccessKind};

/// How long one case may take before it counts as hung (the vCPU never came back).
const CASE_TIMEOUT: Duration = Duration::from_secs(20);

/// What one case found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The backend did something other than what berth relies on: what differed.
    Fail(String),
    /// The case does not apply here: why.
    Skip(String),
}

/// A case's result: `Err` carries the FAIL or SKIP outcome.
type CaseResult = std::result::Result<(), Outcome>;

/// Turns any error into a FAIL naming the step that failed.
fn step<T, E: fmt::Display>(what: &str, r: std::result::Result<T, E>) -> Result<T, Outcome> {
    r.map_err(|e| Outcome::Fail(format!("{what}: {e}")))
}

/// Fails with `msg` unless `cond`.
fn check(cond: bool, msg: impl FnOnce() -> String) -> CaseResult {
    if cond {
        Ok(())
    } else {
        Err(Outcome::Fail(msg()))
    }
}

/// Fails unless the backend handed over exactly `want`.
fn expect_accesses(got: &[Access], want: &[Access]) -> CaseResult {
    check(got == want, || {
        format!("accesses differ:\n  want {want:?}\n  got  {got:?}")
    })
}

/// For guests that read once per width and store each result zero-extended to `slot` bytes:
/// the reads the handler must see (read `n` is `at(n)`) and the bytes the guest must store.
fn reads_and_stores(
    widths: &[usize],
    slot: usize,
    at: impl Fn(usize) -> (AccessKind, u64),
) -> (Vec<Access>, Vec<u8>) {
    let mut want = Vec::new();
    let mut stored = Vec::new();
    for (n, &w) in widths.iter().enumerate() {
        let ans = Recorder::answer(n as u8, w);
        let (kind, addr) = at(n);
        want.push(Access::new(kind, addr, &ans));
        stored.extend(&ans);
        stored.resize(stored.len() + slot - w, 0);
    }
    (want, stored)
}

/// One check of the kit.
pub struct Case {
    /// Short name, stable (used in tests and by `berth check --case`).
    pub name: &'static str,
    /// What it shows, one line.
    pub what: &'static str,
    run: fn(&dyn Hypervisor) -> CaseResult,
}

/// A case and its outcome.
#[derive(Clone, Debug)]
pub struct CaseReport {
    pub name: &'static str,
    pub what: &'static str,
    pub outcome: Outcome,
}

/// Every case of the kit for this architecture.
pub fn cases() -> &'static [Case] {
    #[cfg(target_arch = "x86_64")]
    return x86_64::CASES;
    #[cfg(target_arch = "aarch64")]
    return aarch64::CASES;
}

/// Runs every case whose name `filter` accepts against `hv`, one after the other. A case that
/// panics or hangs is a FAIL, and the kit goes on with the next.
pub fn run(hv: &'static dyn Hypervisor, filter: impl Fn(&str) -> bool) -> Vec<CaseReport> {
    if let Err(e) = crate::install_kick_handler() {
        return vec![CaseReport {
            name: "setup",
            what: "install the vCPU kick signal handler",
            outcome: Outcome::Fail(e.to_string()),
        }];
    }
    cases()
        .iter()
        .filter(|c| filter(c.name))
        .map(|c| CaseReport {
            name: c.name,
            what: c.what,
            outcome: run_case(hv, c),
        })
        .collect()
}

fn run_case(hv: &'static dyn Hypervisor, case: &Case) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let body = case.run;
    let spawned = std::thread::Builder::new()
        .name(format!("check-{}", case.name))
        .spawn(move || {
            // The case owns nothing shared beyond `hv`, which a panic leaves as it was.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(hv)));
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Outcome::Fail(format!("spawning the case's thread: {e}"));
    }
    match rx.recv_timeout(CASE_TIMEOUT) {
        Ok(Ok(Ok(()))) => Outcome::Pass,
        Ok(Ok(Err(outcome))) => outcome,
        Ok(Err(panic)) => Outcome::Fail(format!("panicked: {}", panic_message(&*panic))),
        // The thread stays behind, stuck in the backend; the kit's process ends soon anyway.
        Err(_) => Outcome::Fail(format!(
            "no result after {} s: the vCPU never came back",
            CASE_TIMEOUT.as_secs()
        )),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The reports as a table, one row per case, for people.
pub fn table(reports: &[CaseReport]) -> String {
    let width = reports
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:width$}  result  detail\n", "case");
    for r in reports {
        let (result, detail) = match &r.outcome {
            Outcome::Pass => ("PASS", r.what.to_string()),
            Outcome::Fail(why) => ("FAIL", why.clone()),
            Outcome::Skip(why) => ("SKIP", why.clone()),
        };
        out.push_str(&format!("{:width$}  {result:6}  {detail}\n", r.name));
    }
    let count = |f: fn(&Outcome) -> bool| reports.iter().filter(|r| f(&r.outcome)).count();
    out.push_str(&format!(
        "{} passed, {} failed, {} skipped\n",
        count(|o| *o == Outcome::Pass),
        count(|o| matches!(o, Outcome::Fail(_))),
        count(|o| matches!(o, Outcome::Skip(_)))
    ));
    out
}
