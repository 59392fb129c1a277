//! The fuzz corpus as regression tests, on a stable toolchain: every committed input of every
//! target (`fuzz/corpus/<target>/`, and `fuzz/regressions/<target>/` for inputs that once
//! found a bug) runs through the target again; the seeds are where they belong; and the ACPI
//! tables and device trees the corpus makes pass iasl and dtc.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The committed inputs of `target`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in ["corpus", "regressions"] {
        if let Ok(rd) = std::fs::read_dir(root().join(dir).join(target)) {
            v.extend(rd.map(|e| e.unwrap().path()));
        }
    }
    v.sort();
    v
}

#[test]
fn every_committed_input_runs_cleanly() {
    let mut total = 0;
    for t in berth_fuzz::TARGETS {
        let files = inputs(t.name);
        assert!(!files.is_empty(), "{}: no corpus committed", t.name);
        for f in files {
            let data = std::fs::read(&f).unwrap();
            // Named before it runs: a panic's message then says which input it was.
            eprintln!("{}", f.display());
            (t.run)(&data);
            total += 1;
        }
    }
    eprintln!("{total} inputs replayed");
}

#[test]
fn seeds_are_in_the_corpus() {
    let write = std::env::var_os("BERTH_FUZZ_WRITE_SEEDS").is_some();
    for (target, name, bytes) in berth_fuzz::seeds::all() {
        assert!(
            berth_fuzz::target(target).is_some(),
            "seed for unknown target {target}"
        );
        let path = root()
            .join("corpus")
            .join(target)
            .join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let have = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (BERTH_FUZZ_WRITE_SEEDS=1 cargo test -p berth-fuzz writes it)",
                path.display()
            )
        });
        assert!(
            have == bytes,
            "{} is stale (BERTH_FUZZ_WRITE_SEEDS=1 rewrites it)",
            path.display()
        );
    }
}

/// Runs `tool args` in `dir`; `None` when the tool is not installed.
fn tool(tool: &str, args: &[&str], dir: &Path) -> Option<std::process::Output> {
    match Command::new(tool).args(args).current_dir(dir).output() {
        Ok(o) => Some(o),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{tool}: {e}"),
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[cfg(target_arch = "x86_64")]
#[test]
fn corpus_acpi_tables_disassemble_with_iasl() {
    let dir = scratch("iasl");
    let mut checked = 0;
    for f in inputs("acpi") {
        let Some(tables) = berth_fuzz::acpi::tables(&std::fs::read(&f).unwrap()) else {
            continue;
        };
        for (sig, bytes) in tables {
            let name = format!("{}.dat", String::from_utf8_lossy(&sig));
            std::fs::write(dir.join(&name), &bytes).unwrap();
            let Some(out) = tool("iasl", &["-d", &name], &dir) else {
                eprintln!("skipped: iasl (acpica-tools) is not installed");
                return;
            };
            let log = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && !log.contains("Error"),
                "{}: iasl -d {name}: {log}",
                f.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn corpus_device_trees_decompile_with_dtc() {
    let dir = scratch("dtc");
    let mut checked = 0;
    for f in inputs("fdt") {
        let Some(blob) = berth_fuzz::fdt::blob(&std::fs::read(&f).unwrap()) else {
            continue;
        };
        std::fs::write(dir.join("t.dtb"), &blob).unwrap();
        let Some(out) = tool(
            "dtc",
            &["-I", "dtb", "-O", "dts", "-o", "t.dts", "t.dtb"],
            &dir,
        ) else {
            eprintln!("skipped: dtc (device-tree-compiler) is not installed");
            return;
        };
        assert!(
            out.status.success(),
            "{}: dtc: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked > 0);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The seeds written down by hand get where they are meant to: the frontend through its
/// whole conversation, the loaders to a loaded kernel.
#[test]
fn seeds_get_past_the_first_checks() {
    for (target, name, bytes) in berth_fuzz::seeds::all() {
        match target {
            "vhost_user_frontend" => {
                let config = berth_fuzz::frontend::converse(
                    1 + usize::from(bytes[0]),
                    usize::from(bytes[1]),
                    &bytes[2..],
                );
                assert!(config.is_some(), "{name}: the conversation broke off");
            }
            #[cfg(target_arch = "x86_64")]
            "boot_x86_64" => assert!(berth_fuzz::boot::loads(&bytes), "{name} does not load"),
            "fdt" => assert!(
                berth_fuzz::fdt::blob(&bytes).is_some(),
                "{name} makes no tree"
            ),
            _ => {}
        }
    }
}
