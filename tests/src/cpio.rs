//! A writer for `newc` cpio archives, the format of a Linux initramfs.
//!
//! Linux unpacks every archive it finds in the initrd, one after another, and later entries
//! replace earlier ones; compressed and uncompressed archives may follow each other as long as
//! each uncompressed one starts on a 4-byte boundary (`init/initramfs.c`). The harness uses that
//! to add a test's `/test.sh` to the prebuilt guest initramfs without rebuilding it:
//! [`concat_initrd`].

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Writes a `newc` archive entry by entry. Parent directories are created on demand (mode 0755).
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            written: 0,
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
            self.header(&path, S_IFDIR | 0o755, 0)?;
        }
        Ok(())
    }

    /// Adds a regular file with the given permission bits (e.g. `0o755`) and contents.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.header(&path, S_IFREG | (mode & 0o7777), data.len() as u64)?;
        self.data(data)?;
        self.pad()
    }

    /// Adds a regular file whose contents are read from `src` (symbolic links followed).
    pub fn file_from(&mut self, path: &str, mode: u32, src: &Path) -> io::Result<()> {
        let path = normalize(path)?;
        let mut f = File::open(src).map_err(|e| annotate(e, src))?;
        let len = f.metadata()?.len();
        if len > u32::MAX as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is larger than a cpio entry can be (4 GiB)",
                    src.display()
                ),
            ));
        }
        self.parents(&path)?;
        self.header(&path, S_IFREG | (mode & 0o7777), len)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = f.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while being archived", src.display()),
                ));
            }
            self.data(&buf[..n])?;
            left -= n as u64;
        }
        self.pad()
    }

    /// Adds a symbolic link `path` -> `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.header(&path, S_IFLNK | 0o777, target.len() as u64)?;
        self.data(target.as_bytes())?;
        self.pad()
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let dir = &path[..end + i];
            if self.dirs.insert(dir.to_string()) {
                self.header(dir, S_IFDIR | 0o755, 0)?;
            }
            end += i + 1;
        }
        Ok(())
    }

    fn header(&mut self, name: &str, mode: u32, size: u64) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            size as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        let mut h = String::with_capacity(110 + name.len() + 4);
        h.push_str("070701");
        for f in fields {
            h.push_str(&format!("{f:08X}"));
        }
        h.push_str(name);
        h.push('\0');
        self.data(h.as_bytes())?;
        self.pad()
    }

    fn data(&mut self, d: &[u8]) -> io::Result<()> {
        self.out.write_all(d)?;
        self.written += d.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.data(&[0u8; 3][..n])
    }
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

    /// A minimal newc reader: (name, mode, data) per entry, up to the trailer.
    fn parse(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = 0usize;
        loop {
            assert_eq!(&b[..6], b"070701", "magic at offset {off}");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap();
            let hdr = (110 + namesize).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                return out;
            }
            out.push((name, mode, b[hdr..hdr + size].to_vec()));
            let adv = hdr + size.div_ceil(4) * 4;
            off += adv;
            b = &b[adv..];
        }
    }

    #[test]
    fn archive_round_trips_with_parents_and_padding() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("/a/b/test.sh", 0o755, b"echo hi\n").unwrap();
        w.file("a/c", 0o644, b"xyz").unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        w.dir("/a").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let e = parse(&bytes);
        let names: Vec<_> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, ["a", "a/b", "a/b/test.sh", "a/c", "bin", "bin/sh"]);
        assert_eq!(e[2].1, S_IFREG | 0o755);
        assert_eq!(e[2].2, b"echo hi\n");
        assert_eq!(e[3].2, b"xyz");
        assert_eq!(e[5].1 & S_IFLNK, S_IFLNK);
        assert_eq!(e[5].2, b"busybox");
    }

    #[test]
    fn bad_paths_are_refused() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("../x", 0o644, b"").is_err());
        assert!(w.file("a//b", 0o644, b"").is_err());
    }

    #[test]
    fn concatenation_pads_to_four_bytes() {
        let dir = std::env::temp_dir().join(format!("berth-cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("base");
        std::fs::write(&base, b"12345").unwrap();
        let mut out = Vec::new();
        concat_initrd(&base, b"0707", &mut out).unwrap();
        assert_eq!(out, b"12345\0\0\x000707");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
