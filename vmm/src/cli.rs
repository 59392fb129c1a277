//! Command line: `berth run ...`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::platform::DEFAULT_CMDLINE;

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
    /// Serve one virtio device as a vhost-user backend on a socket, for any vhost-user
    /// frontend (berth's --vhost-user, QEMU, Cloud Hypervisor). berth also runs its own
    /// device processes this way.
    Device(DeviceArgs),
    /// Run the hypervisor conformance kit: tiny guests that check what berth needs of the
    /// backend (port and MMIO I/O, string I/O, memory slots, ioeventfds, kicks, several
    /// vCPUs...), printed as a table. Exits 1 if any case fails.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Hypervisor backend to check.
    #[arg(long, value_enum, default_value_t = HypervisorChoice::Auto)]
    pub hypervisor: HypervisorChoice,
    /// Run only the cases with these names (repeat for more); all by default.
    #[arg(long = "case", value_name = "NAME")]
    pub cases: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Name for log lines.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Lock this process down before serving (berth's own jailed device processes, started
    /// in namespaces of their own): report to this inherited fd.
    #[arg(long, value_name = "FD", hide = true)]
    pub jail_report_fd: Option<i32>,
    /// The jail's seccomp mode.
    #[arg(long, value_enum, default_value_t = SeccompMode::On, hide = true)]
    pub seccomp: SeccompMode,
    #[command(subcommand)]
    pub kind: DeviceKind,
}

