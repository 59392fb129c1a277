//! What a jailed process tells its parent on an inherited pipe: that its jail is set up, or
//! why it could not be, and (from its SIGSYS handler) which system call its filter stopped.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;

pub const READY: u8 = b'R';
pub const FAILED: u8 = b'S';
pub const SYSCALL: u8 = b'Y';

/// One message of the report pipe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The jail is set up; the process goes on to serve.
    Ready,
    /// The jail could not be set up.
    Failed(String),
    /// The seccomp filter stopped this system call.
    Syscall(i32),
}

/// Writes one message to `out`.
pub fn send(out: &mut impl Write, r: &Report) -> io::Result<()> {
    match r {
        Report::Ready => out.write_all(&[READY]),
        Report::Failed(msg) => {
            let msg = &msg.as_bytes()[..msg.len().min(1000)];
            out.write_all(&[FAILED])?;
            out.write_all(&(msg.len() as u16).to_le_bytes())?;
            out.write_all(msg)
        }
        Report::Syscall(nr) => {
            out.write_all(&[SYSCALL])?;
            out.write_all(&nr.to_ne_bytes())
        }
    }
}

/// Reads one message; `None` at end of file.
pub fn receive(input: &mut impl Read) -> io::Result<Option<Report>> {
    let mut kind = [0u8];
    if input.read(&mut kind)? == 0 {
        return Ok(None);
    }
    match kind[0] {
        READY => Ok(Some(Report::Ready)),
        FAILED => {
            let mut len = [0u8; 2];
            input.read_exact(&mut len)?;
            let mut msg = vec![0; usize::from(u16::from_le_bytes(len))];
            input.read_exact(&mut msg)?;
            Ok(Some(Report::Failed(
                String::from_utf8_lossy(&msg).into_owned(),
            )))
        }
        SYSCALL => {
            let mut nr = [0u8; 4];
            input.read_exact(&mut nr)?;
            Ok(Some(Report::Syscall(i32::from_ne_bytes(nr))))
        }
        k => Err(io::Error::other(format!("unknown report {k:#x}"))),
    }
}

/// The SIGSYS handler's message, written with one write(2) (async-signal-safe).
pub(crate) fn send_syscall_raw(fd: RawFd, nr: i32) {
    let mut b = [0u8; 5];
    b[0] = SYSCALL;
    b[1..].copy_from_slice(&nr.to_ne_bytes());
    // SAFETY: write(2) of a stack buffer; callable from a signal handler.
    unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let mut buf = Vec::new();
        for r in [
            Report::Ready,
            Report::Failed("mount: Permission denied".into()),
            Report::Syscall(41),
        ] {
            send(&mut buf, &r).unwrap();
        }
        let mut input = &buf[..];
        assert_eq!(receive(&mut input).unwrap(), Some(Report::Ready));
        assert_eq!(
            receive(&mut input).unwrap(),
            Some(Report::Failed("mount: Permission denied".into()))
        );
        assert_eq!(receive(&mut input).unwrap(), Some(Report::Syscall(41)));
        assert_eq!(receive(&mut input).unwrap(), None);
    }
}
