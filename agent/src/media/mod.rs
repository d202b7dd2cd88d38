//! Media without I/O: the Matroska (EBML) writer and reader the recorder and uploader share,
//! and the H.264 helpers that turn camera or file bitstreams into Matroska frames.
//!
//! - [`ebml`]: variable-length integers, element headers, typed element writers and readers.
//! - [`mkv`]: segment header and one-Cluster-per-fragment writer, and a reader that walks
//!   clusters and tells crash recovery where the good data ends (`valid_len`).
//! - [`fragment`]: one Cluster's frames and track, as the recorder hands them to the store.
//! - [`h264`]: Annex B / AVCC framing, AVCDecoderConfigurationRecord, SPS size parsing,
//!   access-unit assembly and the parameter-set policy for frame payloads.
//! - [`mp4`]: fragmented MP4 (an init segment, then one `moof`+`mdat` per fragment) for
//!   streaming a recorded range to a browser.
//!
//! Every parser returns a typed error on malformed bytes and never panics, so recovery code can
//! feed it whatever a power cut left on disk.

pub mod ebml;
pub mod fragment;
pub mod h264;
pub mod mkv;
pub mod mp4;
