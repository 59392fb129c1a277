//! One boot of a guest under berth, natively or in the emulated host, and what it left.

use crate::cpio::{self, CpioWriter};
use crate::host::HostRun;
use crate::process::{self, sh_quote, Input};
use crate::{assets, env_flag, Arch, Mode, WorkDir};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The guest command line a run gets unless it sets its own: berth's default plus `quiet`
/// (every console byte is slow in the emulated host).
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 quiet i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/// [`DEFAULT_CMDLINE`] for aarch64 guests: no i8042 to tame; PSCI resets.
pub const DEFAULT_CMDLINE_AARCH64: &str = "console=ttyS0 panic=1 quiet";

/// Which kernel to boot.
#[derive(Clone, Debug)]
pub enum Kernel {
    /// The assets' Debian kernel as shipped (x86_64: bzImage; aarch64: Image).
    BzImage,
    /// The same kernel in its other form (x86_64: the ELF vmlinux, PVH entry; aarch64: the
    /// Image gzip'd).
    ElfVmlinux,
    /// Any kernel file of this machine.
    Path(PathBuf),
}

/// Which initrd to give the guest.
#[derive(Clone, Debug)]
pub enum Initrd {
    /// The assets' initramfs with the run's `/test.sh` (and [`GuestRun::guest_file`]s)
    /// concatenated as a second archive.
    Default,
    /// No `--initrd`.
    None,
    /// This file, as is.
    Path(PathBuf),
}

/// A guest boot under berth.
///
/// berth is called as `berth run --kernel K [--initrd I] --cmdline C <berth_args>`, with stdin
/// /dev/null, stdout (the guest console) and stderr (berth's log) captured.
///
/// `berth_args` may use two placeholders, replaced with paths valid where berth runs:
/// `{file:NAME}` is the file of [`files`](Self::files) whose file name is NAME, and `{scratch}`
/// is an empty writable directory that is berth's working directory (sockets, `--serial
/// file={scratch}/console.log`); files listed in [`collect`](Self::collect) are read back from
/// it into [`Outcome::files`].
#[derive(Clone, Debug)]
pub struct GuestRun {
    pub arch: Arch,
    pub kernel: Kernel,
    pub initrd: Initrd,
    /// The guest's `/test.sh` (run by busybox `sh` after init's setup; the guest reboots when
    /// it ends, so it need not). Empty: no `/test.sh`, the guest init starts a shell.
    pub script: String,
    /// The kernel command line, passed with `--cmdline` ([`DEFAULT_CMDLINE`] by default).
    pub cmdline: String,
    /// Modules the guest init loads (`berth.modules=` on the command line), e.g. `virtio_blk`.
    pub modules: Vec<String>,
    /// More arguments for `berth run`, e.g. `--cpus 2 --memory 512`.
    pub berth_args: Vec<String>,
    /// Files of this machine berth needs (disk images...). Natively they stay where they are;
    /// in the emulated host they are copied to `/files/` (its RAM holds them: tens of MiB at most).
    pub files: Vec<PathBuf>,
    /// Extra files in the guest's initramfs: (absolute path in the guest, contents, mode).
    pub guest_files: Vec<(String, Vec<u8>, u32)>,
    /// Files of [`files`](Self::files) that berth may change and whose changes the test reads
    /// afterwards (disk images): in the emulated host they are sent back and replace the file
    /// here after the run (natively berth writes them in place).
    pub writable: Vec<PathBuf>,
    /// Names of files in `{scratch}` to read back after the run (small ones).
    pub collect: Vec<String>,
    /// What to type on berth's stdin, once its stdout (the console) shows a marker: (marker,
    /// bytes). stdin is closed after them; without this it is /dev/null.
    pub stdin: Option<(String, Vec<u8>)>,
    /// For the whole run (in the emulated host: its boot included).
    pub timeout: Duration,
    /// RAM of the emulated host in MiB (default 3072): raise it for big guests.
    pub host_memory_mib: u32,
    /// Extra arguments for the emulated host's QEMU ([`GuestRun::host_qemu_args`]).
    pub host_qemu_args: Vec<String>,
    /// A shell script run where berth runs (this machine, or the emulated host), beside it,
    /// once the console shows a marker: (marker, script). See [`GuestRun::host_script`].
    pub host_script: Option<(String, String)>,
    /// A shell snippet run where berth runs, in `{scratch}`, before berth starts (with
    /// `$BERTH` the berth binary there): e.g. a vhost-user backend started in the background.
    pub before: Option<String>,
    /// Run berth as this (uid, gid) instead of root, with /dev/kvm opened up to it, through
    /// this runas helper ([`GuestRun::as_user`]).
    pub user: Option<(u32, u32, PathBuf)>,
    /// More environment for berth.
    pub env: Vec<(String, String)>,
}

