//! The emulated host ("L1"): QEMU (TCG) boots the Debian kernel with an initramfs made for
//! one run, whose `/init` loads kvm, runs a shell script, and reports back over the console.
//!
//! The script's stdout and stderr go, through pipes (so the script sees pipes, as it would
//! natively), to two more serial ports in raw mode (x86_64: COM2 and COM3), which QEMU writes to
//! `l1-stdout.log` and `l1-stderr.log` in the work directory: byte-exact, and live, so a run
//! killed at its deadline still shows how far it got.
//!
//! Everything else comes back on the console (COM1) between markers carrying a per-run nonce,
//! so nothing the script or a guest prints can be mistaken for them:
//!
//! ```text
//! @@BERTH-E2E:<nonce>:READY <uptime> kvm=yes      after kvm is loaded (L1 boot time)
//! @@BERTH-E2E:<nonce>:TIMEOUT                     the in-L1 watchdog stopped the script
//! @@BERTH-E2E:<nonce>:BEGIN file:<path>           then base64 lines (busybox base64)
//! @@BERTH-E2E:<nonce>:END file:<path>             likewise dmesg (and stdout, stderr on
//!                                                 machines without the extra ports)
//! @@BERTH-E2E:<nonce>:STATUS <code> <seconds>     the script's exit status and run time
//! @@BERTH-E2E:<nonce>:DONE
//! ```
//!
//! The script runs in its own session with stdin /dev/null; a watchdog in L1 sends its process
//! group SIGTERM (then SIGKILL) when the run's time is nearly up, so a hung berth still ends
//! with a report; QEMU itself is killed at the deadline. The L1 kernel's console log level is
//! lowered while the report is printed so kernel messages do not split it.

