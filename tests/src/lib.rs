//! # berth-tests: the end-to-end harness
//!
//! Boots real Debian guests under the `berth` binary and hands the test what happened: the
//! guest's console, berth's log and exit status. See `docs/testing.md` for the whole story.
//!
//! ## Where berth runs
//!
//! - [`Mode::Native`]: `/dev/kvm` exists, can be opened, and is hardware-backed (`kvm_intel` or
//!   `kvm_amd` loaded, no `kvm_pvm`): berth runs here as a child process.
//! - [`Mode::EmulatedHost`]: otherwise. QEMU (TCG, `-cpu max`, which emulates SVM with nested
//!   paging) boots the same Debian kernel as an emulated host ("L1") from an initramfs holding
//!   busybox, the kvm modules, berth with its shared libraries, the guest's kernel and initrd and
//!   the test's files. L1's `/init` loads kvm, runs berth, prints berth's stdout, stderr and exit
//!   status base64-encoded between markers that carry a per-run nonce, and powers off; the
//!   harness parses them back ([`host`]). Slow (tens of seconds) but real KVM.
//!
//! `BERTH_E2E_MODE=native|emulated|skip` forces a mode; `skip` makes every run return `None`
//! (the test prints "skipped" and passes). With no usable mode a run panics saying why: nothing
//! is skipped silently.
//!
//! ## Writing a test
//!
//! ```no_run
//! use berth_tests::{GuestRun, Kernel};
//! use std::time::Duration;
//!
//! let Some(out) = GuestRun::new(Kernel::BzImage)
//!     .args(["--cpus", "2", "--memory", "512"])
//!     .modules(["virtio_blk"])
//!     .script("cat /proc/cpuinfo | grep -c ^processor\nreboot -f\n")
//!     .timeout(Duration::from_secs(300))
//!     .run()
//! else {
//!     return; // BERTH_E2E_MODE=skip
//! };
//! out.assert_success().assert_console_contains("BERTH-GUEST-INIT");
//! ```
//!
//! The guest initramfs (`scripts/guest-assets.sh`) runs the test's script as `/test.sh` after
//! mounting proc/sys/dev and loading the `berth.modules=` modules, prints `BERTH-TEST-EXIT <n>`
//! and reboots, which ends berth with status 0. Assertions on an [`Outcome`] panic with the
//! console, berth's log and the tail of the emulated host's console.
//!
//! To run something other than berth in the emulated host (QEMU for a benchmark, a kvm probe),
//! use [`HostRun`].
//!
//! ## Environment
//!
//! | variable | meaning |
//! |---|---|
//! | `BERTH_BIN` | the berth binary (default `<workspace>/target/release/berth`) |
//! | `BERTH_BIN_AARCH64` | the aarch64 berth, for aarch64 guests (default `<workspace>/target/aarch64/aarch64-unknown-linux-gnu/release/berth`) |
//! | `BERTH_ASSETS` | the asset cache (default `~/.cache/berth`), filled by `scripts/guest-assets.sh` |
//! | `BERTH_E2E_MODE` | `native`, `emulated` or `skip` (default: native when possible) |
//! | `BERTH_E2E_VERBOSE` | `1`: echo berth's / QEMU's output live and print every outcome |
//! | `BERTH_E2E_KEEP` | `1`: keep every run's work directory (always kept when a test fails) |

pub mod assets;
pub mod cpio;
pub mod ext4;
pub mod guest;
pub mod host;
pub mod jail;
mod process;

pub use assets::Assets;
pub use guest::{GuestRun, Initrd, Kernel, Outcome, DEFAULT_CMDLINE, HOST_SCRIPT_OUT};
pub use host::{HostFile, HostOutcome, HostRun};

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// A guest architecture (and the architecture of the host berth runs on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    /// Runs natively on an aarch64 KVM host, else in the emulated aarch64 host (QEMU TCG,
    /// `-M virt,virtualization=on`, KVM at EL2).
    Aarch64,
}

impl Arch {
    /// The name used for directories and binaries: `x86_64`, `aarch64`.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The architecture this harness was compiled for.
    pub const fn this_host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        }
    }
}

/// Where berth ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// On this machine, against its hardware-backed /dev/kvm.
    Native,
    /// Inside an emulated host (QEMU TCG) that has real KVM.
    EmulatedHost,
}

/// Why this machine cannot run `arch` guests natively, or `Ok` if it can.
pub fn native_kvm(arch: Arch) -> Result<(), String> {
    if arch != Arch::this_host() {
        return Err(format!(
            "this is a {} host, the guest is {}",
            Arch::this_host().name(),
            arch.name()
        ));
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err(
            "/dev/kvm is PVM (software KVM, /sys/module/kvm_pvm): it cannot boot Linux \
                    at a usable speed"
                .to_string(),
        );
    }
    if arch == Arch::X86_64
        && !Path::new("/sys/module/kvm_intel").exists()
        && !Path::new("/sys/module/kvm_amd").exists()
    {
        return Err("/dev/kvm is not backed by kvm_intel or kvm_amd".to_string());
    }
    Ok(())
}

/// The QEMU versions the emulated hosts were last proven with (every end-to-end test green):
/// Debian 12's 7.2 and bookworm-backports' 10.0.2 (what scripts/host-deps.sh installs next to
/// a preinstalled qemu-utils 10).
pub const PROVEN_QEMU: &str = "10.0.2 and 7.2";

