//! Opening a raw disk image: the file, its size in whole sectors and the advisory lock that
//! keeps two VMs from writing the same image.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Sector size of the virtio-blk protocol; capacities and offsets are counted in it.
pub const SECTOR_SIZE: u64 = 512;

#[derive(Debug, Error)]
pub enum BlockError {
    #[error("disk image {0} does not exist; check the path")]
    NotFound(PathBuf),
    #[error(
        "no permission to open disk image {0} read-write; fix its permissions or use readonly=on"
    )]
    NoWritePermission(PathBuf),
    #[error("no permission to read disk image {0}; fix its permissions")]
    NoReadPermission(PathBuf),
    #[error("disk image {0} is on a read-only file system; use readonly=on")]
    ReadOnlyFs(PathBuf),
    #[error("cannot open disk image {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("disk image {0} is neither a regular file nor a block device; give a raw image file or a block device")]
    NotADisk(PathBuf),
    #[error("disk image {0} is locked by another process (another VM using it?); stop it or use readonly=on")]
    Locked(PathBuf),
    #[error("disk image {0} is in use read-write by another process (another VM?); stop it first")]
    LockedByWriter(PathBuf),
    #[error("cannot lock disk image {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("cannot find the size of disk image {path}: {source}")]
    Size { path: PathBuf, source: io::Error },
}

/// An open raw disk image. The advisory lock lives as long as the file.
#[derive(Debug)]
pub struct DiskImage {
    file: File,
    path: PathBuf,
    /// Usable size in bytes: whole sectors only.
    size: u64,
    read_only: bool,
    /// `(st_dev, st_ino)`, the default serial number.
    dev_ino: (u64, u64),
}

impl DiskImage {
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes, a multiple of [`SECTOR_SIZE`].
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// A default device id: the image's device and inode numbers, which stay stable across
    /// boots while the file is not replaced.
    pub fn default_id(&self) -> String {
        format!("{:x}:{:x}", self.dev_ino.0, self.dev_ino.1)
    }
}

/// Opens a raw image (regular file or block device) and takes the advisory lock: exclusive
/// for read-write, shared for read-only, so readers may share an image no one writes.
pub fn open_image(path: &Path, read_only: bool) -> Result<DiskImage, BlockError> {
    let p = || path.to_path_buf();
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => BlockError::NotFound(p()),
            Some(libc::EACCES | libc::EPERM) if read_only => BlockError::NoReadPermission(p()),
            Some(libc::EACCES | libc::EPERM) => BlockError::NoWritePermission(p()),
            Some(libc::EROFS) => BlockError::ReadOnlyFs(p()),
            _ => BlockError::Open {
                path: p(),
                source: e,
            },
        })?;
    from_file(file, path, read_only)
}

/// An image from an open `file` (inherited by a device process): checks it as
/// [`open_image`] does and takes the lock, which an fd inherited from the process that locked
/// it already holds (flock belongs to the open file).
pub fn from_file(mut file: File, path: &Path, read_only: bool) -> Result<DiskImage, BlockError> {
    let p = || path.to_path_buf();
    let meta = file.metadata().map_err(|e| BlockError::Open {
        path: p(),
        source: e,
    })?;
    let ft = meta.file_type();
    if !ft.is_file() && !ft.is_block_device() {
        return Err(BlockError::NotADisk(p()));
    }
    lock(&file, read_only, path)?;
    // Seeking to the end works for block devices too, where the metadata size is 0.
    let bytes = file.seek(SeekFrom::End(0)).map_err(|e| BlockError::Size {
        path: p(),
        source: e,
    })?;
    let size = bytes - bytes % SECTOR_SIZE;
    if size != bytes {
        log::warn!(
            "disk image {}: size {bytes} is not a multiple of {SECTOR_SIZE}; the last {} bytes are not visible to the guest",
            path.display(),
            bytes - size
        );
    }
    Ok(DiskImage {
        file,
        path: p(),
        size,
        read_only,
        dev_ino: (meta.dev(), meta.ino()),
    })
}

fn lock(file: &File, read_only: bool, path: &Path) -> Result<(), BlockError> {
    let op = if read_only {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    };
    // SAFETY: flock only reads its two integer arguments; `file` keeps the fd open.
    let ret = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
    if ret == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) if read_only => BlockError::LockedByWriter(path.to_path_buf()),
        Some(libc::EWOULDBLOCK) => BlockError::Locked(path.to_path_buf()),
        _ => BlockError::Lock {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::tempfile::TempFile;

    fn image(len: u64) -> TempFile {
        let t = TempFile::new().unwrap();
        t.as_file().set_len(len).unwrap();
        t
    }

    #[test]
    fn second_read_write_open_is_refused_with_a_clear_message() {
        let t = image(4096);
        let first = open_image(t.as_path(), false).unwrap();
        assert_eq!(first.sectors(), 8);
        let err = open_image(t.as_path(), false).unwrap_err();
        assert!(matches!(err, BlockError::Locked(_)));
        let msg = err.to_string();
        assert!(msg.contains("is locked by another process"), "{msg}");
        assert!(msg.contains("readonly=on"), "{msg}");
        assert!(!msg.contains('\n'));
        // A reader cannot join a writer either.
        let err = open_image(t.as_path(), true).unwrap_err();
        assert!(matches!(err, BlockError::LockedByWriter(_)), "{err}");
        // The lock goes with the file.
        drop(first);
        open_image(t.as_path(), false).unwrap();
    }

    #[test]
    fn readers_share_an_image_but_exclude_a_writer() {
        let t = image(4096);
        let a = open_image(t.as_path(), true).unwrap();
        let b = open_image(t.as_path(), true).unwrap();
        assert!(a.read_only() && b.read_only());
        assert!(matches!(
            open_image(t.as_path(), false),
            Err(BlockError::Locked(_))
        ));
    }

    #[test]
    fn partial_sector_is_hidden_and_missing_file_is_named() {
        let t = image(1024 + 100);
        let d = open_image(t.as_path(), false).unwrap();
        assert_eq!(d.size(), 1024);
        assert_eq!(d.sectors(), 2);
        let err = open_image(Path::new("/nonexistent/berth.img"), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "disk image /nonexistent/berth.img does not exist; check the path"
        );
        let err = open_image(Path::new("/dev/null"), true).unwrap_err();
        assert!(matches!(err, BlockError::NotADisk(_)), "{err}");
    }

    #[test]
    fn an_inherited_fd_keeps_its_lock_and_its_id() {
        let t = image(4096);
        let first = open_image(t.as_path(), false).unwrap();
        // What a device process gets: the same open file, through a duplicated fd.
        let dup = first.file().try_clone().unwrap();
        let second = from_file(dup, t.as_path(), false).unwrap();
        assert_eq!(second.sectors(), 8);
        assert_eq!(second.default_id(), first.default_id());
        // Another open of the image is still refused.
        assert!(matches!(
            open_image(t.as_path(), false),
            Err(BlockError::Locked(_))
        ));
    }
}
