//! kvs-edge-agent: an open, lean, drop-in replacement for the Amazon Kinesis Video Streams Edge
//! Agent. The architecture is in `DESIGN.md`; data flows one way:
//! control -> supervisor -> recorder / uploader / janitor, all of which read and write the catalog.

pub mod agent;
pub mod aws;
pub mod backoff;
pub mod catalog;
pub mod clock;
pub mod control;
pub mod edge_config;
pub mod export;
pub mod health;
pub mod http;
pub mod input;
pub mod janitor;
pub mod logging;
pub mod media;
pub mod path_error;
pub mod recorder;
pub mod schedule;
pub mod secrets;
pub mod service;
pub mod settings;
pub mod stats;
pub mod stop;
pub mod store;
pub mod supervisor;
pub mod ticker;
pub mod uploader;
