//! virtio-blk (virtio 1.2, 5.2) over a raw image: one request queue served by a worker that
//! moves data straight between the image and guest memory.

mod image;
mod request;
#[cfg(test)]
mod tests;
mod worker;

use std::sync::Arc;

use virtio_bindings::virtio_blk::*;
use virtio_queue::QueueT;

pub use image::{open_image, BlockError, DiskImage, SECTOR_SIZE};

use request::{Executor, MAX_DISCARD_SEG};
use worker::BlockWorker;

use super::{
    ActivateError, Activation, VirtioDevice, VirtioWorker, COMMON_FEATURES, TYPE_BLOCK,
    VIRTIO_RING_F_EVENT_IDX,
};

pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request: a full queue minus header and status, so a request fits
/// even without indirect descriptors.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Largest discard / write-zeroes range in sectors: 4 GiB - 512 (fits the 32-bit field).
const MAX_ZERO_SECTORS: u32 = u32::MAX / SECTOR_SIZE as u32;
/// `struct virtio_blk_config` up to `write_zeroes_may_unmap` and its padding.
const CONFIG_LEN: usize = 60;

/// A virtio block device backed by a [`DiskImage`].
pub struct Block {
    disk: Arc<DiskImage>,
    read_only: bool,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
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
            disk: Arc::new(image),
            read_only,
            id,
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

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(src) = self.config.get(start..) {
            let n = src.len().min(data.len());
            data[..n].copy_from_slice(&src[..n]);
        }
    }

    // The only writable field would be `writeback` (CONFIG_WCE), which is not offered.

    fn activate(&mut self, act: Activation) -> Result<Box<dyn VirtioWorker>, ActivateError> {
        Ok(Box::new(self.worker(act)?))
    }

    // reset(): the queue state went to the stopped worker and the configuration space is
    // fixed, so there is no per-driver state left to forget.
}

impl Block {
    fn worker(&self, act: Activation) -> Result<BlockWorker, ActivateError> {
        let (Some(mut queue), Some(kick)) =
            (act.queues.into_iter().next(), act.kicks.into_iter().next())
        else {
            return Err(ActivateError::Device(
                "virtio-blk needs one queue and its kick".into(),
            ));
        };
        if !queue.ready() {
            return Err(ActivateError::QueueNotReady(0));
        }
        if !queue.is_valid(&act.mem) {
            return Err(ActivateError::Device(
                "virtio-blk: queue 0 lies outside guest memory".into(),
            ));
        }
        queue.set_event_idx(act.features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0);
        Ok(BlockWorker {
            mem: act.mem,
            queue,
            kick,
            interrupt: act.interrupt,
            exec: Executor {
                disk: Arc::clone(&self.disk),
                read_only: self.read_only,
                id: self.id,
            },
        })
    }
}
