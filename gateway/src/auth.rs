//! Request authentication: s3s checks SigV4 signatures (Authorization header
//! and presigned query strings) against the secrets of the key pairs in the
//! configuration and then of those registered (see `grants`); a wrong
//! secret answers `SignatureDoesNotMatch`, an unknown key id
//! `InvalidAccessKeyId`, and unsigned requests `AccessDenied`.

use std::sync::Arc;

use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};

use crate::grants::Grants;

/// The key store s3s verifies signatures with.
pub(crate) struct KeyStore(pub(crate) Arc<Grants>);

#[async_trait::async_trait]
impl S3Auth for KeyStore {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.secret(access_key).await {
            Ok(Some(secret)) => Ok(secret.into()),
            Ok(None) => Err(s3_error!(InvalidAccessKeyId)),
            Err(e) => {
                tracing::warn!("cannot look up an access key id: {e}");
                Err(s3_error!(
                    InternalError,
                    "the gateway cannot read its registry of access keys"
                ))
            }
        }
    }
}