/// The file in `{scratch}` that holds a [`GuestRun::host_script`]'s output.
pub const HOST_SCRIPT_OUT: &str = "host-script.out";

impl GuestRun {
    /// An x86_64 run of `kernel` with the default initramfs and command line, no script and a
    /// 5-minute timeout.
    pub fn new(kernel: Kernel) -> GuestRun {
        GuestRun {
            arch: Arch::X86_64,
            kernel,
            initrd: Initrd::Default,
            script: String::new(),
            cmdline: DEFAULT_CMDLINE.to_string(),
            modules: Vec::new(),
            berth_args: Vec::new(),
            files: Vec::new(),
            guest_files: Vec::new(),
            writable: Vec::new(),
            collect: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(300),
            host_memory_mib: 3072,
            host_qemu_args: Vec::new(),
            host_script: None,
            before: None,
            user: None,
            env: Vec::new(),
        }
    }

    /// Sets `key=value` in berth's environment.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs berth as an ordinary user through `runas` (the `berth-test-runas` binary of
    /// this crate: `env!("CARGO_BIN_EXE_berth-test-runas")` in a test), with /dev/kvm, the
    /// scratch directory and the run's files made accessible to it. Natively this needs root
    /// (and changes /dev/kvm's mode); the emulated host is the harness's own.
    pub fn as_user(mut self, uid: u32, gid: u32, runas: impl Into<PathBuf>) -> Self {
        self.user = Some((uid, gid, runas.into()));
        self
    }

    /// Runs `snippet` (POSIX sh) in `{scratch}` before berth starts, where berth runs; `$BERTH`
    /// is the berth binary there and `{file:NAME}` / `{scratch}` are replaced as in the
    /// arguments. What it starts in the background keeps running beside berth.
    pub fn before(mut self, snippet: impl Into<String>) -> Self {
        self.before = Some(snippet.into());
        self
    }

    /// Runs `script` (POSIX sh; busybox in the emulated host) where berth runs, once the
    /// console shows `after`, with `BERTH_PID` set to berth's pid and `{scratch}` as its
    /// directory. Its stdout and stderr come back in `files[HOST_SCRIPT_OUT]`. It may look at
    /// berth from outside (/proc), signal it or its children, and wait.
    pub fn host_script(mut self, after: impl Into<String>, script: impl Into<String>) -> Self {
        self.host_script = Some((after.into(), script.into()));
        if !self.collect.iter().any(|c| c == HOST_SCRIPT_OUT) {
            self.collect.push(HOST_SCRIPT_OUT.into());
        }
        self
    }

    /// The guest's architecture; an untouched default command line follows it.
    pub fn arch(mut self, arch: Arch) -> Self {
        if self.cmdline == DEFAULT_CMDLINE || self.cmdline == DEFAULT_CMDLINE_AARCH64 {
            self.cmdline = match arch {
                Arch::X86_64 => DEFAULT_CMDLINE,
                Arch::Aarch64 => DEFAULT_CMDLINE_AARCH64,
            }
            .to_string();
        }
        self.arch = arch;
        self
    }

