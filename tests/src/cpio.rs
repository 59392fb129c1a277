//! Building `newc` cpio archives, the format of a Linux initramfs.
//!
//! The archive format itself (headers, padding, trailer) is the `cpio` crate's; this module only
//! adds what the harness needs on top: paths normalized and checked, parent directories created
//! on demand, unique inode numbers, files streamed from disk, and [`concat_initrd`].
//!
//! Linux unpacks every archive it finds in the initrd, one after another, and later entries
//! replace earlier ones; compressed and uncompressed archives may follow each other as long as
//! each uncompressed one starts on a 4-byte boundary (`init/initramfs.c`). The harness uses that
//! to add a test's `/test.sh` to the prebuilt guest initramfs without rebuilding it:
//! [`concat_initrd`].

use ::cpio::newc::{self, ModeFileType};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

/// Writes a `newc` archive entry by entry. Parent directories are created on demand (mode 0755).
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            next_ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        let path = normalize(path)?;
        if path.is_empty() {
            return Ok(());
        }
        self.parents(&path)?;
        if self.dirs.insert(path.clone()) {
            self.entry(&path, ModeFileType::Directory, 0o755, &[])?;
        }
        Ok(())
    }

    /// Adds a regular file with the given permission bits (e.g. `0o755`) and contents.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.entry(&path, ModeFileType::Regular, mode, data)
    }

    /// Adds a regular file whose contents are read from `src` (symbolic links followed).
    pub fn file_from(&mut self, path: &str, mode: u32, src: &Path) -> io::Result<()> {
        let path = normalize(path)?;
        let f = File::open(src).map_err(|e| annotate(e, src))?;
        let len = f.metadata()?.len();
        let size = entry_size(len, &src.display().to_string())?;
        self.parents(&path)?;
        let mut w = self
            .builder(&path, ModeFileType::Regular, mode)
            .write(&mut self.out, size);
        // The crate's writer refuses more than `size` bytes but pads (and so ends the entry
        // properly) only when it got exactly `size`: a file that shrank must be an error here.
        let copied = io::copy(&mut f.take(len), &mut w)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being archived", src.display()),
            ));
        }
        w.finish()?;
        Ok(())
    }

    /// Adds a symbolic link `path` -> `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.entry(&path, ModeFileType::Symlink, 0o777, target.as_bytes())
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        newc::trailer(&mut self.out)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let dir = &path[..end + i];
            if self.dirs.insert(dir.to_string()) {
                self.entry(dir, ModeFileType::Directory, 0o755, &[])?;
            }
            end += i + 1;
        }
        Ok(())
    }

    /// The header of the next entry: a fresh inode number (Linux links regular files with
    /// `nlink >= 2` and the same inode number together, so they must not repeat), owner root.
    fn builder(&mut self, name: &str, kind: ModeFileType, perm: u32) -> newc::Builder {
        let nlink = if matches!(kind, ModeFileType::Directory) {
            2
        } else {
            1
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        newc::Builder::new(name)
            .ino(ino)
            .mode(perm & 0o7777)
            .set_mode_file_type(kind)
            .nlink(nlink)
    }

    fn entry(&mut self, name: &str, kind: ModeFileType, perm: u32, data: &[u8]) -> io::Result<()> {
        let size = entry_size(data.len() as u64, name)?;
        let mut w = self.builder(name, kind, perm).write(&mut self.out, size);
        w.write_all(data)?;
        w.finish()?;
        Ok(())
    }
}

/// A newc header holds sizes in 32 bits.
fn entry_size(len: u64, what: &str) -> io::Result<u32> {
    u32::try_from(len).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} is larger than a cpio entry can be (4 GiB)"),
        )
    })
}

/// `path` without leading `/` or `./`, refusing `..` and empty components.
fn normalize(path: &str) -> io::Result<String> {
    let p = path.trim_start_matches('/').trim_start_matches("./");
    let p = p.trim_end_matches('/');
    if p.split('/')
        .any(|c| c == ".." || (c.is_empty() && !p.is_empty()))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad path in cpio archive: {path:?}"),
        ));
    }
    Ok(p.to_string())
}

