//! virtio-blk (virtio 1.2, 5.2) over a raw image: one request queue served by a worker that
//! moves data straight between the image and guest memory.

mod image;

pub use image::{open_image, BlockError, DiskImage, SECTOR_SIZE};
