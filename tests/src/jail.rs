//! The jail around berth's device processes, seen from outside: a script for the emulated
//! host that lists berth's and each device process's namespaces, threads and fds, and the
//! checks on what it printed (used by the x86_64 and aarch64 sandbox tests).

use crate::Outcome;

/// For berth and each of its device processes: "proc NAME PID uid=U ns:mnt=.. ns:pid=..",
/// one "thread PID TID Seccomp=S NoNewPrivs=N CapEff=C" per thread, "fd PID N -> TARGET" per
/// fd, "root PID ENTRIES".
pub const INSPECT: &str = r#"show() { # pid name
  p=$1
  echo "proc $2 $p uid=$(awk '/^Uid:/ { print $2 }' /proc/$p/status) $(for n in mnt pid net user ipc uts; do printf 'ns:%s=%s ' $n "$(readlink /proc/$p/ns/$n)"; done)"
  for t in /proc/$p/task/*; do
    echo "thread $p ${t##*/} Seccomp=$(awk '/^Seccomp:/ { print $2 }' $t/status) NoNewPrivs=$(awk '/^NoNewPrivs:/ { print $2 }' $t/status) CapEff=$(awk '/^CapEff:/ { print $2 }' $t/status) CapPrm=$(awk '/^CapPrm:/ { print $2 }' $t/status) CapBnd=$(awk '/^CapBnd:/ { print $2 }' $t/status)"
  done
  for f in /proc/$p/fd/*; do echo "fd $p ${f##*/} -> $(readlink $f)"; done
  echo "root $p $(ls -a /proc/$p/root/ 2>&1 | tr '\n' ' ')"
}
show $BERTH_PID berth
for d in /proc/[0-9]*; do
  [ "$(awk '/^PPid:/ { print $2 }' $d/status 2>/dev/null)" = "$BERTH_PID" ] || continue
  name=$(tr '\0' '\n' <$d/cmdline | awk 'prev == "--name" { print; exit } { prev = $0 }')
  show ${d#/proc/} "$name"
done
"#;

pub struct Proc<'a> {
    pub name: &'a str,
    pub pid: &'a str,
    pub uid: &'a str,
    pub ns: Vec<&'a str>,
}

pub fn procs(text: &str) -> Vec<Proc<'_>> {
    text.lines()
        .filter_map(|l| l.strip_prefix("proc "))
        .map(|l| {
            let mut w = l.split_whitespace();
            let (name, pid) = (w.next().unwrap(), w.next().unwrap());
            let uid = w.next().unwrap().trim_start_matches("uid=");
            Proc {
                name,
                pid,
                uid,
                ns: w.collect(),
            }
        })
        .collect()
}

/// Checks the jail of every device process in `text`; returns how many there were.
pub fn check_jails(out: &Outcome, text: &str, uid: &str) -> usize {
    let all = procs(text);
    let berth = all
        .iter()
        .find(|p| p.name == "berth")
        .unwrap_or_else(|| out.fail(&format!("berth not inspected:\n{text}")));
    let devices: Vec<&Proc> = all.iter().filter(|p| p.name != "berth").collect();
    for d in &devices {
        if d.uid != uid {
            out.fail(&format!(
                "{} runs as uid {}, not {uid}:\n{text}",
                d.name, d.uid
            ));
        }
        for kind in ["mnt", "pid", "net", "user"] {
            let ns = |p: &Proc| {
                p.ns.iter()
                    .find(|n| n.starts_with(&format!("ns:{kind}=")))
                    .map(|n| n.to_string())
            };
            if ns(d).is_none() || ns(d) == ns(berth) {
                out.fail(&format!(
                    "{} shares berth's {kind} namespace:\n{text}",
                    d.name
                ));
            }
        }
        let threads: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("thread {} ", d.pid)))
            .collect();
        if threads.len() < 2 {
            out.fail(&format!(
                "{} has {} threads:\n{text}",
                d.name,
                threads.len()
            ));
        }
        for t in &threads {
            for want in [
                "Seccomp=2",
                "NoNewPrivs=1",
                "CapEff=0000000000000000",
                "CapPrm=0000000000000000",
                "CapBnd=0000000000000000",
            ] {
                if !t.contains(want) {
                    out.fail(&format!("{}: a thread lacks {want}: {t}", d.name));
                }
            }
        }
        let root = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("root {} ", d.pid)))
            .unwrap_or("");
        if root.split_whitespace().collect::<Vec<_>>() != [".", ".."] {
            out.fail(&format!("{}'s root is not empty: {root}", d.name));
        }
        // Its fds: stdio (/dev/null twice, berth's stderr), its socket, the report pipe and
        // its resources; and what the running backend opened (eventfds, epoll, guest RAM,
        // the connection): nothing else, and no path but its disk image.
        for l in text
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("fd {} ", d.pid)))
        {
            let target = l.split(" -> ").nth(1).unwrap_or("");
            let expected = target.starts_with("socket:")
                || target.starts_with("pipe:")
                || target.starts_with("anon_inode:")
                || target == "/dev/null"
                || target.starts_with("/#") // guest RAM: the unlinked tmpfs file
                || target.starts_with("/memfd:")
                || (d.name.starts_with("virtio-blk") && target.ends_with(".img"));
            if !expected {
                out.fail(&format!("{}: unexpected fd {l}", d.name));
            }
        }
    }
    devices.len()
}

/// Checks that every thread of berth itself runs under a seccomp filter (its own per-thread
/// filters: vCPUs, control loop, helpers).
pub fn check_berth_filtered(out: &Outcome, text: &str) {
    let Some(berth) = procs(text).into_iter().find(|p| p.name == "berth") else {
        out.fail(&format!("berth not inspected:\n{text}"))
    };
    let threads: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("thread {} ", berth.pid)))
        .collect();
    if threads.len() < 3 {
        out.fail(&format!("berth has {} threads:\n{text}", threads.len()));
    }
    for t in threads {
        if !t.contains("Seccomp=2") {
            out.fail(&format!(
                "a thread of berth runs without a filter: {t}\n{text}"
            ));
        }
    }
}

/// Fails if the emulated host's kernel logged a call outside a seccomp filter (audit type
/// 1326: `--seccomp log`).
pub fn check_no_call_logged(out: &Outcome) {
    let logged: Vec<&str> = out
        .host_log
        .lines()
        .filter(|l| l.contains("type=1326"))
        .collect();
    if !logged.is_empty() {
        out.fail(&format!(
            "calls outside the filters were logged:\n{}",
            logged.join("\n")
        ));
    }
}

/// A host script: once berth ($BERTH_PID) is gone, lists any device process still alive
/// ("left: PID"), then says "checked". [`check_no_device_left`] reads its output.
pub const NO_DEVICE_LEFT: &str = r#"while kill -0 $BERTH_PID 2>/dev/null; do sleep 0.2; done
sleep 1
for d in /proc/[0-9]*; do
  tr '\0' ' ' <$d/cmdline 2>/dev/null | grep -q -- '[-]-jail-report-fd' && echo "left: ${d#/proc/}"
done
echo checked
"#;

/// Fails `out` if [`NO_DEVICE_LEFT`] found a device process that outlived berth.
pub fn check_no_device_left(out: &Outcome) {
    let text = out.host_script_output();
    if text.contains("left: ") || !text.contains("checked") {
        out.fail(&format!("device processes outlived berth:\n{text}"));
    }
}