fn annotate(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

/// Writes `base` (any initramfs: compressed or not) followed by zero padding to a 4-byte
/// boundary and then the uncompressed archive `extra`; Linux unpacks both, `extra` last.
pub fn concat_initrd(base: &Path, extra: &[u8], out: &mut impl Write) -> io::Result<()> {
    let mut f = File::open(base).map_err(|e| annotate(e, base))?;
    let n = io::copy(&mut f, out)?;
    out.write_all(&[0u8; 3][..((4 - n % 4) % 4) as usize])?;
    out.write_all(extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};

    /// (name, mode, ino, nlink, data) per entry, read back with the crate's reader up to the
    /// trailer; also checks that the archive ends right after the trailer.
    fn read_back(bytes: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        loop {
            let mut r = newc::Reader::new(rest).unwrap();
            if r.entry().is_trailer() {
                rest = r.finish().unwrap();
                assert!(rest.is_empty(), "{} bytes after the trailer", rest.len());
                return out;
            }
            let e = r.entry().clone();
            let mut data = Vec::new();
            r.read_to_end(&mut data).unwrap();
            out.push((e.name().to_string(), e.mode(), e.ino(), e.nlink(), data));
            rest = r.finish().unwrap();
        }
    }

    fn temp_dir(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-cpio-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const DIR: u32 = 0o040000;
    const REG: u32 = 0o100000;
    const LNK: u32 = 0o120000;

    fn sample(src: &Path) -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.file("/a/b/test.sh", 0o755, b"echo hi\n").unwrap();
        w.file("a/c", 0o644, b"xyz").unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        w.dir("/a").unwrap();
        w.dir("./empty/").unwrap();
        w.file_from("bin/busybox", 0o4755, src).unwrap();
        w.file("a/b/none", 0o600, b"").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn archive_round_trips_with_parents_and_padding() {
        let dir = temp_dir("roundtrip");
        let src = dir.join("src");
        let big: Vec<u8> = (0..100_003u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src, &big).unwrap();
        let bytes = sample(&src);
        assert_eq!(bytes.len() % 4, 0);
        let e = read_back(&bytes);
        let names: Vec<_> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "a",
                "a/b",
                "a/b/test.sh",
                "a/c",
                "bin",
                "bin/sh",
                "empty",
                "bin/busybox",
                "a/b/none"
            ]
        );
        let modes: Vec<_> = e.iter().map(|x| x.1).collect();
        assert_eq!(
            modes,
            [
                DIR | 0o755,
                DIR | 0o755,
                REG | 0o755,
                REG | 0o644,
                DIR | 0o755,
                LNK | 0o777,
                DIR | 0o755,
                REG | 0o4755,
                REG | 0o600
            ]
        );
        assert_eq!(e[2].4, b"echo hi\n");
        assert_eq!(e[3].4, b"xyz");
        assert_eq!(e[5].4, b"busybox");
        assert_eq!(e[7].4, big);
        assert!(e[8].4.is_empty());
        // Distinct inode numbers; directories have two links, everything else one.
        let inos: BTreeSet<_> = e.iter().map(|x| x.2).collect();
        assert_eq!(inos.len(), e.len());
        assert!(e
            .iter()
            .all(|x| x.3 == if x.1 & DIR == DIR { 2 } else { 1 }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn system_cpio_extracts_the_archive() {
        if Command::new("cpio").arg("--version").output().is_err() {
            eprintln!("skipped: cpio is not installed");
            return;
        }
        let dir = temp_dir("extract");
        let src = dir.join("src");
        std::fs::write(&src, b"\x7fELF pretend\n").unwrap();
        let archive = sample(&src);
        let root = dir.join("root");
        std::fs::create_dir(&root).unwrap();
        let mut child = Command::new("cpio")
            .args(["-id", "--quiet", "--no-absolute-filenames"])
            .current_dir(&root)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(child.wait().unwrap().success(), "cpio -id failed");
        assert_eq!(
            std::fs::read(root.join("a/b/test.sh")).unwrap(),
            b"echo hi\n"
        );
        assert_eq!(std::fs::read(root.join("a/c")).unwrap(), b"xyz");
        assert_eq!(std::fs::read(root.join("a/b/none")).unwrap(), b"");
        assert_eq!(
            std::fs::read(root.join("bin/busybox")).unwrap(),
            b"\x7fELF pretend\n"
        );
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert!(root.join("empty").is_dir());
        use std::os::unix::fs::PermissionsExt;
        let perm = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(perm("a/b/test.sh"), 0o755);
        assert_eq!(perm("a/b/none"), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_paths_are_refused() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("../x", 0o644, b"").is_err());
        assert!(w.file("a//b", 0o644, b"").is_err());
        assert!(w
            .file_from("x", 0o644, Path::new("/nonexistent/berth"))
            .is_err());
        // Nothing was written for the refused entries.
        assert!(read_back(&w.finish().unwrap()).is_empty());
    }

    #[test]
    fn concatenation_pads_to_four_bytes() {
        let dir = temp_dir("concat");
        let base = dir.join("base");
        std::fs::write(&base, b"12345").unwrap();
        let mut w = CpioWriter::new(Vec::new());
        w.file("test.sh", 0o755, b"true\n").unwrap();
        let extra = w.finish().unwrap();
        let mut out = Vec::new();
        concat_initrd(&base, &extra, &mut out).unwrap();
        assert_eq!(&out[..8], b"12345\0\0\0");
        assert_eq!(&out[8..], extra);
        let e = read_back(&out[8..]);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].0.as_str(), e[0].4.as_slice()),
            ("test.sh", &b"true\n"[..])
        );
        // Already aligned: no padding.
        std::fs::write(&base, b"1234").unwrap();
        let mut out = Vec::new();
        concat_initrd(&base, b"0707", &mut out).unwrap();
        assert_eq!(out, b"12340707");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
