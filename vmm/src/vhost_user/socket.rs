//! The socket between the frontend and a backend berth starts itself. rust-vmm's backend
//! daemon serves a listener, not a connected stream, and a jailed device process has no file
//! system to find a path in: so the listener is made in a private 0700 directory, the
//! frontend connects at once (the connection waits in the backlog), and the path is removed
//! before the backend even starts. The backend inherits the listening fd and accepts.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

/// A listener with the frontend's connection already queued on it, and that connection.
pub fn connected_pair() -> io::Result<(UnixListener, UnixStream)> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let template = base.join("berth-XXXXXX");
    let mut raw = template.into_os_string().into_encoded_bytes();
    raw.push(0);
    // SAFETY: mkdtemp rewrites the XXXXXX of the NUL-terminated template in place; it creates
    // the directory with mode 0700.
    if unsafe { libc::mkdtemp(raw.as_mut_ptr().cast()) }.is_null() {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "cannot make a private directory in {}: {e} (set XDG_RUNTIME_DIR or TMPDIR to a directory you can write)",
                base.display()
            ),
        ));
    }
    raw.pop();
    // SAFETY: mkdtemp only replaced ASCII characters of bytes that came from an OsString.
    let dir = PathBuf::from(unsafe { std::ffi::OsString::from_encoded_bytes_unchecked(raw) });
    let path = dir.join("vhost-user.sock");
    let result = UnixListener::bind(&path).and_then(|l| {
        let s = UnixStream::connect(&path)?;
        Ok((l, s))
    });
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn the_queued_connection_is_accepted_after_the_path_is_gone() {
        let (listener, mut client) = connected_pair().unwrap();
        let addr = listener.local_addr().unwrap();
        let path = addr.as_pathname().unwrap().to_path_buf();
        assert!(!path.exists(), "socket path removed");
        assert!(
            !path.parent().unwrap().exists(),
            "private directory removed"
        );
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"hi").unwrap();
        let mut b = [0u8; 2];
        server.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
    }
}
