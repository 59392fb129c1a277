//! `berth device blk|rng|console`: one virtio device as a vhost-user backend. berth starts
//! its own device processes this way (with an inherited listening socket and resources);
//! anyone may start one on a socket path for any vhost-user frontend.

use std::fs::File;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use devices::virtio::blk;

use crate::cli::{DeviceArgs, DeviceKind, ServeArgs};
use crate::error::{Error, Result};
use crate::vhost_user::{serve_backend, Backend};

pub fn run(args: DeviceArgs) -> Result<()> {
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
    serve_backend(backend, listener)
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