use crate::cpio::CpioWriter;
use crate::process::{self, sh_quote};
use crate::{assets, env_flag, Arch, WorkDir};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where a file placed in the emulated host comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A file of this machine (read when the initramfs is built).
    Path(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

/// A file in the emulated host's initramfs.
#[derive(Clone, Debug)]
pub struct HostFile {
    /// Absolute path inside the emulated host.
    pub dest: String,
    pub source: Source,
    /// Permission bits.
    pub mode: u32,
}

/// A shell script to run in a freshly booted emulated host, with the files it needs.
///
/// The host has busybox (all applets on PATH), `/dev/kvm`, the host modules of the assets in
/// `/lib/host-modules/` (e.g. `insmod /lib/host-modules/tun.ko`), `/tmp`, and whatever was
/// added with [`file`](Self::file), [`bytes`](Self::bytes) and
/// [`executable`](Self::executable). Its RAM (3 GiB by default) holds the initramfs, so keep
/// files to tens of MiB.
#[derive(Clone, Debug)]
pub struct HostRun {
    pub arch: Arch,
    /// Run with `sh` from `/`, stdin /dev/null; stdout and stderr are returned.
    pub script: String,
    pub files: Vec<HostFile>,
    /// Paths in the emulated host whose contents are returned after the script ([`HostOutcome::files`]).
    /// They travel base64-encoded over an emulated serial port: keep them small (KiB to a few MiB).
    pub collect: Vec<String>,
    /// Like `collect`, but gzip'd for the trip (busybox gzip in the emulated host, `gzip -dc`
    /// here): for disk images, mostly zeros, of tens of MiB.
    pub collect_gz: Vec<String>,
    /// For the whole run, QEMU's boot included.
    pub timeout: Duration,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Added to QEMU's command line (e.g. `-netdev user,id=n0 -device virtio-net-pci,netdev=n0`).
    pub qemu_args: Vec<String>,
    /// Added to the emulated host's kernel command line.
    pub kernel_args: String,
}

impl HostRun {
    /// A run of `script` in an emulated `arch` host, with a 5-minute timeout.
    pub fn new(arch: Arch, script: impl Into<String>) -> HostRun {
        HostRun {
            arch,
            script: script.into(),
            files: Vec::new(),
            collect: Vec::new(),
            collect_gz: Vec::new(),
            timeout: Duration::from_secs(300),
            cpus: 2,
            memory_mib: 3072,
            qemu_args: Vec::new(),
            kernel_args: String::new(),
        }
    }

    /// Copies the file `src` of this machine to `dest` in the emulated host (mode 0644, or 0755
    /// if `src` is executable).
    pub fn file(mut self, src: impl Into<PathBuf>, dest: impl Into<String>) -> HostRun {
        let src = src.into();
        let mode = std::fs::metadata(&src)
            .map(|m| {
                use std::os::unix::fs::PermissionsExt;
                if m.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                }
            })
            .unwrap_or(0o644);
        self.files.push(HostFile {
            dest: dest.into(),
            source: Source::Path(src),
            mode,
        });
        self
    }

    /// Writes `data` to `dest` in the emulated host.
    pub fn bytes(
        mut self,
        dest: impl Into<String>,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> HostRun {
        self.files.push(HostFile {
            dest: dest.into(),
            source: Source::Bytes(data.into()),
            mode,
        });
        self
    }

    /// Copies the executable `src` to `dest` together with the shared libraries `ldd` lists
    /// for it (at their paths on this machine); a static binary needs none.
    pub fn executable(mut self, src: impl Into<PathBuf>, dest: impl Into<String>) -> HostRun {
        let src = src.into();
        for lib in shared_libraries(&src) {
            let dest = lib.to_string_lossy().into_owned();
            if !self.files.iter().any(|f| f.dest == dest) {
                self.files.push(HostFile {
                    dest,
                    source: Source::Path(lib),
                    mode: 0o755,
                });
            }
        }
        self.files.push(HostFile {
            dest: dest.into(),
            source: Source::Path(src),
            mode: 0o755,
        });
        self
    }

    /// Returns the contents of `path` (in the emulated host) after the script.
    pub fn collect(mut self, path: impl Into<String>) -> HostRun {
        self.collect.push(path.into());
        self
    }

    /// Like [`collect`](Self::collect), compressed on the way (for disk images).
    pub fn collect_gz(mut self, path: impl Into<String>) -> HostRun {
        self.collect_gz.push(path.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> HostRun {
        self.timeout = t;
        self
    }

    pub fn qemu_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> HostRun {
        self.qemu_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Boots the emulated host and runs the script. `None` when BERTH_E2E_MODE=skip; panics
    /// when QEMU is missing or the run cannot be set up (a harness problem, not a test result).
    pub fn run(&self) -> Option<HostOutcome> {
        if std::env::var("BERTH_E2E_MODE").as_deref() == Ok("skip") {
            eprintln!("berth-tests: skipped (BERTH_E2E_MODE=skip)");
            return None;
        }
        let _lock = crate::lock_machine();
        let work = WorkDir::new("host");
        let mut out = self
            .run_in(work.path())
            .unwrap_or_else(|e| panic!("emulated host: {e}"));
        out.work_dir = Some(work);
        if env_flag("BERTH_E2E_VERBOSE") {
            eprintln!("{out}");
        }
        Some(out)
    }

    /// The run itself, building its files in `work`. The caller holds the machine lock.
    pub(crate) fn run_in(&self, work: &Path) -> Result<HostOutcome, String> {
        let machine = Machine::of(self.arch)?;
        let qemu = crate::emulator(self.arch).ok_or_else(|| {
            format!(
                "qemu-system-{} is not installed (scripts/test.sh installs it)",
                self.arch.name()
            )
        })?;
        let assets = assets(self.arch);
        let nonce = crate::nonce();
        let inner = inner_timeout(self.timeout);

        let initrd = work.join("l1.cpio");
        self.write_initramfs(&initrd, &machine, &nonce, inner)
            .map_err(|e| format!("building {}: {e}", initrd.display()))?;

        let mut cmd = Command::new(&qemu);
        cmd.args(&machine.qemu_args)
            .args(["-smp", &self.cpus.to_string()])
            .args(["-m", &format!("{}M", self.memory_mib)])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-serial", "stdio", "-no-reboot"])
            .arg("-kernel")
            .arg(&assets.bzimage)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(format!(
                "console={} panic=-1 quiet {}",
                machine.console, self.kernel_args
            ))
            .args(&self.qemu_args)
            .current_dir(work);
        let out_log = work.join("l1-stdout.log");
        let err_log = work.join("l1-stderr.log");
        for (id, port, log) in [
            ("l1out", machine.stdout_port, &out_log),
            ("l1err", machine.stderr_port, &err_log),
        ] {
            if let Some((_, device)) = port {
                let path = log.to_string_lossy().replace(',', ",,");
                cmd.args(["-chardev", &format!("file,id={id},path={path}")])
                    .args(["-device", &device.replace("{id}", id)]);
            }
        }
        let echo = env_flag("BERTH_E2E_VERBOSE");
        let c = process::run(&mut cmd, self.timeout, echo)
            .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
        let mut p = parse_report(&String::from_utf8_lossy(&c.stdout), &nonce);
        let mut host_log = std::mem::take(&mut p.readable);
        if !c.stderr.is_empty() {
            host_log.push_str("--- QEMU stderr ---\n");
            host_log.push_str(&String::from_utf8_lossy(&c.stderr));
        }
        let mut problem = None;
        if c.timed_out {
            problem = Some(format!(
                "QEMU killed after the run's timeout of {:?} ({})",
                self.timeout,
                if p.ready.is_none() {
                    "the emulated host never finished booting"
                } else {
                    "the emulated host did not finish its report"
                }
            ));
        } else if !p.done {
            problem = Some(format!(
                "QEMU exited ({}) before the emulated host's report was complete",
                c.status.map_or("killed".into(), |s| s.to_string())
            ));
        } else if !p.kvm {
            problem = Some("the emulated host has no /dev/kvm (see the dmesg section)".into());
        }
        let stream = |name: &str, log: &Path| match p.sections.get(name) {
            Some(b) => lossy(b),
            None => lossy(&std::fs::read(log).unwrap_or_default()),
        };
        let stdout = stream("stdout", &out_log);
        let stderr = stream("stderr", &err_log);
        let dmesg = p
            .sections
            .get("dmesg")
            .map(|b| lossy(b))
            .unwrap_or_default();
        let mut files: BTreeMap<String, Vec<u8>> = p
            .sections
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("file:")?.to_string(), v.clone())))
            .collect();
        for (k, v) in &p.sections {
            if let Some(path) = k.strip_prefix("gzfile:") {
                match gunzip(v) {
                    Ok(data) => {
                        files.insert(path.to_string(), data);
                    }
                    Err(e) => {
                        problem.get_or_insert(format!("collected file {path}: {e}"));
                    }
                }
            }
        }
        Ok(HostOutcome {
            stdout,
            stderr,
            status: p.status,
            timed_out: c.timed_out || p.watchdog,
            kvm: p.kvm,
            files,
            dmesg,
            host_log,
            ready_secs: p.ready,
            script_secs: p.seconds,
            wall: c.elapsed,
            qemu_version: crate::emulator_version(&qemu),
            problem,
            work_dir: None,
        })
    }

    fn write_initramfs(
        &self,
        path: &Path,
        machine: &Machine,
        nonce: &str,
        inner: Duration,
    ) -> std::io::Result<()> {
        let assets = assets(self.arch);
        let mut w = CpioWriter::new(BufWriter::new(File::create(path)?));
        for d in [
            "proc", "sys", "dev", "tmp", "run", "root", "l1", "sbin", "usr/bin", "usr/sbin",
        ] {
            w.dir(d)?;
        }
        w.file_from("bin/busybox", 0o755, &assets.busybox)?;
        for m in std::fs::read_dir(&assets.host_modules)? {
            let m = m?.path();
            let name = m
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            w.file_from(&format!("lib/host-modules/{name}"), 0o644, &m)?;
        }
        w.file(
            "init",
            0o755,
            self.init_script(machine, nonce, inner).as_bytes(),
        )?;
        w.file("l1/script.sh", 0o755, self.script.as_bytes())?;
        for f in &self.files {
            match &f.source {
                Source::Path(p) => w.file_from(&f.dest, f.mode, p)?,
                Source::Bytes(b) => w.file(&f.dest, f.mode, b)?,
            }
        }
        w.finish()?;
        Ok(())
    }

    fn init_script(&self, machine: &Machine, nonce: &str, inner: Duration) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            r#"#!/bin/busybox sh
# berth-tests emulated host ({arch}), generated by tests/src/host.rs
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
M='@@BERTH-E2E:{nonce}:'
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
"#,
            arch = self.arch.name()
        ));
        for alternatives in machine.kvm_modules {
            // The first module of a group that loads wins (kvm-amd or kvm-intel).
            let tries: Vec<String> = alternatives
                .iter()
                .map(|m| format!("insmod /lib/host-modules/{m} 2>/dev/null"))
                .collect();
            s.push_str(&tries.join(" || "));
            s.push_str(" || echo \"L1: could not load any of: ");
            s.push_str(&alternatives.join(" "));
            s.push_str("\"\n");
        }
        s.push_str(&format!(
            r#"[ -c /dev/kvm ] && KVM=yes || KVM=no
echo "${{M}}READY $(cut -d' ' -f1 /proc/uptime) kvm=$KVM"
# The script's stdout and stderr stream live, byte for byte, to serial ports that QEMU
# writes to files (so a hang still shows how far things got), or, without such ports, to
# files reported at the end.
tty_at() {{
  for t in /sys/class/tty/ttyS*; do
    [ "$(cat $t/port 2>/dev/null)" = "$1" ] && {{ echo "/dev/${{t##*/}}"; return 0; }}
  done
  return 1
}}
stream() {{
  if T=$(tty_at "$2"); then
    ( exec <>"$T" >&0; stty raw -echo; exec cat /l1/$1.fifo ) &
  else
    cat /l1/$1.fifo >/l1/$1 &
  fi
}}
mkfifo /l1/stdout.fifo /l1/stderr.fifo
stream stdout {out_port}
P1=$!
stream stderr {err_port}
P2=$!
cd /
T0=$(cut -d' ' -f1 /proc/uptime)
setsid sh /l1/script.sh </dev/null >/l1/stdout.fifo 2>/l1/stderr.fifo &
PID=$!
(
  sleep {inner}
  echo "${{M}}TIMEOUT"
  kill -TERM -$PID 2>/dev/null
  sleep 5
  kill -KILL -$PID 2>/dev/null
) &
WD=$!
wait $PID
RC=$?
T1=$(cut -d' ' -f1 /proc/uptime)
kill $WD 2>/dev/null
# A process the script left behind may hold the pipes open: wait for the copies a while.
( sleep 30; kill $P1 $P2 2>/dev/null ) &
WD=$!
wait $P1 $P2
kill $WD 2>/dev/null
echo 1 >/proc/sys/kernel/printk
emit() {{
  echo "${{M}}BEGIN $1"
  base64 <"$2"
  echo "${{M}}END $1"
}}
[ -f /l1/stdout ] && emit stdout /l1/stdout
[ -f /l1/stderr ] && emit stderr /l1/stderr
"#,
            inner = inner.as_secs(),
            out_port = machine.stdout_port.map_or("none", |p| p.0),
            err_port = machine.stderr_port.map_or("none", |p| p.0),
        ));
        for c in &self.collect {
            let q = sh_quote(c);
            s.push_str(&format!(
                "[ -f {q} ] && emit {} {q} || echo \"L1: no file {}\"\n",
                sh_quote(&format!("file:{c}")),
                c.replace(['"', '$', '`', '\\'], "?")
            ));
        }
        for c in &self.collect_gz {
            let q = sh_quote(c);
            s.push_str(&format!(
                "[ -f {q} ] && gzip -c {q} >/l1/collect.gz && emit {} /l1/collect.gz || echo \"L1: no file {}\"\n",
                sh_quote(&format!("gzfile:{c}")),
                c.replace(['"', '$', '`', '\\'], "?")
            ));
        }
        s.push_str(
            r#"dmesg >/l1/dmesg
emit dmesg /l1/dmesg
echo "${M}STATUS $RC $(awk "BEGIN {print $T1 - $T0}")"
echo "${M}DONE"
poweroff -f
"#,
        );
        s
    }
}

