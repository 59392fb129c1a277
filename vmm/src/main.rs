//! `berth`: boots Linux guests through berth's hypervisor, arch and device layers.

mod check;
mod cli;
mod console;
mod device_cmd;
mod error;
mod events;
mod filters;
mod guest_output;
mod interrupts;
mod memory;
mod pci;
mod platform;
mod vcpu;
mod vhost_user;
mod vm;

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use cli::{Cli, Command};
use events::Outcome;

/// Exit status when the guest reported a crash (pvpanic, PSCI crash).
const EXIT_GUEST_CRASH: u8 = 3;
/// Exit status when a device failed (its process died, or its backend stopped answering)
/// and berth stopped the guest.
const EXIT_DEVICE_FAILED: u8 = 4;
/// Exit status for a bug in berth itself (a panic).
const EXIT_INTERNAL: i32 = 70;

fn init_logging(level: Option<log::LevelFilter>, prefix: String) {
    let level = level
        .or_else(|| std::env::var("BERTH_LOG").ok()?.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    env_logger::Builder::new()
        .filter_level(level)
        .format(move |buf, rec| {
            let tag = &prefix;
            let level = match rec.level() {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                log::Level::Info => "",
                log::Level::Debug => "debug: ",
                log::Level::Trace => "trace: ",
            };
            writeln!(buf, "{tag}: {level}{}", rec.args())
        })
        .init();
}

/// A panic is a berth bug: put the terminal back, say so in one line, and exit (a panicking
/// vCPU thread must not leave the VM half-alive).
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        console::restore_terminal();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        eprintln!("berth: internal error{at}: {msg} (please report this bug)");
        std::process::exit(EXIT_INTERNAL);
    }));
}

fn main() -> ExitCode {
    let start = Instant::now();
    let cli = Cli::parse();
    let tag = match &cli.command {
        Command::Device(d) => format!("berth[{}]", d.name.as_deref().unwrap_or("device")),
        Command::Run(_) | Command::Check(_) => "berth".to_string(),
    };
    init_logging(cli.log_level, tag);
    install_panic_hook();
    match cli.command {
        Command::Device(args) => match device_cmd::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Check(args) => check::run(&args),
        Command::Run(args) => match vm::run(&args, start) {
            Ok(outcome) => {
                let (what, code) = match outcome {
                    Outcome::PowerOff => ("the guest powered off".to_string(), 0),
                    Outcome::Reset => ("the guest reset; berth exits on reset".to_string(), 0),
                    Outcome::Crash => ("the guest reported a crash".to_string(), EXIT_GUEST_CRASH),
                    Outcome::UserQuit => ("quit at the user's request (Ctrl-A x)".to_string(), 0),
                    Outcome::Signal(s) => (format!("stopped by signal {s}"), (128 + s) as u8),
                    Outcome::DeviceFailed { device, what } => {
                        log::error!("device {device} failed: {what}; the guest was stopped");
                        log::debug!("exiting {} us after start", start.elapsed().as_micros());
                        return ExitCode::from(EXIT_DEVICE_FAILED);
                    }
                };
                log::info!("{what}");
                log::debug!("exiting {} us after start", start.elapsed().as_micros());
                ExitCode::from(code)
            }
            Err(e) => {
                log::error!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}
