//! The arm64 `Image` format: header checks, and gunzip for the compressed `Image.gz` that
//! distributions also ship (the arm64 kernel does not decompress itself).

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};

use crate::{Error, Result};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// "ARM\x64" at offset 56 of the header.
const IMAGE_MAGIC: [u8; 4] = *b"ARM\x64";
const HEADER_SIZE: usize = 64;
/// Kernels before 3.17 leave image_size 0 and expect this text offset.
const LEGACY_TEXT_OFFSET: u64 = 0x80000;
/// The most an Image may claim (text offset, run-time size) or decompress to: arm64 kernels
/// are tens of MiB, so anything bigger is a bogus header or a gzip bomb, not a kernel, and
/// must not make berth allocate the guest's RAM on the host.
pub const MAX_IMAGE_SIZE: u64 = 512 << 20;

/// A kernel image ready to copy into guest memory: the file itself or its decompressed bytes.
pub enum ImageSource<'a> {
    File(&'a mut File),
    Decompressed(Cursor<Vec<u8>>),
}

/// What the header says about the kernel's placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset of the image from a 2 MiB-aligned base.
    pub text_offset: u64,
    /// Bytes from the load address the kernel occupies at run time (bss included).
    pub image_size: u64,
}

/// Parses the 64-byte arm64 Image header; `None` when the magic is wrong.
pub fn parse_header(head: &[u8]) -> Option<ImageHeader> {
    if head.len() < HEADER_SIZE || head[56..60] != IMAGE_MAGIC {
        return None;
    }
    let u64_at = |o: usize| u64::from_le_bytes(head[o..o + 8].try_into().unwrap());
    let image_size = u64_at(16);
    Some(if image_size == 0 {
        ImageHeader {
            text_offset: LEGACY_TEXT_OFFSET,
            image_size: 0,
        }
    } else {
        ImageHeader {
            text_offset: u64_at(8),
            image_size,
        }
    })
}

/// Refuses a header whose placement no real kernel has (and whose sums could overflow).
fn check_header(h: ImageHeader, name: &str) -> Result<ImageHeader> {
    if h.text_offset >= MAX_IMAGE_SIZE || h.image_size > MAX_IMAGE_SIZE {
        return Err(Error::KernelLoad(format!(
            "{name}: its Image header claims text offset {:#x} and size {:#x} (a kernel is far \
             below {} MiB): not a valid arm64 Image",
            h.text_offset,
            h.image_size,
            MAX_IMAGE_SIZE >> 20
        )));
    }
    Ok(h)
}

/// Opens `kernel` as an Image: gunzips it when it is gzip-compressed, to at most `limit` bytes
/// (the guest's RAM), the header's run-time size (never smaller than the image) and
/// [`MAX_IMAGE_SIZE`]; then checks the header.
pub fn open<'a>(
    kernel: &'a mut File,
    name: &str,
    limit: u64,
) -> Result<(ImageSource<'a>, ImageHeader, u64)> {
    let io = |e: std::io::Error| Error::KernelLoad(format!("{name}: {e}"));
    let mut magic = [0u8; 2];
    kernel.seek(SeekFrom::Start(0)).map_err(io)?;
    let n = kernel.read(&mut magic).map_err(io)?;
    kernel.seek(SeekFrom::Start(0)).map_err(io)?;
    if n == 2 && magic == GZIP_MAGIC {
        let gunzip = |e: std::io::Error| Error::KernelLoad(format!("{name}: gunzip: {e}"));
        let mut dec = flate2::read::GzDecoder::new(&mut *kernel);
        let mut bytes = vec![0u8; HEADER_SIZE];
        dec.read_exact(&mut bytes).map_err(|_| not_an_image(name))?;
        let header = check_header(
            parse_header(&bytes).ok_or_else(|| not_an_image(name))?,
            name,
        )?;
        let mut limit = limit.min(MAX_IMAGE_SIZE);
        if header.image_size != 0 {
            limit = limit.min(header.image_size);
        }
        dec.take((limit + 1).saturating_sub(HEADER_SIZE as u64))
            .read_to_end(&mut bytes)
            .map_err(gunzip)?;
        if bytes.len() as u64 > limit {
            return Err(Error::KernelLoad(format!(
                "{name}: decompresses to more than {limit} bytes (the guest's memory, the \
                 header's image size or {} MiB): not a kernel Image",
                MAX_IMAGE_SIZE >> 20
            )));
        }
        let size = bytes.len() as u64;
        return Ok((ImageSource::Decompressed(Cursor::new(bytes)), header, size));
    }
    let mut head = [0u8; HEADER_SIZE];
    kernel
        .read_exact(&mut head)
        .map_err(|_| not_an_image(name))?;
    let header = check_header(parse_header(&head).ok_or_else(|| not_an_image(name))?, name)?;
    let size = kernel.seek(SeekFrom::End(0)).map_err(io)?;
    kernel.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok((ImageSource::File(kernel), header, size))
}