    /// Extra arguments for the emulated host's QEMU (e.g. `-M gic-version=2`, which QEMU
    /// merges into the machine options); ignored when berth runs natively.
    pub fn host_qemu_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.host_qemu_args.extend(a.into_iter().map(Into::into));
        self
    }

    pub fn initrd(mut self, initrd: Initrd) -> Self {
        self.initrd = initrd;
        self
    }

    /// Sets the guest's `/test.sh`.
    pub fn script(mut self, script: impl Into<String>) -> Self {
        self.script = script.into();
        self
    }

    /// Replaces the kernel command line.
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = cmdline.into();
        self
    }

    /// Appends to the kernel command line.
    pub fn append_cmdline(mut self, more: &str) -> Self {
        self.cmdline.push(' ');
        self.cmdline.push_str(more);
        self
    }

    pub fn modules<I: IntoIterator<Item = S>, S: Into<String>>(mut self, m: I) -> Self {
        self.modules.extend(m.into_iter().map(Into::into));
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.berth_args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.berth_args.extend(a.into_iter().map(Into::into));
        self
    }

    /// Makes a file of this machine available to berth as `{file:<its file name>}`.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.push(path.into());
        self
    }

    /// Like [`file`](Self::file) for a file berth writes (a disk image): after the run, the file
    /// at `path` has berth's changes wherever berth ran. In the emulated host it lives in RAM and
    /// comes back gzip'd over a serial port: keep it to tens of MiB, mostly empty.
    pub fn writable_file(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.files.push(path.clone());
        self.writable.push(path);
        self
    }

    /// Types `data` on berth's stdin once the console shows `after` (e.g. the guest init's
    /// `BERTH-GUEST-INIT`), then closes stdin.
    pub fn stdin_after(mut self, after: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some((after.into(), data.into()));
        self
    }

    /// Adds a file to the guest's initramfs.
    pub fn guest_file(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.guest_files.push((path.to_string(), data.into(), mode));
        self
    }

    /// Reads `{scratch}/name` back after the run.
    pub fn collect(mut self, name: impl Into<String>) -> Self {
        self.collect.push(name.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Sets the emulated host's RAM (MiB); it must hold its initramfs, berth and the guest's
    /// touched memory. No effect natively.
    pub fn host_memory(mut self, mib: u32) -> Self {
        self.host_memory_mib = mib;
        self
    }

    /// Boots the guest. `None` when BERTH_E2E_MODE=skip. Panics on harness problems (no
    /// berth binary, no assets, no way to run KVM, QEMU failing): those are not test results.
    /// berth's own failures, timeouts included, are in the [`Outcome`].
    pub fn run(&self) -> Option<Outcome> {
        let mode = crate::mode(self.arch)?;
        let berth = crate::berth_bin(self.arch).unwrap_or_else(|e| panic!("{e}"));
        for a in &self.berth_args {
            if matches!(a.as_str(), "--kernel" | "--initrd" | "--cmdline")
                || a.starts_with("--kernel=")
                || a.starts_with("--initrd=")
                || a.starts_with("--cmdline=")
            {
                panic!("GuestRun: set {a} through the GuestRun fields, not berth_args");
            }
        }
        let _lock = crate::lock_machine();
        let mut out = self.run_once(mode, &berth);
        if mode == Mode::EmulatedHost && out.timed_out {
            // The emulated host (QEMU TCG emulating SVM) sometimes stops taking interrupts on a
            // CPU that runs a nested guest: its kernel then reports RCU stalls and soft lockups
            // and the run hits its deadline. That stall is recorded where scripts/test.sh shows
            // it and the run is repeated once; a berth hang hangs twice and still fails.
            record_stall(&out);
            out = self.run_once(mode, &berth);
        }
        if env_flag("BERTH_E2E_VERBOSE") {
            eprintln!("{out}");
        }
        Some(out)
    }

    fn run_once(&self, mode: Mode, berth: &Path) -> Outcome {
        let work = WorkDir::new("guest");
        match mode {
            Mode::Native => self.run_native(berth, work),
            Mode::EmulatedHost => self.run_emulated(berth, work),
        }
    }

    fn kernel_path(&self) -> PathBuf {
        match &self.kernel {
            Kernel::BzImage => assets(self.arch).bzimage.clone(),
            Kernel::ElfVmlinux => assets(self.arch).vmlinux.clone(),
            Kernel::Path(p) => p.clone(),
        }
    }

    fn full_cmdline(&self) -> String {
        if self.modules.is_empty() {
            self.cmdline.clone()
        } else {
            format!("{} berth.modules={}", self.cmdline, self.modules.join(","))
        }
    }

    /// Writes the initrd to `work` if it is built per run.
    fn initrd_path(&self, work: &Path) -> Option<PathBuf> {
        match &self.initrd {
            Initrd::None => None,
            Initrd::Path(p) => Some(p.clone()),
            Initrd::Default => {
                let path = work.join("initrd");
                self.build_initrd(&path)
                    .unwrap_or_else(|e| panic!("building {}: {e}", path.display()));
                Some(path)
            }
        }
    }

    /// Writes the [`Initrd::Default`] initrd of this run (base initramfs + `/test.sh` and
    /// guest files) to `path`: for booting the same guest some other way (e.g. in QEMU).
    pub fn build_initrd(&self, path: &Path) -> std::io::Result<()> {
        let mut extra = CpioWriter::new(Vec::new());
        if !self.script.is_empty() {
            extra.file("test.sh", 0o755, self.script.as_bytes())?;
        }
        for (p, data, mode) in &self.guest_files {
            extra.file(p, *mode, data)?;
        }
        let extra = extra.finish()?;
        let mut out = BufWriter::new(File::create(path)?);
        cpio::concat_initrd(&assets(self.arch).initramfs, &extra, &mut out)?;
        out.flush()
    }

    /// `berth_args` with the placeholders replaced.
    fn resolved_args(&self, file_dir: Option<&str>, scratch: &str) -> Vec<String> {
        self.berth_args
            .iter()
            .map(|a| self.resolve(a, file_dir, scratch))
            .collect()
    }

    /// `text` with `{file:NAME}` and `{scratch}` replaced for where berth runs.
    fn resolve(&self, text: &str, file_dir: Option<&str>, scratch: &str) -> String {
        let mut names = BTreeMap::new();
        for f in &self.files {
            let name = f
                .file_name()
                .unwrap_or_else(|| panic!("GuestRun file {} has no file name", f.display()))
                .to_string_lossy()
                .into_owned();
            let there = match file_dir {
                Some(d) => format!("{d}/{name}"),
                None => f.to_string_lossy().into_owned(),
            };
            if names.insert(name.clone(), there).is_some() {
                panic!("GuestRun: two files are named {name}");
            }
        }
        substitute(text, &names, scratch).unwrap_or_else(|e| panic!("GuestRun: {e}"))
    }

    fn run_native(&self, berth: &Path, work: WorkDir) -> Outcome {
        let scratch = work.path().join("scratch");
        std::fs::create_dir_all(&scratch).expect("create scratch directory");
        let kernel = self.kernel_path();
        let initrd = self.initrd_path(work.path());
        let mut argv: Vec<String> = vec!["run".into(), "--kernel".into(), path_str(&kernel)];
        if let Some(i) = &initrd {
            argv.extend(["--initrd".into(), path_str(i)]);
        }
        argv.extend(["--cmdline".into(), self.full_cmdline()]);
        argv.extend(self.resolved_args(None, &path_str(&scratch)));
        if let Some(before) = &self.before {
            let snippet = self.resolve(before, None, &path_str(&scratch));
            let st = Command::new("sh")
                .arg("-c")
                .arg(&snippet)
                .env("BERTH", berth)
                .current_dir(&scratch)
                .status()
                .unwrap_or_else(|e| panic!("cannot run the before snippet: {e}"));
            assert!(st.success(), "the before snippet failed ({st}): {snippet}");
        }
        let mut cmd = match &self.user {
            None => Command::new(berth),
            Some((uid, gid, runas)) => {
                let opened = Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "chmod 0666 /dev/kvm && chmod -R a+rwX {} {}",
                        sh_quote(&path_str(&scratch)),
                        self.files
                            .iter()
                            .map(|f| sh_quote(&path_str(f)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ))
                    .status()
                    .unwrap_or_else(|e| panic!("opening up /dev/kvm: {e}"));
                assert!(
                    opened.success(),
                    "cannot give uid {uid} access to /dev/kvm (run the tests as root)"
                );
                let mut c = Command::new(runas);
                c.args([uid.to_string(), gid.to_string()]).arg(berth);
                c
            }
        };
        cmd.args(&argv).current_dir(&scratch);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let input = self.stdin.as_ref().map(|(after, data)| Input {
            after: after.clone(),
            data: data.clone(),
        });
        let hook = self
            .host_script
            .as_ref()
            .map(|(after, script)| process::Hook {
                after: after.clone(),
                script: script.clone(),
                dir: scratch.clone(),
                out: scratch.join(HOST_SCRIPT_OUT),
            });
        let c = process::run_with_input(
            &mut cmd,
            self.timeout,
            env_flag("BERTH_E2E_VERBOSE"),
            input.as_ref(),
            hook.as_ref(),
        )
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", berth.display()));
        let files = self
            .collect
            .iter()
            .filter_map(|n| Some((n.clone(), std::fs::read(scratch.join(n)).ok()?)))
            .collect();
        Outcome {
            mode: Mode::Native,
            command: command_line(berth, &argv),
            console: normalize(&c.stdout),
            console_bytes: c.stdout,
            berth_log: String::from_utf8_lossy(&c.stderr).into_owned(),
            status: c.status.map(process::code),
            timed_out: c.timed_out,
            files,
            host_log: String::new(),
            problem: None,
            wall: c.elapsed,
            work_dir: work,
        }
    }

    fn run_emulated(&self, berth: &Path, work: WorkDir) -> Outcome {
        let kernel = self.kernel_path();
        let kname = kernel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "kernel".into());
        let mut host = HostRun::new(self.arch, String::new())
            .executable(berth, "/bin/berth")
            .file(&kernel, format!("/guest/{kname}"))
            .timeout(self.timeout);
        host.memory_mib = self.host_memory_mib;
        host.qemu_args.extend(self.host_qemu_args.iter().cloned());
        let mut argv: Vec<String> =
            vec!["run".into(), "--kernel".into(), format!("/guest/{kname}")];
        if let Some(i) = self.initrd_path(work.path()) {
            host = host.file(i, "/guest/initrd");
            argv.extend(["--initrd".into(), "/guest/initrd".into()]);
        }
        argv.extend(["--cmdline".into(), self.full_cmdline()]);
        argv.extend(self.resolved_args(Some("/files"), "/scratch"));
        for f in &self.files {
            let name = f
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            host = host.file(f, format!("/files/{name}"));
            if self.writable.contains(f) {
                host = host.collect_gz(format!("/files/{name}"));
            }
        }
        for n in &self.collect {
            host = host.collect(format!("/scratch/{n}"));
        }
        let quoted: Vec<String> = argv.iter().map(|a| sh_quote(a)).collect();
        let mut berth_cmd = format!("/bin/berth {}", quoted.join(" "));
        if !self.env.is_empty() {
            let vars: Vec<String> = self
                .env
                .iter()
                .map(|(k, v)| sh_quote(&format!("{k}={v}")))
                .collect();
            berth_cmd = format!("env {} {berth_cmd}", vars.join(" "));
        }
        if let Some((uid, gid, runas)) = &self.user {
            host = host.executable(runas, "/bin/berth-test-runas");
            berth_cmd = format!("/bin/berth-test-runas {uid} {gid} {berth_cmd}");
        }
        // berth runs in the background with its stdout through tee (still a pipe) to a file
        // the typing and the host script watch for their markers, like a person would.
        let stdin = match &self.stdin {
            None => "/dev/null",
            Some(_) => "/tmp/berth-stdin",
        };
        let mut script = String::from(
            "mkdir -p /scratch && cd /scratch\n\
             : >/tmp/berth-console\n\
             mkfifo /tmp/berth-stdin\n",
        );
        if self.user.is_some() {
            // As on any system: /tmp is everyone's (berth makes its sockets' directories there).
            script.push_str(
                "chmod 0666 /dev/kvm; chmod 1777 /tmp; chmod -R a+rwX /scratch /files 2>/dev/null\n",
            );
        }
        if let Some(before) = &self.before {
            script.push_str("BERTH=/bin/berth\n");
            script.push_str(&self.resolve(before, Some("/files"), "/scratch"));
            script.push('\n');
        }
        if let Some((after, data)) = &self.stdin {
            host = host.bytes("/l1/stdin-data", data.clone(), 0o644);
            script.push_str(&format!(
                "( until grep -qF -- {after} /tmp/berth-console; do sleep 0.2; done\n\
                 \x20 cat /l1/stdin-data ) >/tmp/berth-stdin 2>/dev/null &\n\
                 FEED=$!\n",
                after = sh_quote(after)
            ));
        }
        if let Some((after, hook)) = &self.host_script {
            host = host.bytes("/l1/host-script", hook.clone().into_bytes(), 0o755);
            // The script gives up when berth ends without showing the marker.
            script.push_str(&format!(
                "( until grep -qF -- {after} /tmp/berth-console; do [ -f /tmp/berth-rc ] && exit 0; sleep 0.2; done\n\
                 \x20 cd /scratch && BERTH_PID=$(cat /tmp/berth-pid) sh /l1/host-script >/scratch/{HOST_SCRIPT_OUT} 2>&1 ) &\n\
                 HOOK=$!\n",
                after = sh_quote(after)
            ));
        }
        script.push_str(&format!(
            "{{ {berth_cmd} <{stdin} & echo $! >/tmp/berth-pid; wait $!; echo $? >/tmp/berth-rc; }} | tee /tmp/berth-console\n\
             kill $FEED 2>/dev/null\n\
             # The host script may still be finishing (it may wait for berth to go).\n\
             [ -n \"$HOOK\" ] && wait $HOOK\n\
             exit \"$(cat /tmp/berth-rc)\"\n"
        ));
        host.script = script;
        let h = host
            .run_in(work.path())
            .unwrap_or_else(|e| panic!("emulated host: {e}"));
        let files = h
            .files
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("/scratch/")?.to_string(), v.clone())))
            .collect();
        let mut problem = h.problem.clone();
        // A run that hit its deadline may be repeated: it must start from the same image.
        if !h.timed_out {
            for f in &self.writable {
                let name = f.file_name().unwrap_or_default().to_string_lossy();
                match h.files.get(&format!("/files/{name}")) {
                    Some(data) => std::fs::write(f, data)
                        .unwrap_or_else(|e| panic!("writing back {}: {e}", f.display())),
                    None => {
                        problem.get_or_insert(format!(
                            "the writable file {name} did not come back from the emulated host"
                        ));
                    }
                }
            }
        }
        let mut host_log = h.host_log.clone();
        if !h.dmesg.is_empty() {
            host_log.push_str("\n--- emulated host dmesg ---\n");
            host_log.push_str(&h.dmesg);
        }
        Outcome {
            mode: Mode::EmulatedHost,
            command: command_line(Path::new("/bin/berth"), &argv),
            console: normalize(h.stdout.as_bytes()),
            console_bytes: h.stdout.into_bytes(),
            berth_log: h.stderr,
            status: h.status,
            timed_out: h.timed_out,
            files,
            host_log,
            problem,
            wall: h.script_secs.map(Duration::from_secs_f64).unwrap_or(h.wall),
            work_dir: work,
        }
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn command_line(berth: &Path, argv: &[String]) -> String {
    let mut s = sh_quote(&path_str(berth));
    for a in argv {
        s.push(' ');
        s.push_str(&sh_quote(a));
    }
    s
}