/// How an emulated host of one architecture is booted.
struct Machine {
    qemu_args: Vec<String>,
    console: &'static str,
    /// Serial ports for the script's stdout and stderr: the port as the emulated host's
    /// `/sys/class/tty/*/port` shows it, and the QEMU `-device` for a chardev `{id}`.
    stdout_port: Option<(&'static str, &'static str)>,
    stderr_port: Option<(&'static str, &'static str)>,
    /// Modules to insmod, in order; each entry lists alternatives (the first that loads wins).
    kvm_modules: &'static [&'static [&'static str]],
}

impl Machine {
    fn of(arch: Arch) -> Result<Machine, String> {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
        match arch {
            // TCG's `-cpu max` has SVM with nested paging: kvm-amd loads ("Nested Paging
            // enabled"). kvm-intel is there in case a QEMU offers VMX instead.
            Arch::X86_64 => Ok(Machine {
                qemu_args: args(&["-accel", "tcg,thread=multi", "-M", "q35", "-cpu", "max"]),
                console: "ttyS0",
                // COM2 and COM3 (IRQ 5, as COM3's usual IRQ 4 is COM1's).
                stdout_port: Some(("0x2F8", "isa-serial,chardev={id},iobase=0x2f8,irq=3")),
                stderr_port: Some(("0x3E8", "isa-serial,chardev={id},iobase=0x3e8,irq=5")),
                kvm_modules: &[
                    &["irqbypass.ko"],
                    &["kvm.ko"],
                    &["kvm-amd.ko", "kvm-intel.ko"],
                ],
            }),
            // KVM is built into the Debian arm64 kernel; `-M gic-version=2` in a run's QEMU
            // arguments gives the host a GICv2.
            Arch::Aarch64 => Ok(Machine {
                qemu_args: args(&[
                    "-accel",
                    "tcg,thread=multi",
                    "-M",
                    "virt,virtualization=on,gic-version=3",
                    "-cpu",
                    "max,pauth=off",
                ]),
                console: "ttyAMA0",
                stdout_port: None,
                stderr_port: None,
                kvm_modules: &[],
            }),
        }
    }
}

/// The in-L1 watchdog's share of the run's time: the rest is for booting L1 and reporting.
fn inner_timeout(total: Duration) -> Duration {
    let margin = (total / 4).max(Duration::from_secs(45));
    if total > margin + Duration::from_secs(10) {
        total - margin
    } else {
        (total / 2).max(Duration::from_secs(1))
    }
}

/// The executable's shared libraries, as `ldd` lists them (none for a static binary).
fn shared_libraries(exe: &Path) -> Vec<PathBuf> {
    let Ok(out) = Command::new("ldd").arg(exe).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect()
}

/// Decompresses with the system's gzip (every Linux has it; no crate for one use).
fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("gzip: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().map_err(|e| format!("gzip: {e}"))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!(
            "gzip -dc failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[derive(Default, Debug)]
struct Report {
    ready: Option<f64>,
    kvm: bool,
    watchdog: bool,
    sections: BTreeMap<String, Vec<u8>>,
    status: Option<i32>,
    seconds: Option<f64>,
    done: bool,
    /// The console without the base64 lines of the sections.
    readable: String,
}

/// Decodes a section as busybox `base64` printed it: lines of 76 characters, and on the console
/// each ends in `\r\n`. The crate's decoder takes no whitespace, so that goes first.
fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: String = text.split_ascii_whitespace().collect();
    BASE64.decode(compact)
}

/// Finds the report of run `nonce` in the emulated host's console.
fn parse_report(log: &str, nonce: &str) -> Report {
    let marker = format!("@@BERTH-E2E:{nonce}:");
    let mut r = Report::default();
    let mut section: Option<(String, String)> = None;
    for line in log.lines() {
        let line = line.trim_end_matches('\r');
        let Some(pos) = line.find(&marker) else {
            if let Some((_, text)) = section.as_mut() {
                text.push_str(line);
                text.push('\n');
            } else {
                r.readable.push_str(line);
                r.readable.push('\n');
            }
            continue;
        };
        let rest = &line[pos + marker.len()..];
        let (word, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        if let (Some((_, text)), "END") = (&section, word) {
            r.readable
                .push_str(&format!("[{} bytes of base64]\n", text.len()));
        }
        r.readable.push_str(line);
        r.readable.push('\n');
        match word {
            "READY" => {
                let mut it = arg.split_whitespace();
                r.ready = it.next().and_then(|t| t.parse().ok());
                r.kvm = it.next() == Some("kvm=yes");
            }
            "TIMEOUT" => r.watchdog = true,
            "BEGIN" => section = Some((arg.to_string(), String::new())),
            "END" => {
                if let Some((name, text)) = section.take() {
                    if name == arg {
                        // A kernel message in the middle would break decoding: keep what we can.
                        let bytes = decode_base64(&text).unwrap_or_else(|e| {
                            format!("<undecodable report section {name}: {e}>\n").into_bytes()
                        });
                        r.sections.insert(name, bytes);
                    }
                }
            }
            "STATUS" => {
                let mut it = arg.split_whitespace();
                r.status = it.next().and_then(|t| t.parse().ok());
                r.seconds = it.next().and_then(|t| t.parse().ok());
            }
            "DONE" => r.done = true,
            _ => {}
        }
    }
    r
}

/// What a [`HostRun`] left.
#[derive(Debug)]
pub struct HostOutcome {
    /// The script's stdout and stderr.
    pub stdout: String,
    pub stderr: String,
    /// The script's exit status (128+N if killed by signal N); `None` if the report never came.
    pub status: Option<i32>,
    /// The in-L1 watchdog stopped the script, or QEMU was killed at the deadline.
    pub timed_out: bool,
    /// `/dev/kvm` existed in the emulated host after loading the modules.
    pub kvm: bool,
    /// The [`HostRun::collect`]ed files that existed.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The emulated host kernel's log, taken after the script.
    pub dmesg: String,
    /// The emulated host's whole console (QEMU's stdout) with the report's base64 lines left
    /// out (they are decoded in the fields above), then QEMU's stderr.
    pub host_log: String,
    /// The emulated host's uptime when kvm was loaded and the script started (its boot time).
    pub ready_secs: Option<f64>,
    /// How long the script ran, by the emulated host's clock.
    pub script_secs: Option<f64>,
    /// QEMU's wall time.
    pub wall: Duration,
    /// The first line of `qemu --version`.
    pub qemu_version: String,
    /// A harness-level failure (QEMU killed or crashed, no /dev/kvm), if any.
    pub problem: Option<String>,
    pub(crate) work_dir: Option<WorkDir>,
}

impl HostOutcome {
    /// Panics with `msg` and the report.
    #[track_caller]
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{self}")
    }

    /// Asserts the run completed and the script exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        if let Some(p) = &self.problem {
            self.fail(p);
        }
        if self.timed_out {
            self.fail("the script timed out");
        }
        if self.status != Some(0) {
            self.fail(&format!("the script exited with {:?}, not 0", self.status));
        }
        self
    }

    /// Asserts the script's stdout contains `needle`.
    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        if !self.stdout.contains(needle) {
            self.fail(&format!("the script's stdout lacks {needle:?}"));
        }
        self
    }
}

