//! `berth device blk|rng|console`: one virtio device as a vhost-user backend. berth starts
//! its own device processes this way (with an inherited listening socket and resources);
//! anyone may start one on a socket path for any vhost-user frontend.

use std::fs::File;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use devices::virtio::backend::{Allow, NoHooks, ServeHooks, FRAMEWORK_SYSCALLS};
use devices::virtio::blk;
use sandbox::report::{self, Report};

use crate::cli::{DeviceArgs, DeviceKind, SeccompMode, ServeArgs};
use crate::error::{Error, Result};
use crate::vhost_user::{serve_backend, Backend};

/// Fds a jailed device may have open at once: its inherited ones, the framework's epoll and
/// event fds, the socket and its clone, guest RAM regions, three fds per queue.
const JAIL_NOFILE: u64 = 32;
/// Heap and private mappings of a jailed device (thread stacks included; guest RAM is shared
/// and does not count).
const JAIL_DATA: u64 = 256 << 20;

pub fn run(args: DeviceArgs) -> Result<()> {
    let name = args.name.clone().unwrap_or_else(|| "device".into());
    let (serve, backend) = match args.kind {
        DeviceKind::Blk {
            serve,
            disk,
            disk_fd,
        } => {
            let image = match disk_fd {
                Some(fd) => blk::from_file(inherited(fd, "--disk-fd")?, &disk.path, disk.read_only),
                None => blk::open_image(&disk.path, disk.read_only),
            }
            .map_err(Error::Disk)?;
            let backend = Backend::Blk {
                image,
                read_only: disk.read_only,
                id: disk.id,
            };
            (serve, backend)
        }
        DeviceKind::Rng { serve } => (serve, Backend::Rng),
        DeviceKind::Console {
            serve,
            input_fd,
            output_fd,
        } => {
            let input = inherited(input_fd.unwrap_or(libc::STDIN_FILENO), "--input-fd")?;
            let output = inherited(output_fd.unwrap_or(libc::STDOUT_FILENO), "--output-fd")?;
            (serve, Backend::Console { input, output })
        }
    };
    let listener = listener(&serve)?;
    match args.jail_report_fd {
        None => serve_backend(backend, listener, &NoHooks),
        Some(fd) => {
            let mut out = inherited(fd, "--jail-report-fd")?;
            let jail = Jail {
                mode: args.seccomp,
                test_forbidden_call: std::env::var("BERTH_TEST_DEVICE_FORBIDDEN_CALL")
                    .is_ok_and(|d| d == name),
                test_panic: std::env::var("BERTH_TEST_DEVICE_PANIC").is_ok_and(|d| d == name),
            };
            // Before anything untrusted: the guest's first request comes after SET_MEM_TABLE.
            let keep = keep_fds(&backend, &listener, fd);
            let limits = sandbox::lockdown::Limits {
                keep_fds: keep,
                nofile: JAIL_NOFILE,
                fsize: max_file_write(&backend),
                data: JAIL_DATA,
            };
            let set_up = sandbox::seccomp::install_reporter(&name, Some(fd))
                .and_then(|_| sandbox::lockdown::enter(&limits));
            match set_up {
                Ok(landlocked) => {
                    log::debug!(
                        "jailed (Landlock {})",
                        if landlocked { "on" } else { "not available" }
                    );
                    report::send(&mut out, &Report::Ready)
                        .map_err(|e| Error::Device(format!("reporting to berth: {e}")))?;
                }
                Err(e) => {
                    // berth says it, in one line with what to do; this process only reports.
                    let _ = report::send(&mut out, &Report::Failed(e.to_string()));
                    std::process::exit(1);
                }
            }
            // The report fd stays open for the SIGSYS handler.
            std::mem::forget(out);
            serve_backend(backend, listener, &jail)
        }
    }
}

/// The last steps of a device's jail, as its backend starts.
struct Jail {
    mode: SeccompMode,
    /// A test trigger (`BERTH_TEST_DEVICE_FORBIDDEN_CALL=<device name>`): a few seconds
    /// into serving, the device makes a call outside its policy, as a compromised device
    /// would. No guest action can do this.
    test_forbidden_call: bool,
    /// A test trigger (`BERTH_TEST_DEVICE_PANIC=<device name>`): the device's queue worker
    /// panics on its first kick, as a bug in a device would.
    test_panic: bool,
}

