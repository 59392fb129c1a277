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

/// Opens `kernel` as an Image: gunzips it (at most `limit` bytes, the guest's RAM) when it is
/// gzip-compressed, then checks the header.
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
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(&mut *kernel)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::KernelLoad(format!("{name}: gunzip: {e}")))?;
        if bytes.len() as u64 > limit {
            return Err(Error::KernelLoad(format!(
                "{name}: decompresses to more than the guest's memory"
            )));
        }
        let header = parse_header(&bytes).ok_or_else(|| not_an_image(name))?;
        let size = bytes.len() as u64;
        return Ok((ImageSource::Decompressed(Cursor::new(bytes)), header, size));
    }
    let mut head = [0u8; HEADER_SIZE];
    kernel
        .read_exact(&mut head)
        .map_err(|_| not_an_image(name))?;
    let header = parse_header(&head).ok_or_else(|| not_an_image(name))?;
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
}