fn tail(s: &str, lines: usize) -> &str {
    let mut idx = s.len();
    for _ in 0..lines {
        match s[..idx].trim_end_matches('\n').rfind('\n') {
            Some(i) => idx = i,
            None => return s,
        }
    }
    &s[idx + 1..]
}

impl fmt::Display for HostOutcome {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(
            f,
            "=== emulated host: status {:?}, timed out {}, kvm {}, L1 ready at {:?} s, script {:?} s, wall {:.1?}{}",
            self.status,
            self.timed_out,
            self.kvm,
            self.ready_secs,
            self.script_secs,
            self.wall,
            self.problem.as_deref().map(|p| format!("\n=== problem: {p}")).unwrap_or_default()
        )?;
        writeln!(
            f,
            "=== {} (the emulated hosts were last proven with QEMU {})",
            self.qemu_version,
            crate::PROVEN_QEMU
        )?;
        writeln!(f, "=== script stdout ===\n{}", self.stdout)?;
        writeln!(f, "=== script stderr ===\n{}", self.stderr)?;
        writeln!(
            f,
            "=== emulated host dmesg (last 40 lines) ===\n{}",
            tail(&self.dmesg, 40)
        )?;
        writeln!(
            f,
            "=== emulated host console (last 60 lines) ===\n{}",
            tail(&self.host_log, 60)
        )?;
        if let Some(w) = &self.work_dir {
            writeln!(f, "=== work directory: {}", w.path().display())?;
        }
        Ok(())
    }
}

