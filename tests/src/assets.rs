//! The guest assets built by `scripts/guest-assets.sh` in `${BERTH_ASSETS:-~/.cache/berth}/<arch>/`.

use crate::Arch;
use std::path::{Path, PathBuf};

/// Paths of one architecture's assets, checked to exist.
#[derive(Clone, Debug)]
pub struct Assets {
    pub arch: Arch,
    /// `<cache>/<arch>`.
    pub dir: PathBuf,
    /// The Debian kernel as shipped (x86_64: a bzImage; aarch64: a plain Image).
    pub bzimage: PathBuf,
    /// The same kernel in its other form (x86_64: the ELF vmlinux extracted from the bzImage,
    /// with a PVH note; aarch64: the Image gzip'd).
    pub vmlinux: PathBuf,
    /// The base guest initramfs (busybox, virtio modules, the test-running `/init`).
    pub initramfs: PathBuf,
    /// A static busybox for the emulated host's initramfs.
    pub busybox: PathBuf,
    /// Kernel modules the emulated host loads (kvm, ...), `*.ko` in one directory.
    pub host_modules: PathBuf,
    /// The kernel's release, as `uname -r` prints it, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_version: String,
}

impl Assets {
    /// The cache directory: `$BERTH_ASSETS`, else `$HOME/.cache/berth`.
    pub fn cache_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("BERTH_ASSETS") {
            return PathBuf::from(d);
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        Path::new(&home).join(".cache/berth")
    }

    /// Loads `arch`'s assets, or says how to make them.
    pub fn load(arch: Arch) -> Result<Assets, String> {
        let dir = Self::cache_dir().join(arch.name());
        let missing = |what: &Path| {
            format!(
                "guest assets missing: {} does not exist; run scripts/guest-assets.sh {} \
                 (scripts/test.sh does) or point BERTH_ASSETS at a cache that has them",
                what.display(),
                arch.name()
            )
        };
        let (shipped, other) = match arch {
            Arch::X86_64 => ("bzImage", "vmlinux"),
            Arch::Aarch64 => ("Image", "Image.gz"),
        };
        let a = Assets {
            arch,
            bzimage: dir.join(shipped),
            vmlinux: dir.join(other),
            initramfs: dir.join("initramfs.cpio.gz"),
            busybox: dir.join("busybox"),
            host_modules: dir.join("host-modules"),
            kernel_version: String::new(),
            dir,
        };
        for p in [
            &a.bzimage,
            &a.vmlinux,
            &a.initramfs,
            &a.busybox,
            &a.host_modules,
        ] {
            if !p.exists() {
                return Err(missing(p));
            }
        }
        let kv = a.dir.join("kernel-version");
        let kernel_version = std::fs::read_to_string(&kv)
            .map_err(|_| missing(&kv))?
            .trim()
            .to_string();
        Ok(Assets {
            kernel_version,
            ..a
        })
    }

    /// The host module `name` (e.g. `kvm-amd.ko`).
    pub fn host_module(&self, name: &str) -> PathBuf {
        self.host_modules.join(name)
    }
}