/// The console with CR LF (the guest tty's line ends) as LF.
fn normalize(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace("\r\n", "\n")
}

/// Replaces `{file:NAME}` and `{scratch}` in `arg`.
fn substitute(
    arg: &str,
    files: &BTreeMap<String, String>,
    scratch: &str,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("{scratch}") {
            out.push_str(scratch);
            rest = r;
        } else if let Some(r) = after.strip_prefix("{file:") {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unterminated {{file:...}} in {arg:?}"))?;
            let name = &r[..end];
            let path = files
                .get(name)
                .ok_or_else(|| format!("{arg:?} names {name}, which is not in GuestRun::files"))?;
            out.push_str(path);
            rest = &r[end + 1..];
        } else {
            out.push('{');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// What a [`GuestRun`] left.
#[derive(Debug)]
pub struct Outcome {
    pub mode: Mode,
    /// The berth command line as run.
    pub command: String,
    /// What the guest printed on its console (berth's stdout), CR LF turned into LF.
    pub console: String,
    /// The same, as berth wrote it.
    pub console_bytes: Vec<u8>,
    /// berth's stderr.
    pub berth_log: String,
    /// berth's exit status (128+N for signal N); `None` if it never came (killed at the
    /// deadline natively, or the emulated host died).
    pub status: Option<i32>,
    /// berth was stopped at the deadline.
    pub timed_out: bool,
    /// The [`GuestRun::collect`]ed files of `{scratch}` that existed.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The emulated host's console and dmesg (empty natively).
    pub host_log: String,
    /// A harness-level problem in the emulated host (no /dev/kvm, QEMU killed...).
    pub problem: Option<String>,
    /// berth's run time (in the emulated host, by its clock).
    pub wall: Duration,
    /// Kept if the test fails (or BERTH_E2E_KEEP=1).
    pub work_dir: WorkDir,
}

impl Outcome {
    /// What the [`GuestRun::host_script`] printed; fails the test if it left nothing.
    #[track_caller]
    pub fn host_script_output(&self) -> String {
        let bytes = self
            .files
            .get(HOST_SCRIPT_OUT)
            .unwrap_or_else(|| self.fail("the host script left no output"));
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// Panics with `msg` followed by the whole report.
    #[track_caller]
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{self}")
    }

    /// Asserts berth exited with status 0 and nothing went wrong around it.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_status(0)
    }

    /// Asserts berth exited with `code` (and did not time out).
    #[track_caller]
    pub fn assert_status(&self, code: i32) -> &Self {
        if let Some(p) = &self.problem {
            self.fail(p);
        }
        if self.timed_out {
            self.fail(&format!(
                "berth did not finish within the run's {:?}",
                self.wall
            ));
        }
        if self.status != Some(code) {
            self.fail(&format!(
                "berth exited with {:?}, expected {code}",
                self.status
            ));
        }
        self
    }

    /// Asserts the console contains `needle`.
    #[track_caller]
    pub fn assert_console_contains(&self, needle: &str) -> &Self {
        if !self.console.contains(needle) {
            self.fail(&format!("the console lacks {needle:?}"));
        }
        self
    }

    /// Asserts the console does not contain `needle`.
    #[track_caller]
    pub fn assert_console_lacks(&self, needle: &str) -> &Self {
        if self.console.contains(needle) {
            self.fail(&format!("the console contains {needle:?}"));
        }
        self
    }

    /// Asserts berth's log contains `needle`.
    #[track_caller]
    pub fn assert_log_contains(&self, needle: &str) -> &Self {
        if !self.berth_log.contains(needle) {
            self.fail(&format!("berth's log lacks {needle:?}"));
        }
        self
    }

    /// Asserts berth's log does not contain `needle`.
    #[track_caller]
    pub fn assert_log_lacks(&self, needle: &str) -> &Self {
        if self.berth_log.contains(needle) {
            self.fail(&format!("berth's log contains {needle:?}"));
        }
        self
    }

    /// Asserts the guest init ran the test script to its end with status `code`.
    #[track_caller]
    pub fn assert_test_exit(&self, code: i32) -> &Self {
        match self.test_exit() {
            Some(c) if c == code => self,
            Some(c) => self.fail(&format!("/test.sh exited with {c}, expected {code}")),
            None => self.fail("no BERTH-TEST-EXIT line: /test.sh did not run to its end"),
        }
    }

    /// The first console line starting with `prefix` (leading whitespace ignored).
    pub fn console_line(&self, prefix: &str) -> Option<&str> {
        self.console
            .lines()
            .map(str::trim_start)
            .find(|l| l.starts_with(prefix))
    }

    /// Like [`console_line`](Self::console_line), failing the test if there is none.
    #[track_caller]
    pub fn expect_console_line(&self, prefix: &str) -> &str {
        self.console_line(prefix)
            .unwrap_or_else(|| self.fail(&format!("no console line starts with {prefix:?}")))
    }

    /// The guest's uptime (s) when its init printed `BERTH-GUEST-INIT`.
    pub fn guest_init_uptime(&self) -> Option<f64> {
        self.console_line("BERTH-GUEST-INIT ")?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// The status /test.sh ended with (`BERTH-TEST-EXIT <n>`).
    pub fn test_exit(&self) -> Option<i32> {
        self.console_line("BERTH-TEST-EXIT ")?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// The microseconds of berth's `guest boot time: <N> us` log line.
    pub fn boot_time_us(&self) -> Option<u64> {
        let line = self
            .berth_log
            .lines()
            .find(|l| l.contains("guest boot time:"))?;
        let after = line.split("guest boot time:").nth(1)?;
        after.split_whitespace().next()?.parse().ok()
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut t = String::new();
    if start > 0 {
        t.push_str(&format!("[... {start} earlier lines]\n"));
    }
    for l in &all[start..] {
        t.push_str(l);
        t.push('\n');
    }
    t
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(
            f,
            "=== berth ({:?}): status {:?}, timed out {}, ran {:.1?}",
            self.mode, self.status, self.timed_out, self.wall
        )?;
        if let Some(p) = &self.problem {
            writeln!(f, "=== problem: {p}")?;
        }
        writeln!(f, "=== command: {}", self.command)?;
        writeln!(f, "=== guest console ===\n{}", tail(&self.console, 200))?;
        writeln!(f, "=== berth log ===\n{}", tail(&self.berth_log, 100))?;
        if !self.host_log.is_empty() {
            writeln!(f, "=== emulated host ===\n{}", tail(&self.host_log, 80))?;
        }
        writeln!(f, "=== work directory: {}", self.work_dir.path().display())
    }
}

/// Where retried emulated-host stalls are listed (scripts/test.sh prints it at the end).
pub fn stall_log() -> PathBuf {
    std::env::temp_dir().join("berth-e2e-stalls.log")
}

fn record_stall(out: &Outcome) {
    let tail: Vec<&str> = out.host_log.lines().rev().take(8).collect();
    let entry = format!(
        "{}: deadline hit in the emulated host, retried once: {}\n  last console line: {}\n  host log tail:\n    {}\n",
        std::thread::current().name().unwrap_or("?"),
        out.command,
        out.console.lines().last().unwrap_or(""),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")
    );
    eprintln!("{entry}");
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stall_log())
        .and_then(|mut f| std::io::Write::write_all(&mut f, entry.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let mut files = BTreeMap::new();
        files.insert("disk.img".to_string(), "/files/disk.img".to_string());
        assert_eq!(
            substitute("path={file:disk.img},ro", &files, "/s").unwrap(),
            "path=/files/disk.img,ro"
        );
        assert_eq!(
            substitute("file={scratch}/c.log", &files, "/s").unwrap(),
            "file=/s/c.log"
        );
        assert_eq!(substitute("{x}", &files, "/s").unwrap(), "{x}");
        assert!(substitute("{file:nope}", &files, "/s").is_err());
        assert!(substitute("{file:disk.img", &files, "/s").is_err());
    }

    #[test]
    fn cmdline_gets_modules() {
        let r = GuestRun::new(Kernel::BzImage).modules(["virtio_blk", "virtio_net"]);
        assert!(r
            .full_cmdline()
            .ends_with(" quiet i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd berth.modules=virtio_blk,virtio_net"));
        assert_eq!(
            GuestRun::new(Kernel::BzImage).full_cmdline(),
            DEFAULT_CMDLINE
        );
    }

    #[test]
    fn markers_are_read_from_the_console() {
        let work = WorkDir::new("unit");
        let o = Outcome {
            mode: Mode::Native,
            command: String::new(),
            console: "Linux version 6.1\nBERTH-GUEST-INIT 0.73\nhi\nBERTH-TEST-EXIT 0\n".into(),
            console_bytes: Vec::new(),
            berth_log: "berth: guest boot time: 812345 us since berth start\n".into(),
            status: Some(0),
            timed_out: false,
            files: BTreeMap::new(),
            host_log: String::new(),
            problem: None,
            wall: Duration::ZERO,
            work_dir: work,
        };
        o.assert_success()
            .assert_test_exit(0)
            .assert_console_contains("hi");
        assert_eq!(o.guest_init_uptime(), Some(0.73));
        assert_eq!(o.boot_time_us(), Some(812345));
        assert_eq!(o.expect_console_line("Linux version"), "Linux version 6.1");
    }

    /// The emulated host's path for writable files and typed input, with a shell script
    /// standing in for berth: it waits for input, then writes into the disk image it was given.
    #[test]
    fn emulated_run_with_a_stand_in_writes_back_and_types() {
        if crate::mode(Arch::X86_64) != Some(Mode::EmulatedHost) {
            eprintln!("not run: berth runs natively here (or BERTH_E2E_MODE=skip)");
            return;
        }
        let dir = WorkDir::new("unit-emulated");
        let fake = dir.path().join("fake-berth");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho PROMPT\nread line\necho \"got: $line\"\n\
             for a; do case \"$a\" in path=*) p=${a#path=} ;; esac; done\n\
             printf 'from the stand-in' | dd of=\"$p\" bs=4096 seek=1 conv=notrunc 2>/dev/null\n\
             exit 7\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let disk = dir.path().join("disk.img");
        std::fs::write(&disk, vec![0xaa; 1 << 20]).unwrap();
        // Any file will do as the kernel: it is only shipped.
        let run = GuestRun::new(Kernel::Path(fake.clone()))
            .initrd(Initrd::None)
            .writable_file(&disk)
            .args(["--disk", "path={file:disk.img}"])
            .stdin_after("PROMPT", "typed\n")
            .timeout(Duration::from_secs(120));
        let _lock = crate::lock_machine();
        let out = run.run_emulated(&fake, WorkDir::new("unit-emulated-run"));
        out.assert_status(7).assert_console_contains("got: typed");
        let data = std::fs::read(&disk).unwrap();
        assert_eq!(data.len(), 1 << 20);
        assert_eq!(&data[4096..4096 + 17], b"from the stand-in");
        assert!(data[..4096].iter().all(|&b| b == 0xaa));
    }

    /// The native path, with a shell script standing in for berth.
    #[test]
    fn native_run_with_a_stand_in() {
        let dir = WorkDir::new("unit-native");
        let fake = dir.path().join("fake-berth");
        std::fs::write(
            &fake,
            "#!/bin/sh\nprintf 'args:'; printf ' [%s]' \"$@\"; printf '\\r\\n'\n\
             echo 'berth: guest boot time: 42 us since berth start' >&2\n\
             echo collected > console.log\nexit 0\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let disk = dir.path().join("disk.img");
        std::fs::write(&disk, b"").unwrap();
        let run = GuestRun::new(Kernel::Path("/k".into()))
            .initrd(Initrd::None)
            .cmdline("console=ttyS0 x")
            .file(&disk)
            .args([
                "--disk",
                "path={file:disk.img}",
                "--serial",
                "file={scratch}/console.log",
            ])
            .collect("console.log")
            .collect("absent");
        let out = run.run_native(&fake, WorkDir::new("unit-native-run"));
        let scratch = out.work_dir.path().join("scratch");
        let want = format!(
            "args: [run] [--kernel] [/k] [--cmdline] [console=ttyS0 x] [--disk] [path={}] \
             [--serial] [file={}/console.log]\n",
            disk.display(),
            scratch.display()
        );
        assert_eq!(out.console, want);
        assert!(out.console_bytes.ends_with(b"\r\n"));
        out.assert_success();
        assert_eq!(out.boot_time_us(), Some(42));
        assert_eq!(out.files.get("console.log").unwrap(), b"collected\n");
        assert!(!out.files.contains_key("absent"));
    }
}
