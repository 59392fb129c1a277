//! The README's boot command exactly as a newcomer types it: `scripts/boot-shell.sh` with no
//! arguments, on a terminal. util-linux `script` gives it a pty; the test types into that
//! terminal, reads the guest's answer and powers the guest off. The script itself decides
//! where berth runs (natively on hardware KVM, else in the emulated x86_64 host) and takes the
//! machine lock for its emulated host, so this test takes none.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn boot_shell_with_no_arguments_reaches_a_shell() {
    if std::env::var("BERTH_E2E_MODE").as_deref() == Ok("skip") {
        eprintln!("skipped (BERTH_E2E_MODE=skip)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = Command::new("script")
        .args(["-q", "-e", "-f", "-c", "scripts/boot-shell.sh", "/dev/null"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("util-linux `script` (package bsdutils) runs");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let sink = seen.clone();
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let transcript = |seen: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&seen.lock().unwrap()).replace("\r\n", "\n")
    };
    // Waits for `needle` on the terminal; fails at once when the script ends first.
    let wait_for = |child: &mut std::process::Child, needle: &str, limit: Duration| {
        let start = Instant::now();
        while start.elapsed() < limit {
            if contains(&seen.lock().unwrap(), needle) {
                return;
            }
            if let Some(st) = child.try_wait().unwrap() {
                thread::sleep(Duration::from_millis(200)); // the reader's last bytes
                panic!(
                    "boot-shell.sh ended ({st}) before {needle:?}; the terminal showed:\n{}",
                    transcript(&seen)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!(
            "no {needle:?} after {limit:?}; the terminal showed:\n{}",
            transcript(&seen)
        );
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Building berth, fetching assets and booting the emulated host fit in this on 2 cores.
    wait_for(&mut child, "berth guest shell", Duration::from_secs(900));
    // The answer only the shell can give: the typed line itself shows `$((6*7))`.
    thread::sleep(Duration::from_secs(1));
    stdin.write_all(b"echo readme-$((6*7))-ok\r").unwrap();
    wait_for(&mut child, "readme-42-ok", Duration::from_secs(60));
    stdin.write_all(b"poweroff -f\r").unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!(
                "boot-shell.sh did not end 120 s after poweroff -f:\n{}",
                transcript(&seen)
            );
        }
        thread::sleep(Duration::from_millis(100));
    };
    drop(stdin);
    reader.join().unwrap();
    let text = transcript(&seen);
    eprintln!("{text}");
    assert!(status.success(), "boot-shell.sh ended with {status}");
    assert!(
        !text.contains("unexpected argument"),
        "berth was given an argument nobody typed"
    );
    if text.contains("emulated host: starting berth") {
        assert!(
            text.contains("emulated host: berth exited with status 0"),
            "berth did not end with status 0 in the emulated host"
        );
    }
}