/// The test trigger's call (getppid: harmless, and in no device's policy).
extern "C" fn forbidden_call(_: libc::c_int) {
    // SAFETY: a system call without arguments.
    unsafe { libc::syscall(libc::SYS_getppid) };
}

impl ServeHooks for Jail {
    fn before_threads(&self, threads: u64) -> std::result::Result<(), String> {
        sandbox::lockdown::limit_threads(threads).map_err(|e| e.to_string())
    }

    fn serving(&self, device_syscalls: &[Allow]) -> std::result::Result<(), String> {
        let mode = match self.mode {
            SeccompMode::Off => return Ok(()),
            SeccompMode::On => sandbox::seccomp::Mode::Trap,
            SeccompMode::Log => sandbox::seccomp::Mode::Log,
        };
        let mut allowed = FRAMEWORK_SYSCALLS.to_vec();
        allowed.extend_from_slice(device_syscalls);
        let prog = sandbox::seccomp::filter(&allowed, mode).map_err(|e| e.to_string())?;
        if self.test_forbidden_call {
            // SAFETY: a handler that makes one system call; alarm takes an integer.
            unsafe {
                libc::signal(
                    libc::SIGALRM,
                    forbidden_call as *const () as libc::sighandler_t,
                );
                libc::alarm(3);
            }
        }
        if self.test_panic {
            devices::virtio::backend::TEST_PANIC_ON_KICK
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        sandbox::seccomp::apply_all_threads(&prog).map_err(|e| e.to_string())
    }
}

/// RLIMIT_FSIZE for a device: its disk image's size (writes past it would be a bug), none for
/// the console (its output may be a file that grows), 0 for the rest.
fn max_file_write(backend: &Backend) -> Option<u64> {
    match backend {
        Backend::Blk { image, .. } => Some(image.size()),
        Backend::Console { .. } => None,
        Backend::Rng => Some(0),
    }
}

/// The fds a device keeps in its jail: stdio, its socket, its resources, the report fd.
fn keep_fds(backend: &Backend, listener: &UnixListener, report: RawFd) -> Vec<RawFd> {
    use std::os::fd::AsRawFd;
    let mut keep = vec![0, 1, 2, listener.as_raw_fd(), report];
    match backend {
        Backend::Blk { image, .. } => keep.push(image.file().as_raw_fd()),
        Backend::Rng => {}
        Backend::Console { input, output } => {
            keep.push(input.as_raw_fd());
            keep.push(output.as_raw_fd());
        }
    }
    keep
}

/// Takes ownership of an fd this process was started with, after checking it is open.
fn inherited(fd: RawFd, what: &str) -> Result<File> {
    // SAFETY: F_GETFD only reads the flags of `fd`; a closed fd fails with EBADF.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::Device(format!(
            "{what} {fd} is not an open file descriptor"
        )));
    }
    // SAFETY: the fd is open and this process's own (inherited for this purpose); nothing
    // else in the process takes ownership of it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn listener(serve: &ServeArgs) -> Result<UnixListener> {
    match (&serve.socket, serve.listen_fd) {
        (_, Some(fd)) => {
            let f = inherited(fd, "--listen-fd")?;
            Ok(UnixListener::from(std::os::fd::OwnedFd::from(f)))
        }
        (Some(path), None) => bind(path),
        (None, None) => Err(Error::Device("give --socket PATH".into())),
    }
}

/// Binds `path`, replacing a stale socket but never one a live process listens on.
fn bind(path: &Path) -> Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::Device(format!(
                "{} exists and is not a socket; give another --socket path",
                path.display()
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(Error::Device(format!(
                "socket {} is in use by another process; stop it or give another --socket path",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path).map_err(|e| {
        Error::Device(format!(
            "cannot listen on {}: {e} (check the directory exists and is writable)",
            path.display()
        ))
    })?;
    log::info!("serving on {}", path.display());
    Ok(l)
}