fn not_an_image(name: &str) -> Error {
    Error::NotAnImage(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with the given text offset and image size, padded with `body` zeros.
    pub(crate) fn fake_image(text_offset: u64, image_size: u64, body: usize) -> Vec<u8> {
        let mut v = vec![0u8; HEADER_SIZE + body];
        v[8..16].copy_from_slice(&text_offset.to_le_bytes());
        v[16..24].copy_from_slice(&image_size.to_le_bytes());
        v[56..60].copy_from_slice(&IMAGE_MAGIC);
        v
    }

    #[test]
    fn header_fields_and_the_legacy_default() {
        assert_eq!(
            parse_header(&fake_image(0, 0x200_0000, 0)),
            Some(ImageHeader {
                text_offset: 0,
                image_size: 0x200_0000
            })
        );
        assert_eq!(
            parse_header(&fake_image(0x1234, 0, 0)).unwrap().text_offset,
            LEGACY_TEXT_OFFSET
        );
        let mut bad = fake_image(0, 1, 0);
        bad[56] = b'X';
        assert_eq!(parse_header(&bad), None);
        assert_eq!(parse_header(&[0u8; 10]), None);
    }

    /// An open, already unlinked file holding `bytes`.
    fn file_with(bytes: &[u8]) -> File {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "berth-image-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&p, bytes).unwrap();
        let f = File::open(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        f
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// A bogus header is refused with a clear error, not summed into an overflow later.
    #[test]
    fn implausible_headers_are_refused() {
        for (text_offset, image_size) in [(u64::MAX - 10, 0x1000), (0, u64::MAX), (0, 1 << 40)] {
            let img = fake_image(text_offset, image_size, 4096);
            for bytes in [img.clone(), gzip(&img)] {
                let mut f = file_with(&bytes);
                let e = open(&mut f, "k", 1 << 30).err().expect("refused");
                assert!(e.to_string().contains("not a valid arm64 Image"), "{e}");
            }
        }
    }

    /// A gzip stream that inflates past the header's own run-time size is refused without
    /// decompressing the rest (the guest's RAM alone would allow 64 GiB here).
    #[test]
    fn a_gzip_bomb_is_stopped_at_the_headers_size() {
        let img = fake_image(0, 0x1_0000, 1 << 20);
        let mut f = file_with(&gzip(&img));
        let e = open(&mut f, "k", 64 << 30).err().expect("refused");
        assert!(
            e.to_string()
                .contains("decompresses to more than 65536 bytes"),
            "{e}"
        );
        let ok = fake_image(0, 0x20_0000, 1 << 20);
        let mut f = file_with(&gzip(&ok));
        let (_, h, size) = open(&mut f, "k", 64 << 30).unwrap();
        assert_eq!((h.image_size, size), (0x20_0000, ok.len() as u64));
    }
}
