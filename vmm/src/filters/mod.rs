//! seccomp filters for berth's own threads, as Cloud Hypervisor and Firecracker have them:
//! one allow-list for the vCPU threads, one for the control loop and berth's helper threads
//! (device supervisors and their log relays, the device control threads, the INTx call
//! watcher, the stdin feeder, the frontend's watchdogs). Each thread applies its filter itself
//! once its set-up is done (a filter is per thread; the threads a filtered thread starts
//! inherit it). `--seccomp log` logs a call outside them and lets it run; `off` applies none.
//!
//! Backends on threads of berth (`--disable-sandbox`) get no filter: they are spawned before
//! the control loop's filter and, like the jail, their seccomp is part of the sandbox that
//! flag turns off.

mod control;
mod vcpu;

use std::sync::OnceLock;

use hypervisor::RuntimeIoctls;
use sandbox::seccomp::{self, Allow, BpfProgram, Mode};

use crate::cli::SeccompMode;
use crate::error::{Error, Result};

/// Which of berth's filters a thread takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    Vcpu,
    /// The control loop and every helper thread.
    Control,
}

impl Filter {
    fn name(self) -> &'static str {
        match self {
            Filter::Vcpu => "vcpu",
            Filter::Control => "control",
        }
    }
}

struct Programs {
    vcpu: BpfProgram,
    control: BpfProgram,
}

/// The compiled filters; `None` inside with `--seccomp off`.
static PROGRAMS: OnceLock<Option<Programs>> = OnceLock::new();

/// ioctl only with these requests: the hypervisor's (the backend says which), and TCSETS
/// and TCGETS, which put the terminal back (glibc's tcsetattr reads the settings back to
/// check them) at the end, or from the SIGSYS reporter on any thread.
fn ioctls(requests: &[u64]) -> Vec<Allow> {
    requests
        .iter()
        .map(|&r| Allow::Ioctl(r))
        .chain([Allow::Ioctl(libc::TCSETS), Allow::Ioctl(libc::TCGETS)])
        .collect()
}

fn compile(list: &[&[Allow]], mode: Mode) -> Result<BpfProgram> {
    let all: Vec<Allow> = list.iter().flat_map(|l| l.iter().copied()).collect();
    seccomp::filter(&all, mode).map_err(Error::Filter)
}

/// Compiles berth's filters for `mode` and installs the SIGSYS reporter; before any thread
/// enters a filter. `hv` are the hypervisor backend's ioctl requests.
pub fn init(mode: SeccompMode, hv: &RuntimeIoctls) -> Result<()> {
    let mode = match mode {
        SeccompMode::Off => {
            let _ = PROGRAMS.set(None);
            return Ok(());
        }
        SeccompMode::On => Mode::Trap,
        SeccompMode::Log => Mode::Log,
    };
    let programs = Programs {
        vcpu: compile(&[control::COMMON, vcpu::VCPU, &ioctls(&hv.vcpu)], mode)?,
        control: compile(&[control::COMMON, control::CONTROL, &ioctls(&hv.vm)], mode)?,
    };
    seccomp::install_reporter_with(
        "berth",
        None,
        b"is outside that filter; berth stops (exit status 159)\n",
        Some(crate::console::restore_terminal_after_signal),
    )
    .map_err(Error::Filter)?;
    let _ = PROGRAMS.set(Some(programs));
    Ok(())
}

/// Puts the calling thread under `filter` (nothing before [`init`] or with `--seccomp off`).
/// A failure is logged: the thread carries on unfiltered rather than stop the VM.
pub fn enter(filter: Filter) {
    let Some(Some(p)) = PROGRAMS.get() else {
        return;
    };
    let prog = match filter {
        Filter::Vcpu => &p.vcpu,
        Filter::Control => &p.control,
    };
    if let Err(e) = seccomp::apply_this_thread_named(prog, filter.name()) {
        log::error!(
            "thread {:?}: cannot apply berth's {} seccomp filter: {e}",
            std::thread::current().name().unwrap_or("?"),
            filter.name()
        );
    }
}

/// Starts a named helper thread of berth that enters the control filter first.
pub fn spawn_helper<F>(name: String, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new().name(name).spawn(move || {
        enter(Filter::Control);
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_in_both_modes() {
        let hv = RuntimeIoctls {
            vcpu: vec![0xae80, 0x4008_ae61],
            vm: vec![0x4008_ae61],
        };
        for mode in [Mode::Trap, Mode::Log] {
            compile(&[control::COMMON, vcpu::VCPU, &ioctls(&hv.vcpu)], mode).unwrap();
            compile(&[control::COMMON, control::CONTROL, &ioctls(&hv.vm)], mode).unwrap();
        }
    }

    #[test]
    fn no_call_is_listed_twice() {
        for list in [vcpu::VCPU, control::CONTROL] {
            let mut all: Vec<Allow> = control::COMMON.iter().chain(list).copied().collect();
            let n = all.len();
            all.sort_by_key(|a| format!("{a:?}"));
            all.dedup();
            assert_eq!(all.len(), n);
        }
    }
}
