//! ext4 disk images for the virtio-blk tests, made and checked with e2fsprogs on this machine
//! (`mkfs.ext4 -d`, `fsck.ext4 -n`, `debugfs`; `scripts/test.sh` installs them).
//!
//! ```no_run
//! use berth_tests::ext4::{self, Ext4Image};
//! # let dir = std::path::Path::new("/tmp");
//! let img = dir.join("disk.img");
//! Ext4Image::new(16).file("hello.txt", "hi\n").build(&img).unwrap();
//! assert_eq!(ext4::read_file(&img, "/hello.txt").unwrap(), b"hi\n");
//! ext4::fsck(&img).unwrap();
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An e2fsprogs tool: on PATH, else in /usr/sbin or /sbin (not on a normal user's PATH).
pub fn tool(name: &str) -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{name} not found (install e2fsprogs; scripts/test.sh does)"))
}

fn run(name: &str, args: &[&std::ffi::OsStr]) -> Result<Output, String> {
    Command::new(tool(name)?)
        .args(args)
        .output()
        .map_err(|e| format!("{name}: {e}"))
}

fn describe(name: &str, out: &Output) -> String {
    format!(
        "{name} exited with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Makes `image` (created or truncated to `size_mib` MiB) an ext4 file system holding the
/// contents of `dir` (`mkfs.ext4 -d`), owned by root, with volume label `label`.
pub fn mkfs_from_dir(dir: &Path, image: &Path, size_mib: u64, label: &str) -> Result<(), String> {
    let f = std::fs::File::create(image).map_err(|e| format!("{}: {e}", image.display()))?;
    f.set_len(size_mib << 20)
        .map_err(|e| format!("{}: {e}", image.display()))?;
    drop(f);
    let out = run(
        "mkfs.ext4",
        &[
            "-q".as_ref(),
            "-F".as_ref(),
            "-L".as_ref(),
            label.as_ref(),
            "-E".as_ref(),
            "root_owner=0:0".as_ref(),
            "-d".as_ref(),
            dir.as_os_str(),
            image.as_os_str(),
        ],
    )?;
    if !out.status.success() {
        return Err(describe("mkfs.ext4", &out));
    }
    Ok(())
}

/// Checks `image` without changing it (`fsck.ext4 -n -f`): `Ok` with fsck's report if clean.
pub fn fsck(image: &Path) -> Result<String, String> {
    let out = run(
        "fsck.ext4",
        &["-n".as_ref(), "-f".as_ref(), image.as_os_str()],
    )?;
    if !out.status.success() {
        return Err(describe("fsck.ext4 -n -f", &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The contents of `path` (absolute, in the file system) in `image`, read with
/// `debugfs -R "cat PATH"`. debugfs exits 0 even when the file is missing and says so on
/// stderr, so anything on stderr but its version banner is an error.
pub fn read_file(image: &Path, path: &str) -> Result<Vec<u8>, String> {
    let request = format!("cat {path}");
    let out = run(
        "debugfs",
        &["-R".as_ref(), request.as_ref(), image.as_os_str()],
    )?;
    let complaints: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .map(str::to_string)
        .collect();
    if !out.status.success() || !complaints.is_empty() {
        return Err(format!(
            "debugfs -R {request:?} {}: {}",
            image.display(),
            complaints.join("; ")
        ));
    }
    Ok(out.stdout)
}

/// An ext4 image to build: its size and the files to put in it.
#[derive(Clone, Debug)]
pub struct Ext4Image {
    pub size_mib: u64,
    pub label: String,
    /// (path relative to the root, contents).
    pub files: Vec<(String, Vec<u8>)>,
}

impl Ext4Image {
    /// An empty image of `size_mib` MiB labelled `berth`.
    pub fn new(size_mib: u64) -> Ext4Image {
        Ext4Image {
            size_mib,
            label: "berth".into(),
            files: Vec::new(),
        }
    }

    pub fn label(mut self, label: &str) -> Ext4Image {
        self.label = label.into();
        self
    }

    /// Adds a file (`path` relative to the root; directories are made).
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>) -> Ext4Image {
        self.files
            .push((path.trim_start_matches('/').to_string(), data.into()));
        self
    }

    /// Writes the image to `image`, staging the files in a directory next to it.
    pub fn build(&self, image: &Path) -> Result<(), String> {
        let stage = image.with_extension("contents");
        let _ = std::fs::remove_dir_all(&stage);
        for (p, data) in &self.files {
            let dest = stage.join(p);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::write(&dest, data).map_err(|e| format!("{}: {e}", dest.display()))?;
        }
        std::fs::create_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
        let r = mkfs_from_dir(&stage, image, self.size_mib, &self.label);
        let _ = std::fs::remove_dir_all(&stage);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkDir;

    #[test]
    fn image_from_files_reads_back_and_is_clean() {
        let dir = WorkDir::new("unit-ext4");
        let img = dir.path().join("disk.img");
        Ext4Image::new(8)
            .file("hello.txt", "hello\n")
            .file("/sub/dir/data.bin", vec![0u8, 1, 2, 255])
            .build(&img)
            .unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 8 << 20);
        assert_eq!(read_file(&img, "/hello.txt").unwrap(), b"hello\n");
        assert_eq!(
            read_file(&img, "/sub/dir/data.bin").unwrap(),
            [0, 1, 2, 255]
        );
        let err = read_file(&img, "/absent").unwrap_err();
        assert!(err.contains("not found"), "{err}");
        fsck(&img).unwrap();
        assert!(!img.with_extension("contents").exists());
    }

    #[test]
    fn fsck_reports_a_damaged_image() {
        let dir = WorkDir::new("unit-ext4-bad");
        let img = dir.path().join("bad.img");
        Ext4Image::new(8).file("a", "a").build(&img).unwrap();
        // Zero the block group descriptors (block 2 with 1 KiB blocks, the small-fs default,
        // or the end of block 0 with 4 KiB blocks): fsck must object.
        let mut data = std::fs::read(&img).unwrap();
        data[2048..8192].fill(0);
        std::fs::write(&img, data).unwrap();
        assert!(fsck(&img).is_err());
    }
}