/// The first line of `qemu --version` (e.g. "QEMU emulator version 10.0.2 (...)").
pub fn emulator_version(qemu: &Path) -> String {
    std::process::Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("{} --version failed", qemu.display()))
}

/// The QEMU that emulates an `arch` host, if it is on PATH.
pub fn emulator(arch: Arch) -> Option<PathBuf> {
    let name = format!("qemu-system-{}", arch.name());
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(&name))
        .find(|p| p.is_file())
}

/// Decides where runs for `arch` happen: `None` means skip (BERTH_E2E_MODE=skip). Panics with
/// the reason when neither mode is possible or the forced one is not.
pub fn mode(arch: Arch) -> Option<Mode> {
    let forced = std::env::var("BERTH_E2E_MODE").unwrap_or_default();
    let qemu = || {
        emulator(arch).ok_or_else(|| {
            format!(
                "qemu-system-{} is not installed (scripts/test.sh installs it)",
                arch.name()
            )
        })
    };
    match forced.as_str() {
        "skip" => {
            eprintln!("berth-tests: skipped (BERTH_E2E_MODE=skip)");
            None
        }
        "native" => match native_kvm(arch) {
            Ok(()) => Some(Mode::Native),
            Err(why) => panic!("BERTH_E2E_MODE=native, but {why}"),
        },
        "emulated" => match qemu() {
            Ok(_) => Some(Mode::EmulatedHost),
            Err(why) => panic!("BERTH_E2E_MODE=emulated, but {why}"),
        },
        "" | "auto" => match (native_kvm(arch), qemu()) {
            (Ok(()), _) => Some(Mode::Native),
            (Err(_), Ok(_)) => Some(Mode::EmulatedHost),
            (Err(n), Err(q)) => panic!(
                "cannot run {} guests: no native KVM ({n}) and no emulated host ({q}); \
                 set BERTH_E2E_MODE=skip to skip the end-to-end tests",
                arch.name()
            ),
        },
        other => panic!("BERTH_E2E_MODE={other:?}: expected native, emulated, skip or auto"),
    }
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The berth binary for `arch`: `$BERTH_BIN_<ARCH>` (e.g. `BERTH_BIN_AARCH64`), or for this
/// host's architecture `$BERTH_BIN`, else the build's output: `<workspace>/target/release/berth`
/// for this host, `<workspace>/target/<arch>/<arch>-unknown-linux-gnu/release/berth` (what
/// `scripts/build-aarch64.sh` makes) for another.
pub fn berth_bin(arch: Arch) -> Result<PathBuf, String> {
    let vars = [
        format!("BERTH_BIN_{}", arch.name().to_uppercase()),
        "BERTH_BIN".to_string(),
    ];
    let native = arch == Arch::this_host();
    for var in vars.iter().take(if native { 2 } else { 1 }) {
        if let Some(p) = std::env::var_os(var) {
            let p = PathBuf::from(p);
            if !p.is_absolute() {
                return Err(format!("{var}={} must be an absolute path", p.display()));
            }
            if !p.is_file() {
                return Err(format!("{var}={}: no such file", p.display()));
            }
            return Ok(p);
        }
    }
    let (p, how) = if native {
        (
            workspace_root().join("target/release/berth"),
            "run scripts/test.sh (or `cargo build --release -p berth`)".to_string(),
        )
    } else {
        let a = arch.name();
        (
            workspace_root().join(format!("target/{a}/{a}-unknown-linux-gnu/release/berth")),
            format!("run scripts/build-{a}.sh"),
        )
    };
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "no berth binary at {}: {how}, or set {} to an absolute path",
            p.display(),
            vars[0]
        ))
    }
}

pub(crate) fn env_flag(name: &str) -> bool {
    matches!(std::env::var(name).as_deref(), Ok("1" | "yes" | "true"))
}

/// Held while a run uses the machine: one run at a time in this process (tests run in threads)
/// and, through a lock file, across processes (two `cargo test`s, two test binaries).
pub struct RunLock {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

/// Takes the machine for a QEMU a test starts itself (GuestRun and HostRun take it already).
pub fn lock_machine() -> RunLock {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let guard = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let path = std::env::temp_dir().join("berth-e2e.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open the lock file {}: {e}", path.display()));
    // SAFETY: flock on a file descriptor we own; blocks until no other process holds it.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if r != 0 {
        panic!(
            "flock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    RunLock {
        _file: file,
        _guard: guard,
    }
}

/// A string that differs for every run (markers, directory names).
pub(crate) fn nonce() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        t & 0xffff_ffff
    )
}

/// A run's scratch directory under `$TMPDIR/berth-e2e/`. Removed when dropped, unless the
/// thread is panicking (a failed assertion: kept for inspection) or `BERTH_E2E_KEEP=1`.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub(crate) fn new(what: &str) -> WorkDir {
        let path = std::env::temp_dir()
            .join("berth-e2e")
            .join(format!("{what}-{}", nonce()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        WorkDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() || env_flag("BERTH_E2E_KEEP") {
            eprintln!("berth-tests: work directory kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The shared assets of `arch`, loaded once per process; panics with what to run if missing.
pub fn assets(arch: Arch) -> &'static Assets {
    static X86: OnceLock<Result<Assets, String>> = OnceLock::new();
    static ARM: OnceLock<Result<Assets, String>> = OnceLock::new();
    let cell = match arch {
        Arch::X86_64 => &X86,
        Arch::Aarch64 => &ARM,
    };
    match cell.get_or_init(|| Assets::load(arch)) {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}
