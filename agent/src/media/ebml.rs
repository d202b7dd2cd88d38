//! EBML primitives: the variable-length integers, element headers and typed element writers
//! Matroska is built from (RFC 8794).
//!
//! Writers append to a `Vec<u8>` and cannot fail except where a value does not fit the format
//! (a size of 2^56 - 1 or more). Readers take a byte slice and return [`EbmlError`] on
//! truncated or malformed input instead of panicking, so they can be fed anything a crash or a
//! camera left on disk.

use thiserror::Error;

/// The largest data size an 8-byte VINT can carry; all-ones (2^56 - 1) means "unknown".
pub const MAX_SIZE: u64 = (1 << 56) - 2;

/// The 8-byte "unknown size" marker: the element runs until a parent-level element starts (or
/// the file ends). Used for the Segment so a file can grow cluster by cluster.
pub const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// Why a byte slice is not a well-formed EBML element (header).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EbmlError {
    #[error("truncated EBML data: need {needed} bytes, have {available}")]
    Truncated { needed: u64, available: u64 },
    #[error(
        "invalid VINT: first byte 0x{first:02x} has no length marker in its first {max_len} bits"
    )]
    InvalidVint { first: u8, max_len: usize },
    #[error("element ID 0x{0:x} is not a valid 1-4 byte EBML ID")]
    InvalidId(u64),
    #[error("size {0} does not fit an EBML VINT (max 2^56 - 2)")]
    SizeTooLarge(u64),
    #[error("{what} element has invalid length {len}")]
    BadLength { what: &'static str, len: usize },
    #[error("string element is not valid UTF-8")]
    BadUtf8,
}

/// Element IDs used by the Matroska writer and reader (values include the VINT marker bits,
/// as the specifications print them).
pub mod ids {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const VOID: u32 = 0xEC;
    pub const CRC32: u32 = 0xBF;

    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const INFO: u32 = 0x1549_A966;
    pub const SEGMENT_UID: u32 = 0x73A4;
    pub const TIMECODE_SCALE: u32 = 0x2A_D7B1;
    pub const DURATION: u32 = 0x4489;
    pub const TITLE: u32 = 0x7BA9;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;

    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const NAME: u32 = 0x536E;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const DEFAULT_DURATION: u32 = 0x23_E383;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;

    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMECODE: u32 = 0xE7;
    pub const POSITION: u32 = 0xA7;
    pub const PREV_SIZE: u32 = 0xAB;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const BLOCK_GROUP: u32 = 0xA0;
    pub const BLOCK: u32 = 0xA1;
    pub const REFERENCE_BLOCK: u32 = 0xFB;
    pub const BLOCK_DURATION: u32 = 0x9B;

    pub const CUES: u32 = 0x1C53_BB6B;
    pub const CHAPTERS: u32 = 0x1043_A770;
    pub const TAGS: u32 = 0x1254_C367;
    pub const TAG: u32 = 0x7373;
    pub const SIMPLE_TAG: u32 = 0x67C8;
    pub const TAG_NAME: u32 = 0x45A3;
    pub const TAG_STRING: u32 = 0x4487;
    pub const ATTACHMENTS: u32 = 0x1941_A469;
}

/// Number of bytes of the VINT whose first byte is `first` (1-8), or `None` for 0x00.
pub fn vint_len(first: u8) -> Option<usize> {
    match first.leading_zeros() {
        n @ 0..=7 => Some(n as usize + 1),
        _ => None,
    }
}

/// Bytes needed to write `id` (IDs carry their own marker bits, so this is just its width).
fn id_len(id: u32) -> Result<usize, EbmlError> {
    let len = match id {
        0x80..=0xFE => 1,
        0x4000..=0x7FFE => 2,
        0x20_0000..=0x3F_FFFE => 3,
        0x1000_0000..=0x1FFF_FFFE => 4,
        _ => return Err(EbmlError::InvalidId(id.into())),
    };
    Ok(len)
}

/// Append an element ID. The ID constants in [`ids`] are valid by construction; an invalid
/// ID is a programming error, reported as an error rather than a panic.
pub fn write_id(out: &mut Vec<u8>, id: u32) -> Result<(), EbmlError> {
    let len = id_len(id)?;
    out.extend_from_slice(&id.to_be_bytes()[4 - len..]);
    Ok(())
}

/// Shortest VINT length that can carry `size` (all-ones at a length is reserved for unknown).
pub fn size_len(size: u64) -> Result<usize, EbmlError> {
    if size > MAX_SIZE {
        return Err(EbmlError::SizeTooLarge(size));
    }
    Ok((1..=8)
        .find(|&len| size < (1u64 << (7 * len)) - 1)
        .unwrap_or(8))
}

