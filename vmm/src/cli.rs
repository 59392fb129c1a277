//! Command line: `berth run ...`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "A virtual machine monitor for Linux guests"
)]
pub struct Cli {
    /// Log level: error, warn, info, debug or trace (default: $BERTH_LOG, else info).
    #[arg(short = 'l', long, global = true, value_name = "LEVEL")]
    pub log_level: Option<log::LevelFilter>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a Linux kernel.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kernel image: an x86_64 bzImage or ELF vmlinux.
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,

    /// Initial ramdisk (initramfs).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,

    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,

    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,

    /// Guest memory in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 512)]
    pub memory: u64,

    /// Where the serial console (COM1) goes: stdio, file=PATH or none.
    #[arg(long, value_name = "DEST", default_value = "stdio", value_parser = parse_serial)]
    pub serial: SerialDest,

    /// Log the time from berth's start until the guest writes 123 to the boot-timer address.
    #[arg(long)]
    pub boot_timer: bool,

    /// Hypervisor backend.
    #[arg(long, value_enum, default_value_t = HypervisorChoice::Auto)]
    pub hypervisor: HypervisorChoice,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialDest {
    Stdio,
    File(PathBuf),
    None,
}

fn parse_serial(s: &str) -> Result<SerialDest, String> {
    match s {
        "stdio" => Ok(SerialDest::Stdio),
        "none" => Ok(SerialDest::None),
        _ => match s.strip_prefix("file=") {
            Some(p) if !p.is_empty() => Ok(SerialDest::File(PathBuf::from(p))),
            _ => Err("expected stdio, file=PATH or none".to_string()),
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HypervisorChoice {
    /// The best backend available on this host.
    Auto,
    /// Linux KVM (/dev/kvm).
    Kvm,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_run_line() {
        let cli = Cli::try_parse_from([
            "berth",
            "run",
            "--kernel",
            "k",
            "--initrd",
            "i",
            "--cpus",
            "2",
            "--memory",
            "256",
            "--serial",
            "file=/tmp/x",
            "--boot-timer",
            "--hypervisor",
            "kvm",
            "-l",
            "debug",
        ])
        .unwrap();
        let Command::Run(r) = cli.command;
        assert_eq!(r.cpus, 2);
        assert_eq!(r.memory, 256);
        assert_eq!(r.serial, SerialDest::File("/tmp/x".into()));
        assert!(r.boot_timer);
        assert_eq!(r.hypervisor, HypervisorChoice::Kvm);
        assert_eq!(cli.log_level, Some(log::LevelFilter::Debug));
    }

    #[test]
    fn defaults_and_bad_serial() {
        let cli = Cli::try_parse_from(["berth", "run", "--kernel", "k"]).unwrap();
        let Command::Run(r) = cli.command;
        assert_eq!((r.cpus, r.memory), (1, 512));
        assert_eq!(r.cmdline, DEFAULT_CMDLINE);
        assert_eq!(r.serial, SerialDest::Stdio);
        assert!(
            Cli::try_parse_from(["berth", "run", "--kernel", "k", "--serial", "file="]).is_err()
        );
        assert!(Cli::try_parse_from(["berth", "run", "--kernel", "k", "--serial", "tty"]).is_err());
    }
}
