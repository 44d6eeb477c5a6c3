//! Request authentication: s3s checks SigV4 signatures (Authorization header
//! and presigned query strings) against the secrets from the configuration;
//! a wrong secret answers `SignatureDoesNotMatch`, an unknown key id
//! `InvalidAccessKeyId`, and unsigned requests `AccessDenied`.

use s3s::auth::SimpleAuth;

use crate::config::Credential;

/// The key store s3s verifies signatures with.
pub(crate) fn key_store(credentials: &[Credential]) -> SimpleAuth {
    let mut auth = SimpleAuth::new();
    for credential in credentials {
        auth.register(
            credential.access_key_id.clone(),
            credential.secret_access_key.clone().into(),
        );
    }
    auth
}