/// Append `size` as a VINT of exactly `len` bytes (used to reserve a fixed-width size field).
pub fn write_size_fixed(out: &mut Vec<u8>, size: u64, len: usize) -> Result<(), EbmlError> {
    if !(1..=8).contains(&len) || size_len(size)? > len {
        return Err(EbmlError::SizeTooLarge(size));
    }
    let marked = size | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
    Ok(())
}

/// Append `size` as the shortest VINT that holds it.
pub fn write_size(out: &mut Vec<u8>, size: u64) -> Result<(), EbmlError> {
    write_size_fixed(out, size, size_len(size)?)
}

/// Append an element header (ID + size).
pub fn write_header(out: &mut Vec<u8>, id: u32, size: u64) -> Result<(), EbmlError> {
    write_id(out, id)?;
    write_size(out, size)
}

/// Append a master element header with the unknown-size marker.
pub fn write_unknown_size_header(out: &mut Vec<u8>, id: u32) -> Result<(), EbmlError> {
    write_id(out, id)?;
    out.extend_from_slice(&UNKNOWN_SIZE);
    Ok(())
}

/// Append an unsigned integer element in the fewest bytes (0 is written as one zero byte,
/// which every reader accepts; zero-length is legal too but less widely tested).
pub fn write_uint(out: &mut Vec<u8>, id: u32, value: u64) -> Result<(), EbmlError> {
    let len = (8 - value.leading_zeros() as usize / 8).max(1);
    write_header(out, id, len as u64)?;
    out.extend_from_slice(&value.to_be_bytes()[8 - len..]);
    Ok(())
}

/// Append a signed integer element in the fewest two's-complement bytes.
pub fn write_int(out: &mut Vec<u8>, id: u32, value: i64) -> Result<(), EbmlError> {
    let len = (1..=8)
        .find(|&len| {
            let bits = 8 * len as u32;
            bits == 64 || (value >= -(1i64 << (bits - 1)) && value < (1i64 << (bits - 1)))
        })
        .unwrap_or(8);
    write_header(out, id, len as u64)?;
    out.extend_from_slice(&value.to_be_bytes()[8 - len..]);
    Ok(())
}

/// Append a float element as 8-byte IEEE 754 (exact; 4-byte would round).
pub fn write_float(out: &mut Vec<u8>, id: u32, value: f64) -> Result<(), EbmlError> {
    write_header(out, id, 8)?;
    out.extend_from_slice(&value.to_be_bytes());
    Ok(())
}

/// Append a string (ASCII or UTF-8) element, without a terminating NUL.
pub fn write_string(out: &mut Vec<u8>, id: u32, value: &str) -> Result<(), EbmlError> {
    write_binary(out, id, value.as_bytes())
}

/// Append a binary element.
pub fn write_binary(out: &mut Vec<u8>, id: u32, value: &[u8]) -> Result<(), EbmlError> {
    write_header(out, id, value.len() as u64)?;
    out.extend_from_slice(value);
    Ok(())
}

/// Append a master element whose body was built separately (its size is then known).
pub fn write_master(out: &mut Vec<u8>, id: u32, body: &[u8]) -> Result<(), EbmlError> {
    write_binary(out, id, body)
}

fn truncated(needed: usize, available: usize) -> EbmlError {
    EbmlError::Truncated {
        needed: needed as u64,
        available: available as u64,
    }
}

/// Read an element ID at the start of `buf`: `(id with marker bits, length)`.
pub fn read_id(buf: &[u8]) -> Result<(u32, usize), EbmlError> {
    let first = *buf.first().ok_or_else(|| truncated(1, 0))?;
    let len = match vint_len(first) {
        Some(len) if len <= 4 => len,
        _ => return Err(EbmlError::InvalidVint { first, max_len: 4 }),
    };
    let bytes = buf.get(..len).ok_or_else(|| truncated(len, buf.len()))?;
    let id = bytes.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    Ok((id, len))
}

/// Read a data-size VINT at the start of `buf`: `(Some(size) or None for unknown, length)`.
pub fn read_size(buf: &[u8]) -> Result<(Option<u64>, usize), EbmlError> {
    let first = *buf.first().ok_or_else(|| truncated(1, 0))?;
    let len = vint_len(first).ok_or(EbmlError::InvalidVint { first, max_len: 8 })?;
    let bytes = buf.get(..len).ok_or_else(|| truncated(len, buf.len()))?;
    let mask = (1u64 << (7 * len)) - 1;
    let value = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)) & mask;
    Ok(((value != mask).then_some(value), len))
}

/// An element header as read from bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementHeader {
    /// Element ID including its marker bits.
    pub id: u32,
    /// Bytes taken by the ID and the size.
    pub header_len: usize,
    /// Data size, `None` when the unknown-size marker was used.
    pub size: Option<u64>,
}

