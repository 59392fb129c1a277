//! `image_arm64`: the arm64 `Image` header and `Image.gz` decompression, as `berth run
//! --kernel` opens them on aarch64 (the parser is built on every host, so this runs natively).
//!
//! Input: one byte setting the guest's RAM (the decompression limit, in 64 KiB), then the
//! kernel file. A gzip bomb must stop at the limit, a bogus header must be refused.

use arch::aarch64::image::{open, ImageSource, MAX_IMAGE_SIZE};

use crate::util::memfd;

pub fn run(data: &[u8]) {
    let Some((&ram, file)) = data.split_first() else {
        return;
    };
    let limit = (u64::from(ram) + 1) << 16;
    let mut f = memfd(file);
    let Ok((source, header, size)) = open(&mut f, "fuzz", limit) else {
        return;
    };
    assert!(header.text_offset < MAX_IMAGE_SIZE && header.image_size <= MAX_IMAGE_SIZE);
    if let ImageSource::Decompressed(bytes) = source {
        assert_eq!(bytes.get_ref().len() as u64, size);
        assert!(
            size <= limit,
            "decompressed {size} bytes past the limit {limit}"
        );
        if header.image_size != 0 {
            assert!(size <= header.image_size);
        }
    }
}
