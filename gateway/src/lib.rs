//! The Archipel S3 gateway: an S3-compatible HTTP server that runs next to the
//! user, holds their access grants and encrypts everything itself through
//! `archipel_client`, so the network only ever sees ciphertext.
//!
//! - [`config`]: the TOML configuration and `setup` (credential generation);
//! - `auth`: SigV4 (header and presigned) credentials for s3s;
//! - `service`: the s3s `S3` implementation, split by area into `buckets`,
//!   `objects`, `copy`, `multipart` and `listing`, with `metadata` (S3 headers ↔ sealed object
//!   metadata), `checksums` (`x-amz-checksum-*` on uploads), `conditional`
//!   (If-Match / If-None-Match on writes and deletes), `versions` (version
//!   ids, bucket versioning, delete markers) and `errors` (client errors → S3
//!   error codes);
//! - `snapshots`: listings kept between the pages of a walk;
//! - [`run`]: the HTTP(S) server with graceful shutdown, `tls` (rustls) and
//!   `vhost` (virtual-hosted-style bucket names);
//! - `metrics`: latency histograms of S3 operations and counters of links,
//!   served for Prometheus;
//! - `registry`: registered access grants (sealed in SQLite), `grants`: who
//!   a request acts as (configured key pairs, then registered ones, with
//!   their opened projects cached), and `linksharing`: the second listener,
//!   with public links that stream and the registration endpoint.

mod acl;
mod attributes;
mod auth;
mod buckets;
mod checksums;
pub mod cli;
mod conditional;
pub mod config;
mod copy;
mod cors;
mod errors;
mod grants;
mod linksharing;
mod listing;
mod locks;
mod metadata;
mod metrics;
mod multipart;
mod objects;
mod part_checksums;
mod public;
mod registry;
mod server;
mod service;
mod snapshots;
mod tagging;
mod tls;
mod versions;
mod vhost;

pub use config::{Config, Credential};
pub use server::{run, run_with_listeners, run_with_metrics, Listeners};

/// Everything the gateway can fail with outside of single S3 requests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the configuration file {path}: {source}")]
    ReadConfig {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is invalid: {reason}")]
    InvalidConfig {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot write {path}: {source}")]
    WriteConfig {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration has no credentials; run `archipel-gateway setup` first")]
    NoCredentials,
    #[error("access key id {0:?} appears more than once in the configuration")]
    DuplicateAccessKey(String),
    #[error("the access grant for access key id {key_id:?} is unusable: {source}")]
    Access {
        key_id: String,
        source: archipel_client::Error,
    },
    /// The client library's message already says the grant is invalid.
    #[error("{0}")]
    InvalidAccess(archipel_client::Error),
    #[error("tls_certificate and tls_key go together: set both, or neither for plain HTTP")]
    TlsIncomplete,
    #[error("cannot use the TLS certificate {certificate} with the key {key}: {reason}")]
    Tls {
        certificate: std::path::PathBuf,
        key: std::path::PathBuf,
        reason: String,
    },
    #[error(
        "{0:?} in domain_names is not a domain name (give names only, without a port or scheme)"
    )]
    InvalidDomainName(String),
    #[error("{0} in the configuration must be positive")]
    ZeroLimit(&'static str),
    #[error("the registry of access grants {path} is unusable: {reason}")]
    Registry {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("the registry of access grants is damaged: {0}")]
    RegistryEntry(&'static str),
    #[error("links need a state directory for their registry: set state_dir in the configuration")]
    NoStateDir,
}
