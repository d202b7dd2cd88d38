//! The janitor: deletes media by retention, size limit and delete-after-upload, and pauses
//! recording when a stream (DENY_NEW_MEDIA) or the disk is full.

pub mod policy;
