//! virtio-blk (virtio 1.2, 5.2) over a raw image: one request queue, each request moved
//! straight between the image and guest memory.

mod image;
mod request;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use virtio_bindings::virtio_blk::*;

pub use image::{from_file, open_image, BlockError, DiskImage, SECTOR_SIZE};

use request::{Executor, MAX_DISCARD_SEG, MAX_ZERO_SECTORS};

use super::backend::{Allow, Queues, VirtioBackend};
use super::COMMON_FEATURES;

pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request: a full queue minus header and status, so a request fits
/// even without indirect descriptors.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Largest discard / write-zeroes range in sectors: 4 GiB - 512 (fits the 32-bit field).
/// `struct virtio_blk_config` up to `write_zeroes_may_unmap` and its padding.
const CONFIG_LEN: usize = 60;

/// A virtio block device backed by a [`DiskImage`].
pub struct Block {
    exec: Executor,
    features: u64,
    config: [u8; CONFIG_LEN],
}

impl Block {
    /// `id` is the serial the guest reads with GET_ID (at most 20 bytes, longer is cut);
    /// by default the image's device and inode numbers. An image opened read-only makes the
    /// device read-only whatever `read_only` says.
    pub fn new(image: DiskImage, read_only: bool, id: Option<String>) -> Self {
        let read_only = read_only || image.read_only();
        let id_str = id.unwrap_or_else(|| image.default_id());
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = id_str.len().min(id.len());
        if n < id_str.len() {
            log::warn!("virtio-blk: id {id_str:?} cut to {} bytes", id.len());
        }
        id[..n].copy_from_slice(&id_str.as_bytes()[..n]);

        let mut features = COMMON_FEATURES
            | 1 << VIRTIO_BLK_F_FLUSH
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE;
        if read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        } else {
            features |= 1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        let config = config_space(image.sectors());
        Block {
            exec: Executor {
                disk: Arc::new(image),
                read_only,
                id,
            },
            features,
            config,
        }
    }
}

/// The little-endian configuration space (virtio 1.2, 5.2.4).
fn config_space(sectors: u64) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    let mut put = |off: usize, bytes: &[u8]| c[off..off + bytes.len()].copy_from_slice(bytes);
    put(0, &sectors.to_le_bytes()); // capacity
    put(12, &SEG_MAX.to_le_bytes()); // seg_max
    put(20, &(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
    put(36, &MAX_ZERO_SECTORS.to_le_bytes()); // max_discard_sectors
    put(40, &MAX_DISCARD_SEG.to_le_bytes()); // max_discard_seg
    put(44, &1u32.to_le_bytes()); // discard_sector_alignment
    put(48, &MAX_ZERO_SECTORS.to_le_bytes()); // max_write_zeroes_sectors
    put(52, &MAX_DISCARD_SEG.to_le_bytes()); // max_write_zeroes_seg
    put(56, &[1]); // write_zeroes_may_unmap: the unmap flag punches a hole
    c
}

impl VirtioBackend for Block {
    fn name(&self) -> &str {
        "virtio-blk"
    }

    fn queue_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    // The only writable field would be `writeback` (CONFIG_WCE), which is not offered.
    fn config(&self) -> Vec<u8> {
        self.config.to_vec()
    }

    fn syscalls(&self) -> &'static [Allow] {
        &[
            // Reads and writes straight between the image and guest memory.
            Allow::Call(libc::SYS_preadv),
            Allow::Call(libc::SYS_pwritev),
            // Write-zeroes without a hole to punch.
            Allow::Call(libc::SYS_pwrite64),
            // FLUSH.
            Allow::Call(libc::SYS_fdatasync),
            // DISCARD and WRITE_ZEROES punch or zero ranges.
            Allow::Call(libc::SYS_fallocate),
        ]
    }

    fn kicked(&self, index: u16, queues: &Queues<'_>) {
        if index != 0 {
            return;
        }
        let mem = queues.mem();
        // The block device never declines a request.
        queues.serve(0, |chain| Some(self.exec.process(mem, chain)));
    }

    // reset(): the queue state lives in the framework's vring and the configuration space is
    // fixed, so there is no per-driver state to forget.
}
