//! berth as a vhost-user frontend: where each device backend runs and how the VMM reaches it.
//!
//! Every virtio device is a vhost-user backend (`devices::virtio::backend`). berth starts its
//! own backends in one of two places, with no other difference in their code: a child process
//! (`berth device ...`, the default; the sandbox jails it) or a thread (`--disable-sandbox`).
//! A backend someone else runs (`--vhost-user type=...,socket=PATH`) is reached the same way.

pub mod control;
pub mod process;
pub mod socket;
pub mod wiring;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::Duration;

use devices::virtio::backend;
use devices::virtio::blk::{Block, DiskImage};
use devices::virtio::console::Console;
use devices::virtio::rng::Rng;
use devices::virtio::{TYPE_BLOCK, TYPE_CONSOLE, TYPE_RNG};

use crate::error::{Error, Result};
use crate::events::VmEvent;

/// Longest a backend may take to answer one request; past it the device has failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The kinds of device a vhost-user backend can be here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Blk,
    Rng,
    Console,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "blk" => Some(Kind::Blk),
            "rng" => Some(Kind::Rng),
            "console" => Some(Kind::Console),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Blk => "blk",
            Kind::Rng => "rng",
            Kind::Console => "console",
        }
    }

    pub fn virtio_type(self) -> u32 {
        match self {
            Kind::Blk => TYPE_BLOCK,
            Kind::Rng => TYPE_RNG,
            Kind::Console => TYPE_CONSOLE,
        }
    }

    pub fn queues(self) -> usize {
        match self {
            Kind::Blk | Kind::Rng => 1,
            Kind::Console => 2,
        }
    }

    /// Bytes of configuration space the transport exposes.
    pub fn config_len(self) -> usize {
        match self {
            Kind::Blk => 60,
            Kind::Rng => 0,
            Kind::Console => 12,
        }
    }
}

/// A backend berth builds itself, with the resources it will own.
pub enum Backend {
    Blk {
        image: DiskImage,
        read_only: bool,
        id: Option<String>,
    },
    Rng,
    Console {
        /// The pipe berth's stdin thread fills.
        input: File,
        /// Where the guest's text goes (a duplicate of stdout).
        output: File,
    },
}

impl Backend {
    pub fn kind(&self) -> Kind {
        match self {
            Backend::Blk { .. } => Kind::Blk,
            Backend::Rng => Kind::Rng,
            Backend::Console { .. } => Kind::Console,
        }
    }
}

/// Where berth runs its own backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A jailed child process per device (`berth device`), with this seccomp mode.
    Process(crate::cli::SeccompMode),
    /// A thread of berth per device (`--disable-sandbox`).
    Thread,
}

/// Starts `backend` where `placement` says and returns the frontend's end of its socket. A
/// device process is watched: its end is reported to the control loop as a failure of
/// `name`.
pub fn start(
    name: &str,
    backend: Backend,
    placement: Placement,
    events: &Sender<VmEvent>,
) -> Result<UnixStream> {
    let err = |what: &str, e: std::io::Error| Error::Device(format!("{name}: {what}: {e}"));
    let (listener, stream) = socket::connected_pair().map_err(|e| err("vhost-user socket", e))?;
    match placement {
        Placement::Thread => {
            let n = name.to_string();
            let events = events.clone();
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    if let Err(e) = serve_backend(backend, listener, &backend::NoHooks) {
                        let _ = events.send(VmEvent::DeviceFailed {
                            device: n,
                            what: e.to_string(),
                        });
                    }
                })
                .map_err(|e| err("starting its thread", e))?;
        }
        Placement::Process(seccomp) => {
            let child = spawn_process(name, &backend, &listener, seccomp).map_err(|e| match e {
                process::SpawnError::Jail(why) => Error::Sandbox {
                    device: name.to_string(),
                    why,
                },
                // clone(2) into new namespaces refused (user namespaces off or capped), or
                // the id maps not writable: the same advice.
                process::SpawnError::Sandbox(e) => Error::Sandbox {
                    device: name.to_string(),
                    why: e.to_string(),
                },
                e => Error::Device(format!("{name}: starting its process: {e}")),
            })?;
            log::debug!("{name}: device process {}", child.pid);
            child
                .supervise(name.to_string(), events.clone())
                .map_err(|e| err("watching its process", e))?;
            // The child holds its own copies of the listener and the resources now.
        }
    }
    Ok(stream)
}

/// Fd numbers in a device process.
const LISTEN_FD: i32 = 3;
const RESOURCE_FD: i32 = 4;

fn spawn_process(
    name: &str,
    backend: &Backend,
    listener: &UnixListener,
    seccomp: crate::cli::SeccompMode,
) -> std::result::Result<process::DeviceProcess, process::SpawnError> {
    let mut args = vec![
        "--name".to_string(),
        name.to_string(),
        "-l".to_string(),
        log::max_level().to_string().to_lowercase(),
        backend.kind().name().to_string(),
        "--listen-fd".to_string(),
        LISTEN_FD.to_string(),
    ];
    let mut fds = vec![(listener.as_raw_fd(), LISTEN_FD)];
    match backend {
        Backend::Blk {
            image,
            read_only,
            id,
        } => {
            let mut spec = format!("path={}", image.path().display());
            if *read_only {
                spec.push_str(",readonly=on");
            }
            if let Some(id) = id {
                spec.push_str(&format!(",id={id}"));
            }
            args.extend([
                "--disk".into(),
                spec,
                "--disk-fd".into(),
                RESOURCE_FD.to_string(),
            ]);
            fds.push((image.file().as_raw_fd(), RESOURCE_FD));
        }
        Backend::Rng => {}
        Backend::Console { input, output } => {
            args.extend([
                "--input-fd".into(),
                RESOURCE_FD.to_string(),
                "--output-fd".into(),
                (RESOURCE_FD + 1).to_string(),
            ]);
            fds.push((input.as_raw_fd(), RESOURCE_FD));
            fds.push((output.as_raw_fd(), RESOURCE_FD + 1));
        }
    }
    process::spawn(&args, &fds, seccomp)
}

/// Builds the device and serves it on the first connection `listener` accepts; returns when
/// the frontend goes away. The same code runs in a device process, a thread and a daemon.
pub fn serve_backend(
    backend: Backend,
    listener: UnixListener,
    hooks: &dyn backend::ServeHooks,
) -> Result<()> {
    let kind = backend.kind();
    let r = match backend {
        Backend::Blk {
            image,
            read_only,
            id,
        } => backend::serve(Block::new(image, read_only, id), listener, hooks),
        Backend::Rng => backend::serve(Rng::new(), listener, hooks),
        Backend::Console { input, output } => {
            let dev = Console::new(Some(input.into()), Box::new(output))
                .map_err(|e| Error::Device(format!("virtio-console: {e}")))?;
            backend::serve(dev, listener, hooks)
        }
    };
    r.map_err(|e| Error::Device(format!("vhost-user {} backend: {e}", kind.name())))
}

/// Connects to a backend someone else runs, waiting up to a few seconds for it to listen.
pub fn connect_external(path: &PathBuf) -> Result<UnixStream> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(Error::Device(format!(
                    "cannot connect to the vhost-user backend at {}: {e} (is the backend running and listening there?)",
                    path.display()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests;