impl ElementHeader {
    /// Total element length (header + data) when the size is known.
    pub fn total_len(&self) -> Option<u64> {
        self.size.map(|s| s + self.header_len as u64)
    }
}

/// Parse the element header at the start of `buf`. Only the header must be present; whether
/// the data is complete is up to the caller (compare `total_len` with what it has).
pub fn read_element_header(buf: &[u8]) -> Result<ElementHeader, EbmlError> {
    let (id, id_len) = read_id(buf)?;
    let (size, size_len) = read_size(&buf[id_len..])?;
    Ok(ElementHeader {
        id,
        header_len: id_len + size_len,
        size,
    })
}

/// Split the complete element at the start of `buf` into `(header, data, rest)`; the data of an
/// unknown-size element is taken to be the rest of `buf`.
pub fn split_element(buf: &[u8]) -> Result<(ElementHeader, &[u8], &[u8]), EbmlError> {
    let header = read_element_header(buf)?;
    let body = &buf[header.header_len..];
    let size = match header.size {
        Some(size) => size,
        None => body.len() as u64,
    };
    if size > body.len() as u64 {
        return Err(EbmlError::Truncated {
            needed: size + header.header_len as u64,
            available: buf.len() as u64,
        });
    }
    let (data, rest) = body.split_at(size as usize);
    Ok((header, data, rest))
}

/// Iterate over the complete child elements of a master element's data. Stops with an error
/// on the first malformed or truncated child.
pub fn children(
    mut data: &[u8],
) -> impl Iterator<Item = Result<(ElementHeader, &[u8]), EbmlError>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        match split_element(data) {
            Ok((header, body, rest)) => {
                data = rest;
                Some(Ok((header, body)))
            }
            Err(e) => {
                data = &[];
                Some(Err(e))
            }
        }
    })
}

