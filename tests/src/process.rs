//! Running a child process with a deadline while capturing its output.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What a process left behind.
pub(crate) struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// Bytes for a child's stdin, written once its stdout shows `after` (typed at a prompt that is
/// there, rather than sent before the reader exists); stdin is closed after them.
#[derive(Clone, Debug)]
pub(crate) struct Input {
    pub after: String,
    pub data: Vec<u8>,
}

/// A shell script to run beside a child once its stdout shows `after`, with `BERTH_PID` set
/// to the child's pid; its output goes to `out`.
#[derive(Clone, Debug)]
pub(crate) struct Hook {
    pub after: String,
    pub script: String,
    pub dir: std::path::PathBuf,
    pub out: std::path::PathBuf,
}

/// Runs `cmd` with stdin from /dev/null, killing it (SIGKILL) after `timeout`. With `echo`,
/// its output is also copied to this process's stderr as it comes (for watching a slow run).
/// The child is also killed if the thread that started it dies (PR_SET_PDEATHSIG), so a killed
/// test run leaves no QEMU behind.
pub(crate) fn run(cmd: &mut Command, timeout: Duration, echo: bool) -> io::Result<Captured> {
    run_with_input(cmd, timeout, echo, None, None)
}

/// Waits until `buf` holds `needle` or `deadline` passes.
fn wait_for_bytes(buf: &Mutex<Vec<u8>>, needle: &str, deadline: Instant) -> bool {
    let needle = needle.as_bytes();
    while Instant::now() < deadline {
        let ready = buf
            .lock()
            .map(|b| b.windows(needle.len().max(1)).any(|w| w == needle))
            .unwrap_or(false);
        if ready {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// [`run`], with stdin fed from `input` when given.
pub(crate) fn run_with_input(
    cmd: &mut Command,
    timeout: Duration,
    echo: bool,
    input: Option<&Input>,
    hook: Option<&Hook>,
) -> io::Result<Captured> {
    let start = Instant::now();
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = reader(child.stdout.take().expect("piped stdout"), echo);
    let err = reader(child.stderr.take().expect("piped stderr"), echo);
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let seen = out.buf.clone();
        let (after, data) = (input.after.clone(), input.data.clone());
        let deadline = start + timeout;
        thread::spawn(move || {
            if wait_for_bytes(&seen, &after, deadline) {
                let _ = stdin.write_all(&data);
            }
            // dropping stdin closes it
        });
    }
    let mut hook_done = None;
    if let Some(hook) = hook {
        let (hook_done_tx, done) = mpsc::channel::<()>();
        hook_done = Some(done);
        let seen = out.buf.clone();
        let hook = hook.clone();
        let deadline = start + timeout;
        let pid = child.id();
        thread::spawn(move || {
            let _done = hook_done_tx; // dropped when the hook is over
            if !wait_for_bytes(&seen, &hook.after, deadline) {
                return;
            }
            let out = Command::new("sh")
                .arg("-c")
                .arg(&hook.script)
                .env("BERTH_PID", pid.to_string())
                .current_dir(&hook.dir)
                .stdin(Stdio::null())
                .output();
            let text = match out {
                Ok(o) => [o.stdout, o.stderr].concat(),
                Err(e) => format!("cannot run the hook: {e}\n").into_bytes(),
            };
            let _ = std::fs::write(&hook.out, text);
        });
    }
    let (status, timed_out) = wait_deadline(&mut child, start + timeout)?;
    let elapsed = start.elapsed();
    // The hook may outlive berth by a little (it may be waiting for berth to go).
    if let Some(done) = hook_done {
        let _ = done.recv_timeout(Duration::from_secs(10));
    }
    // A grandchild may still hold the pipes open: do not wait for it for long.
    let grace = Instant::now() + Duration::from_secs(2);
    let stdout = out.take(grace);
    let stderr = err.take(grace);
    Ok(Captured {
        stdout,
        stderr,
        status,
        timed_out,
        elapsed,
    })
}

/// A pipe being drained by a thread.
struct Drain {
    buf: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Drain {
    /// What was read, once the pipe closed or at `deadline`.
    fn take(self, deadline: Instant) -> Vec<u8> {
        let _ = self
            .done
            .recv_timeout(deadline.saturating_duration_since(Instant::now()));
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn reader(mut pipe: impl Read + Send + 'static, echo: bool) -> Drain {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let (tx, done) = mpsc::channel();
    let all = buf.clone();
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    if echo {
                        let _ = io::stderr().write_all(&chunk[..n]);
                    }
                    all.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    Drain { buf, done }
}

fn wait_deadline(child: &mut Child, deadline: Instant) -> io::Result<(Option<ExitStatus>, bool)> {
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok((Some(st), false));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok((None, true));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The exit code, or 128+N for a death by signal N (the shell's convention).
pub(crate) fn code(st: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// `s` quoted for a POSIX shell.
pub(crate) fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("--cpus"), "--cpus");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", sh_quote("x 'y' $z \\ \"w\"")))
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"x 'y' $z \\ \"w\"");
    }

    #[test]
    fn deadline_kills() {
        let c = run(
            Command::new("sh").args(["-c", "echo start; sleep 30"]),
            Duration::from_millis(300),
            false,
        )
        .unwrap();
        assert!(c.timed_out);
        assert!(c.status.is_none());
        assert_eq!(c.stdout, b"start\n");
        assert!(c.elapsed < Duration::from_secs(10));
    }

    #[test]
    fn input_waits_for_its_prompt() {
        // `cat` would echo the input at once; the prompt must come first.
        let c = run_with_input(
            Command::new("sh").args(["-c", "sleep 0.3; echo PROMPT; cat"]),
            Duration::from_secs(20),
            false,
            Some(&Input {
                after: "PROMPT".into(),
                data: b"typed\n".to_vec(),
            }),
            None,
        )
        .unwrap();
        assert!(!c.timed_out);
        assert_eq!(c.stdout, b"PROMPT\ntyped\n");
    }

    #[test]
    fn status_and_streams() {
        let c = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(20),
            false,
        )
        .unwrap();
        assert!(!c.timed_out);
        assert_eq!(code(c.status.unwrap()), 3);
        assert_eq!(c.stdout, b"out\n");
        assert_eq!(c.stderr, b"err\n");
    }
}
