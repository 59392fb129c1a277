//! The host side of the serial console: the terminal in raw mode (restored on every exit
//! path), guest output to stdout, and stdin fed to the guest with Ctrl-A x as the escape.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use devices::legacy::Serial;
use devices::EventFd;

use crate::events::VmEvent;

/// Terminal settings to put back; also read by the panic hook and signal paths.
static SAVED_TERMIOS: Mutex<Option<libc::termios>> = Mutex::new(None);

const CTRL_A: u8 = 0x01;

/// Puts stdin's terminal in raw mode while alive. Does nothing if stdin is not a terminal.
pub struct RawTerminal {
    active: bool,
}

impl RawTerminal {
    pub fn enter() -> Self {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
            return RawTerminal { active: false };
        }
        // SAFETY: termios is plain data; tcgetattr fills it and its result is checked.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer to an initialised termios.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
            return RawTerminal { active: false };
        }
        *devices::bus::lock(&SAVED_TERMIOS) = Some(t);
        let _ = SAVED_FOR_SIGNAL.set(t);
        // Raw input (keys, Ctrl-C included, go to the guest) but keep output processing so
        // berth's own log lines still start at column 0.
        t.c_iflag &= !(libc::IGNBRK
            | libc::BRKINT
            | libc::PARMRK
            | libc::ISTRIP
            | libc::INLCR
            | libc::IGNCR
            | libc::ICRNL
            | libc::IXON);
        t.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
        t.c_cflag = (t.c_cflag & !(libc::CSIZE | libc::PARENB)) | libc::CS8;
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        // SAFETY: valid fd and termios.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
        RawTerminal { active: true }
    }

    /// Whether stdin is an interactive terminal (and the escape sequence applies).
    pub fn is_active(&self) -> bool {
        self.active
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// The terminal settings berth found, for a signal handler: written once, before any
/// filter, and only read afterwards.
static SAVED_FOR_SIGNAL: std::sync::OnceLock<libc::termios> = std::sync::OnceLock::new();

/// Restores the terminal from a signal handler (the SIGSYS reporter): one ioctl, no lock.
pub fn restore_terminal_after_signal() {
    if let Some(t) = SAVED_FOR_SIGNAL.get() {
        // SAFETY: valid fd and a termios obtained from tcgetattr; tcsetattr is one ioctl.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t) };
    }
}

/// Restores the terminal if berth changed it. Safe to call more than once.
pub fn restore_terminal() {
    let saved = match SAVED_TERMIOS.try_lock() {
        Ok(mut g) => g.take(),
        Err(_) => None,
    };
    if let Some(t) = saved {
        // SAFETY: valid fd and a termios obtained from tcgetattr.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
    }
}

/// A pipe (read end, write end), both close-on-exec.
pub fn pipe() -> std::io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array; the result is checked.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// An unbuffered writer on a duplicate of stdout, so every guest byte shows at once.
pub fn stdout_writer() -> std::io::Result<Box<dyn Write + Send>> {
    Ok(Box::new(stdout_file()?))
}

/// A duplicate of stdout (close-on-exec), for a device that writes the guest's text.
pub fn stdout_file() -> std::io::Result<File> {
    Ok(File::from(std::io::stdout().as_fd().try_clone_to_owned()?))
}

/// Where console input goes.
pub enum ConsoleInput {
    /// The UART; `drained` fires when the guest empties its receive FIFO.
    Serial {
        serial: Arc<Mutex<Serial>>,
        drained: EventFd,
    },
    /// A pipe read by the virtio console's worker (a full pipe blocks: flow control).
    Pipe(File),
}

impl ConsoleInput {
    /// Delivers all of `input`, waiting for room; false when the guest side is gone.
    fn deliver(&mut self, input: &[u8]) -> bool {
        match self {
            ConsoleInput::Serial { serial, drained } => {
                let mut rest = input;
                while !rest.is_empty() {
                    let k = devices::bus::lock(serial).enqueue_input(rest);
                    rest = &rest[k..];
                    if !rest.is_empty() && drained.read().is_err() {
                        return false;
                    }
                }
                true
            }
            ConsoleInput::Pipe(p) => p.write_all(input).is_ok(),
        }
    }
}

/// Feeds stdin to the console device, waiting when the guest is not reading.
/// With `escape`, Ctrl-A x quits berth and Ctrl-A Ctrl-A sends one Ctrl-A.
pub fn spawn_stdin_feeder(
    mut target: ConsoleInput,
    events: Sender<VmEvent>,
    escape: bool,
) -> std::io::Result<()> {
    crate::filters::spawn_helper("stdin".into(), move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 256];
        let mut after_ctrl_a = false;
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => return, // EOF: the guest just gets no more input
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("reading stdin failed, console input stops: {e}");
                    return;
                }
            };
            let mut input = Vec::with_capacity(n);
            for &b in &buf[..n] {
                if !escape {
                    input.push(b);
                } else if after_ctrl_a {
                    after_ctrl_a = false;
                    match b {
                        b'x' | b'X' => {
                            let _ = events.send(VmEvent::UserQuit);
                            return;
                        }
                        _ => input.push(b),
                    }
                } else if b == CTRL_A {
                    after_ctrl_a = true;
                } else {
                    input.push(b);
                }
            }
            if !target.deliver(&input) {
                return;
            }
        }
    })
    .map(|_| ())
}
