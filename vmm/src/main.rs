//! `berth`: boots Linux guests through berth's hypervisor, arch and device layers.

mod cli;
mod console;
mod error;
mod memory;
mod pci;
mod platform;
mod vcpu;
mod vm;
mod worker;

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use cli::{Cli, Command};
use vm::Outcome;

/// Exit status when the guest reported a crash (pvpanic, PSCI crash).
const EXIT_GUEST_CRASH: u8 = 3;
/// Exit status for a bug in berth itself (a panic).
const EXIT_INTERNAL: i32 = 70;

fn init_logging(level: Option<log::LevelFilter>) {
    let level = level
        .or_else(|| std::env::var("BERTH_LOG").ok()?.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    env_logger::Builder::new()
        .filter_level(level)
        .format(|buf, rec| {
            let prefix = match rec.level() {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                log::Level::Info => "",
                log::Level::Debug => "debug: ",
                log::Level::Trace => "trace: ",
            };
            writeln!(buf, "berth: {prefix}{}", rec.args())
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
    init_logging(cli.log_level);
    install_panic_hook();
    match cli.command {
        Command::Run(args) => match vm::run(&args, start) {
            Ok(outcome) => {
                let (what, code) = match outcome {
                    Outcome::PowerOff => ("the guest powered off".to_string(), 0),
                    Outcome::Reset => ("the guest reset; berth exits on reset".to_string(), 0),
                    Outcome::Crash => ("the guest reported a crash".to_string(), EXIT_GUEST_CRASH),
                    Outcome::UserQuit => ("quit at the user's request (Ctrl-A x)".to_string(), 0),
                    Outcome::Signal(s) => (format!("stopped by signal {s}"), (128 + s) as u8),
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
