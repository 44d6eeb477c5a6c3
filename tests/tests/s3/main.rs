//! The S3 gateway end to end with `aws-sdk-s3` (and plain HTTP where a
//! browser or a hand-made request is the point) against the in-process
//! gateway, on both metabase backends where the metabase is involved, one
//! area per module; one test binary, so that the suite links the whole
//! stack once for all of them.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

#[path = "../common/mod.rs"]
mod common;

mod access;
mod edges;
mod features;
mod gateway;
mod listing;
mod locks;
mod tagging;
mod versions;
