//! The HTTP server: connects one project per configured credential, then
//! serves the S3 service on the listener until `shutdown` completes, letting
//! requests in flight finish.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use archipel_client::{Access, Project};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

use crate::service::Gateway;
use crate::{auth, Config, Error};

/// How long requests in flight may take to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves S3 on `listener` (the configured `listen` address is for the
/// binary; tests pass 127.0.0.1:0) until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    if config.credentials.is_empty() {
        return Err(Error::NoCredentials);
    }
    let mut projects = HashMap::new();
    for credential in &config.credentials {
        let key_id = credential.access_key_id.clone();
        if projects.contains_key(&key_id) {
            return Err(Error::DuplicateAccessKey(key_id));
        }
        let access_error = |source| Error::Access {
            key_id: key_id.clone(),
            source,
        };
        let access = Access::parse(&credential.access).map_err(access_error)?;
        let project = Project::open(&access).await.map_err(access_error)?;
        projects.insert(key_id, project);
    }
    let mut builder = S3ServiceBuilder::new(Gateway {
        projects,
        region: config.region.clone(),
        snapshots: Default::default(),
        unencrypted_names: config.unencrypted_names.clone(),
    });
    builder.set_auth(auth::key_store(&config.credentials));
    let service = builder.build();

    let http = ConnectionBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Running out of file descriptors passes; do not spin meanwhile.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = http
            .serve_connection(TokioIo::new(stream), service.clone())
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended with an error: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down; letting requests in flight finish");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("requests still running after {DRAIN_TIMEOUT:?} were cut off");
        }
    }
    Ok(())
}