/// What `berth check` printed on `arch`'s real KVM: natively where this machine has it, else
/// in the emulated host. `None` when neither can run here (the test skips, as the harness
/// says). Panics, with the context, if the emulated host itself failed.
pub fn berth_check(arch: crate::Arch) -> Option<(Option<i32>, String, String)> {
    let mode = crate::mode(arch)?;
    let berth = crate::berth_bin(arch).unwrap_or_else(|e| panic!("{e}"));
    Some(match mode {
        crate::Mode::Native => {
            let out = std::process::Command::new(&berth)
                .arg("check")
                .output()
                .expect("run berth check");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        crate::Mode::EmulatedHost => {
            let out = HostRun::new(arch, "/bin/berth check\n")
                .executable(&berth, "/bin/berth")
                .run()?;
            assert!(out.problem.is_none() && out.kvm, "{out}");
            (out.status, out.stdout.clone(), format!("{out}"))
        }
    })
}

/// Fails unless every case in `must_pass` has a PASS row and nothing failed or was skipped.
pub fn assert_check_passed(status: Option<i32>, stdout: &str, context: &str, must_pass: &[&str]) {
    eprintln!("{stdout}");
    assert_eq!(status, Some(0), "{stdout}\n{context}");
    assert!(stdout.starts_with("hypervisor: kvm\n"), "{stdout}");
    for case in must_pass {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([*case, "PASS"])),
            "{case} did not pass:\n{stdout}"
        );
    }
    assert!(stdout.contains(" passed, 0 failed, 0 skipped"), "{stdout}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_parsed_through_noise() {
        let log = "\
SeaBIOS noise\r\n\
@@BERTH-E2E:n1:READY 3.25 kvm=yes\r\n\
@@BERTH-E2E:other:BEGIN stdout\r\n\
@@BERTH-E2E:n1:BEGIN stdout\r\n\
aGVsbG8K\r\n\
@@BERTH-E2E:n1:END stdout\r\n\
@@BERTH-E2E:n1:BEGIN file:/scratch/x\r\n\
AAEC\r\n\
@@BERTH-E2E:n1:END file:/scratch/x\r\n\
@@BERTH-E2E:n1:BEGIN stderr\r\n\
@@BERTH-E2E:n1:END stderr\r\n\
[   12.5] some kernel line @@BERTH-E2E:n1:STATUS 3 1.5\r\n\
@@BERTH-E2E:n1:DONE\r\n";
        let r = parse_report(log, "n1");
        assert_eq!(r.ready, Some(3.25));
        assert!(r.kvm && r.done && !r.watchdog);
        assert_eq!(r.sections["stdout"], b"hello\n");
        assert_eq!(r.sections["stderr"], b"");
        assert_eq!(r.sections["file:/scratch/x"], [0, 1, 2]);
        assert_eq!(r.status, Some(3));
        assert_eq!(r.seconds, Some(1.5));
        assert!(r
            .readable
            .starts_with("SeaBIOS noise\n@@BERTH-E2E:n1:READY"));
        assert!(!r.readable.contains("aGVsbG8K"));
        assert!(r.readable.contains("[9 bytes of base64]"));
    }

    #[test]
    fn base64_sections_span_lines() {
        assert_eq!(
            decode_base64("AAEC\r\n/f7/\r\nZm9v\r\nYg==\n").unwrap(),
            [0, 1, 2, 0xfd, 0xfe, 0xff, b'f', b'o', b'o', b'b']
        );
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("Zm9v!").is_err());
        // A kernel line in the middle of a section leaves a placeholder, not garbage.
        let r = parse_report(
            "@@BERTH-E2E:n:BEGIN stdout\nZm9v\n[ 1.0] oops\n@@BERTH-E2E:n:END stdout\n",
            "n",
        );
        let s = String::from_utf8(r.sections["stdout"].clone()).unwrap();
        assert!(s.starts_with("<undecodable report section stdout:"), "{s}");
    }

    #[test]
    fn missing_report() {
        let r = parse_report("Kernel panic\n", "n1");
        assert!(!r.done && r.status.is_none() && r.ready.is_none());
    }

    #[test]
    fn inner_timeouts_leave_room_to_boot() {
        assert_eq!(
            inner_timeout(Duration::from_secs(300)),
            Duration::from_secs(225)
        );
        assert_eq!(
            inner_timeout(Duration::from_secs(100)),
            Duration::from_secs(55)
        );
        assert_eq!(
            inner_timeout(Duration::from_secs(40)),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn gzip_sections_decompress() {
        let out = Command::new("sh")
            .args(["-c", "printf 'disk image' | gzip -c"])
            .output()
            .unwrap();
        assert_eq!(gunzip(&out.stdout).unwrap(), b"disk image");
        assert!(gunzip(b"not gzip").is_err());
    }

    #[test]
    fn tail_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb", 5), "a\nb");
    }
}