#[derive(Debug, Subcommand)]
pub enum DeviceKind {
    /// virtio-blk on a raw image.
    Blk {
        #[command(flatten)]
        serve: ServeArgs,
        /// The disk: path=PATH[,readonly=on][,id=NAME].
        #[arg(long, value_name = "SPEC", value_parser = parse_disk)]
        disk: DiskSpec,
        /// The image, already open and locked (berth's own device processes).
        #[arg(long, value_name = "FD", hide = true)]
        disk_fd: Option<i32>,
    },
    /// virtio-rng fed by the host's getrandom.
    Rng {
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// virtio-console: guest output to stdout, stdin to the guest.
    Console {
        #[command(flatten)]
        serve: ServeArgs,
        /// Input fd instead of stdin (berth's own device processes).
        #[arg(long, value_name = "FD", hide = true)]
        input_fd: Option<i32>,
        /// Output fd instead of stdout (berth's own device processes).
        #[arg(long, value_name = "FD", hide = true)]
        output_fd: Option<i32>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen on this Unix socket path and serve the first frontend that connects.
    #[arg(long, value_name = "PATH", required_unless_present = "listen_fd")]
    pub socket: Option<PathBuf>,
    /// Accept on this inherited listening socket (berth's own device processes).
    #[arg(long, value_name = "FD", hide = true, conflicts_with = "socket")]
    pub listen_fd: Option<i32>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kernel image: on x86_64 a bzImage or ELF vmlinux, on aarch64 an Image (or Image.gz).
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

    /// Where the serial console (COM1) goes: stdio, file=PATH or none [default: stdio, or
    /// none with --console virtio].
    #[arg(long, value_name = "DEST", value_parser = parse_serial)]
    pub serial: Option<SerialDest>,

    /// Which device gets berth's stdin and stdout: the UART (ttyS0) or a virtio console (hvc0).
    #[arg(long, value_enum, default_value_t = ConsoleChoice::Serial)]
    pub console: ConsoleChoice,

    /// A virtio-blk disk: path=PATH[,readonly=on][,id=NAME]; repeat for more (vda, vdb, ...).
    #[arg(long = "disk", value_name = "SPEC", value_parser = parse_disk)]
    pub disks: Vec<DiskSpec>,

    /// A virtio-rng device fed from the host's getrandom.
    #[arg(long)]
    pub rng: bool,

    /// Log the time from berth's start until the guest writes 123 to the boot-timer address.
    #[arg(long)]
    pub boot_timer: bool,

    /// Hypervisor backend.
    #[arg(long, value_enum, default_value_t = HypervisorChoice::Auto)]
    pub hypervisor: HypervisorChoice,
    /// Interrupt controller: kernel (all of it in the hypervisor), or split (x86_64: only
    /// the local APICs in the hypervisor, berth's IOAPIC in user space, no PIC or PIT).
    #[arg(long, value_enum, default_value_t = IrqchipChoice::Kernel)]
    pub irqchip: IrqchipChoice,
    /// A virtio device served by an external vhost-user backend:
    /// type=blk|rng|console,socket=PATH; repeat for more.
    #[arg(long = "vhost-user", value_name = "SPEC", value_parser = parse_vhost_user)]
    pub vhost_user: Vec<VhostUserSpec>,
    /// Run berth's own device backends as threads of berth instead of one jailed process
    /// each (for debugging; the devices are then not isolated from berth).
    #[arg(long)]
    pub disable_sandbox: bool,
    /// seccomp filters of the device processes and of berth's own threads: on (a call
    /// outside the policy stops the device or berth, and says which), log (the kernel logs it
    /// and lets it run), off.
    #[arg(long, value_enum, default_value_t = SeccompMode::On)]
    pub seccomp: SeccompMode,
    /// Pages backing guest RAM: thp (transparent huge pages on a private tmpfs, falling back
    /// to 4 KiB pages), off (4 KiB pages), 2M or 1G (hugetlbfs, from the host's pool).
    #[arg(long, value_enum, default_value_t = HugePages::Thp)]
    pub hugepages: HugePages,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SeccompMode {
    On,
    Log,
    Off,
}

impl SeccompMode {
    pub fn name(self) -> &'static str {
        match self {
            SeccompMode::On => "on",
            SeccompMode::Log => "log",
            SeccompMode::Off => "off",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HugePages {
    /// Transparent huge pages on a private huge=always tmpfs; 4 KiB pages where refused.
    Thp,
    /// 4 KiB pages (a plain memfd).
    Off,
    /// hugetlbfs 2 MiB pages.
    #[value(name = "2M")]
    Size2M,
    /// hugetlbfs 1 GiB pages.
    #[value(name = "1G")]
    Size1G,
}

impl HugePages {
    /// The hugetlbfs page size in bytes (0 for thp and off).
    pub fn page_size(self) -> u64 {
        match self {
            HugePages::Size2M => 2 << 20,
            HugePages::Size1G => 1 << 30,
            HugePages::Thp | HugePages::Off => 0,
        }
    }
}

impl RunArgs {
    /// The serial destination, defaulting by console choice.
    pub fn serial_dest(&self) -> SerialDest {
        match (&self.serial, self.console) {
            (Some(s), _) => s.clone(),
            (None, ConsoleChoice::Serial) => SerialDest::Stdio,
            (None, ConsoleChoice::Virtio) => SerialDest::None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConsoleChoice {
    /// The 16550 UART (guest console=ttyS0).
    Serial,
    /// A virtio console (guest console=hvc0).
    Virtio,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub read_only: bool,
    pub id: Option<String>,
}

/// Longest serial a virtio-blk device reports (VIRTIO_BLK_ID_BYTES).
const DISK_ID_MAX: usize = 20;

fn parse_disk(s: &str) -> Result<DiskSpec, String> {
    let mut path = None;
    let mut read_only = false;
    let mut id = None;
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("path", p)) if !p.is_empty() => path = Some(PathBuf::from(p)),
            Some(("readonly", "on" | "true")) => read_only = true,
            Some(("readonly", "off" | "false")) => read_only = false,
            Some(("id", v)) if !v.is_empty() && v.len() <= DISK_ID_MAX && v.is_ascii() => {
                id = Some(v.to_string())
            }
            Some(("id", _)) => {
                return Err(format!("id must be 1 to {DISK_ID_MAX} ASCII characters"))
            }
            _ => {
                return Err(format!(
                    "unknown part {part:?}: expected path=PATH[,readonly=on][,id=NAME]"
                ))
            }
        }
    }
    Ok(DiskSpec {
        path: path.ok_or("missing path=PATH")?,
        read_only,
        id,
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VhostUserSpec {
    pub kind: crate::vhost_user::Kind,
    pub socket: PathBuf,
}

fn parse_vhost_user(s: &str) -> Result<VhostUserSpec, String> {
    let mut kind = None;
    let mut socket = None;
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("type", t)) => {
                kind = Some(crate::vhost_user::Kind::parse(t).ok_or_else(|| {
                    format!("unknown device type {t:?}: expected blk, rng or console")
                })?)
            }
            Some(("socket", p)) if !p.is_empty() => socket = Some(PathBuf::from(p)),
            _ => {
                return Err(format!(
                    "unknown part {part:?}: expected type=blk|rng|console,socket=PATH"
                ))
            }
        }
    }
    Ok(VhostUserSpec {
        kind: kind.ok_or("missing type=blk|rng|console")?,
        socket: socket.ok_or("missing socket=PATH")?,
    })
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
pub enum IrqchipChoice {
    /// The hypervisor's whole interrupt controller.
    Kernel,
    /// berth's IOAPIC, the hypervisor's local APICs (x86_64 only).
    Split,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HypervisorChoice {
    /// The best backend available on this host.
    Auto,
    /// Linux KVM (/dev/kvm).
    Kvm,
    /// Microsoft Hypervisor (/dev/mshv; a berth built with the mshv feature).
    Mshv,
}

impl HypervisorChoice {
    /// The backend asked for; `None` lets the hypervisor layer pick.
    pub fn kind(self) -> Option<hypervisor::HypervisorKind> {
        match self {
            HypervisorChoice::Auto => None,
            HypervisorChoice::Kvm => Some(hypervisor::HypervisorKind::Kvm),
            HypervisorChoice::Mshv => Some(hypervisor::HypervisorKind::Mshv),
        }
    }
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
            "--irqchip",
            "split",
            "-l",
            "debug",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(r.cpus, 2);
        assert_eq!(r.memory, 256);
        assert_eq!(r.serial_dest(), SerialDest::File("/tmp/x".into()));
        assert!(r.boot_timer);
        assert_eq!(r.hypervisor, HypervisorChoice::Kvm);
        assert_eq!(r.irqchip, IrqchipChoice::Split);
        assert_eq!(cli.log_level, Some(log::LevelFilter::Debug));
    }

    #[test]
    fn defaults_and_bad_serial() {
        let cli = Cli::try_parse_from(["berth", "run", "--kernel", "k"]).unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!((r.cpus, r.memory), (1, 512));
        assert_eq!(r.cmdline, DEFAULT_CMDLINE);
        assert_eq!(r.serial_dest(), SerialDest::Stdio);
        assert!(r.disks.is_empty() && !r.rng);
        assert_eq!(r.irqchip, IrqchipChoice::Kernel);
        assert!(
            Cli::try_parse_from(["berth", "run", "--kernel", "k", "--serial", "file="]).is_err()
        );
        assert!(Cli::try_parse_from(["berth", "run", "--kernel", "k", "--serial", "tty"]).is_err());
    }

    #[test]
    fn disks_rng_and_virtio_console() {
        let cli = Cli::try_parse_from([
            "berth",
            "run",
            "--kernel",
            "k",
            "--disk",
            "path=/a.img",
            "--disk",
            "path=/b.img,readonly=on,id=data",
            "--rng",
            "--console",
            "virtio",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            r.disks,
            vec![
                DiskSpec {
                    path: "/a.img".into(),
                    read_only: false,
                    id: None
                },
                DiskSpec {
                    path: "/b.img".into(),
                    read_only: true,
                    id: Some("data".into())
                }
            ]
        );
        assert!(r.rng);
        assert_eq!(
            r.serial_dest(),
            SerialDest::None,
            "the UART is silent by default"
        );
        for bad in [
            "readonly=on",
            "path=",
            "path=/a,ro",
            "path=/a,id=",
            "path=/a,readonly=yes",
        ] {
            assert!(parse_disk(bad).is_err(), "{bad}");
        }
        assert!(parse_disk(&format!("path=/a,id={}", "x".repeat(21))).is_err());
    }
}
