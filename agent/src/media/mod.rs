//! Matroska (EBML) writer and reader, H.264 helpers.

pub mod ebml;
pub mod mkv;