/// Decode an unsigned integer element's data (0-8 bytes, empty means 0).
pub fn read_uint(data: &[u8]) -> Result<u64, EbmlError> {
    if data.len() > 8 {
        return Err(EbmlError::BadLength {
            what: "unsigned integer",
            len: data.len(),
        });
    }
    Ok(data.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Decode a signed integer element's data (0-8 bytes, two's complement).
pub fn read_int(data: &[u8]) -> Result<i64, EbmlError> {
    if data.len() > 8 {
        return Err(EbmlError::BadLength {
            what: "signed integer",
            len: data.len(),
        });
    }
    if data.is_empty() {
        return Ok(0);
    }
    let unsigned = read_uint(data)?;
    let shift = 64 - 8 * data.len() as u32;
    Ok(((unsigned << shift) as i64) >> shift)
}

/// Decode a float element's data (0, 4 or 8 bytes).
pub fn read_float(data: &[u8]) -> Result<f64, EbmlError> {
    match data.len() {
        0 => Ok(0.0),
        4 => Ok(f64::from(f32::from_be_bytes([
            data[0], data[1], data[2], data[3],
        ]))),
        8 => Ok(f64::from_be_bytes([
            data[0], data[1], data[2], data[3], data[4], data[5], data[6], data[7],
        ])),
        len => Err(EbmlError::BadLength { what: "float", len }),
    }
}

/// Decode a string element's data, dropping the NUL padding EBML allows at the end.
pub fn read_string(data: &[u8]) -> Result<String, EbmlError> {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    std::str::from_utf8(&data[..end])
        .map(str::to_owned)
        .map_err(|_| EbmlError::BadUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_bytes(size: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_size(&mut out, size).unwrap();
        out
    }

    #[test]
    fn size_vint_edges() {
        assert_eq!(size_bytes(0), [0x80]);
        assert_eq!(size_bytes(126), [0xFE]);
        // 127 is all-ones at length 1 (unknown), so it needs two bytes.
        assert_eq!(size_bytes(127), [0x40, 0x7F]);
        assert_eq!(size_bytes(16382), [0x7F, 0xFE]);
        assert_eq!(size_bytes(16383), [0x20, 0x3F, 0xFF]);
        assert_eq!(
            size_bytes(MAX_SIZE),
            [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]
        );
        assert_eq!(
            size_len(MAX_SIZE + 1),
            Err(EbmlError::SizeTooLarge(MAX_SIZE + 1))
        );
        for size in [
            0,
            1,
            126,
            127,
            128,
            16382,
            16383,
            1 << 20,
            (1 << 35) + 7,
            MAX_SIZE,
        ] {
            let bytes = size_bytes(size);
            assert_eq!(
                read_size(&bytes),
                Ok((Some(size), bytes.len())),
                "size {size}"
            );
        }
    }

    #[test]
    fn fixed_width_and_unknown_sizes() {
        let mut out = Vec::new();
        write_size_fixed(&mut out, 5, 8).unwrap();
        assert_eq!(out, [0x01, 0, 0, 0, 0, 0, 0, 0x05]);
        assert_eq!(read_size(&out), Ok((Some(5), 8)));
        assert!(write_size_fixed(&mut Vec::new(), 200, 1).is_err());
        assert_eq!(read_size(&UNKNOWN_SIZE), Ok((None, 8)));
        assert_eq!(read_size(&[0xFF]), Ok((None, 1)));
        assert_eq!(read_size(&[0x7F, 0xFF]), Ok((None, 2)));
    }

    #[test]
    fn bad_vints_are_errors() {
        assert_eq!(
            read_size(&[0x00, 1, 2]),
            Err(EbmlError::InvalidVint {
                first: 0,
                max_len: 8
            })
        );
        assert_eq!(read_size(&[]), Err(truncated(1, 0)));
        assert_eq!(read_size(&[0x01, 0xFF]), Err(truncated(8, 2)));
        assert!(matches!(
            read_id(&[0x08, 1, 2, 3, 4]),
            Err(EbmlError::InvalidVint { .. })
        ));
        assert_eq!(read_id(&[0x1A, 0x45]), Err(truncated(4, 2)));
    }

    #[test]
    fn ids_round_trip() {
        for id in [
            ids::EBML,
            ids::SEGMENT,
            ids::TIMECODE_SCALE,
            ids::NAME,
            ids::SIMPLE_BLOCK,
        ] {
            let mut out = Vec::new();
            write_id(&mut out, id).unwrap();
            assert_eq!(read_id(&out), Ok((id, out.len())));
        }
        assert_eq!(
            write_id(&mut Vec::new(), 0x12),
            Err(EbmlError::InvalidId(0x12))
        );
        assert_eq!(
            write_id(&mut Vec::new(), 0xFF),
            Err(EbmlError::InvalidId(0xFF))
        );
    }

    #[test]
    fn typed_elements_round_trip() {
        for value in [0u64, 1, 255, 256, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            write_uint(&mut out, ids::TIMECODE, value).unwrap();
            let (h, data, rest) = split_element(&out).unwrap();
            assert_eq!((h.id, rest.len()), (ids::TIMECODE, 0));
            assert_eq!(read_uint(data), Ok(value));
        }
        for value in [
            0i64,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            32767,
            -32768,
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            write_int(&mut out, ids::TIMECODE, value).unwrap();
            let (_, data, _) = split_element(&out).unwrap();
            assert_eq!(read_int(data), Ok(value), "value {value}");
        }
        let mut out = Vec::new();
        write_int(&mut out, ids::TIMECODE, -129).unwrap();
        assert_eq!(out, [0xE7, 0x82, 0xFF, 0x7F]);

        let mut out = Vec::new();
        write_float(&mut out, ids::DURATION, 1234.5).unwrap();
        write_string(&mut out, ids::DOC_TYPE, "matroska").unwrap();
        write_binary(&mut out, ids::CODEC_PRIVATE, &[1, 2, 3]).unwrap();
        let elems: Vec<_> = children(&out).collect::<Result<_, _>>().unwrap();
        assert_eq!(elems.len(), 3);
        assert_eq!(read_float(elems[0].1), Ok(1234.5));
        assert_eq!(read_string(elems[1].1).as_deref(), Ok("matroska"));
        assert_eq!(elems[2].1, [1, 2, 3]);
        assert_eq!(read_float(&1.5f32.to_be_bytes()), Ok(1.5));
    }

    #[test]
    fn malformed_element_data_is_an_error() {
        assert!(read_uint(&[0; 9]).is_err());
        assert!(read_int(&[0; 9]).is_err());
        assert!(read_float(&[0; 3]).is_err());
        assert_eq!(read_string(&[0xFF, 0xFE]), Err(EbmlError::BadUtf8));
        assert_eq!(read_string(b"ab\0\0").as_deref(), Ok("ab"));
        // A huge declared size is reported, not allocated.
        let huge = [0xA3, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0x00];
        assert!(matches!(
            split_element(&huge),
            Err(EbmlError::Truncated { .. })
        ));
        let mut it = children(&[0xE7, 0x81]);
        assert!(matches!(it.next(), Some(Err(EbmlError::Truncated { .. }))));
        assert!(it.next().is_none());
    }

    #[test]
    fn unknown_size_header() {
        let mut out = Vec::new();
        write_unknown_size_header(&mut out, ids::SEGMENT).unwrap();
        let h = read_element_header(&out).unwrap();
        assert_eq!(
            (h.id, h.header_len, h.size, h.total_len()),
            (ids::SEGMENT, 12, None, None)
        );
    }
}
