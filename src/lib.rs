//! jetlink: run several black-box models under a memory and power budget, predicting the outputs of
//! the models that do not run through learned model links.

pub mod alloc_count;
pub mod atomic;
pub mod binfile;
pub mod board;
pub mod bundle;
pub mod control;
pub mod dcta;
pub mod engine;
pub mod fleet;
pub mod gpu;
pub mod input;
pub mod links;
pub mod manifest;
pub mod monitor;
pub mod output;
pub mod percentile;
pub mod plot;
pub mod profile;
pub mod record;
pub mod recording;
pub mod report;
pub mod row;
pub mod schedule;
pub mod sd_notify;
pub mod serial;
pub mod signing;
#[cfg(feature = "sim")]
pub mod sim;
pub mod source;
pub mod stream;
pub mod telemetry;
pub mod train;
pub mod view;
pub mod wire;
pub mod workload;
