//! The HTTP server: connects one project per configured credential, then
//! serves the S3 service on the listener (over TLS when the configuration
//! names a certificate) until `shutdown` completes, letting requests in
//! flight finish.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use archipel_client::{Access, Project};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::service::Gateway;
use crate::vhost::VirtualHosts;
use crate::{auth, tls, Config, Error};

/// How long requests in flight may take to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    let tls = match (&config.tls_certificate, &config.tls_key) {
        (Some(certificate), Some(key)) => Some(tls::acceptor(certificate, key)?),
        (None, None) => None,
        _ => return Err(Error::TlsIncomplete),
    };
    let hosts = if config.domain_names.is_empty() {
        None
    } else {
        Some(VirtualHosts::new(&config.domain_names)?)
    };
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
    if let Some(hosts) = hosts {
        builder.set_host(hosts);
    }
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
        tokio::spawn(serve(
            stream,
            tls.clone(),
            http.clone(),
            service.clone(),
            graceful.watcher(),
        ));
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

/// Serves one accepted connection, after the TLS handshake if there is one.
/// A client that fails the handshake (plain HTTP on an HTTPS port, say) only
/// loses its own connection.
async fn serve(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    http: ConnectionBuilder<TokioExecutor>,
    service: S3Service,
    watcher: Watcher,
) {
    let Some(acceptor) = tls else {
        return serve_http(stream, &http, service, watcher).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_http(stream, &http, service, watcher).await,
        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

async fn serve_http(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    http: &ConnectionBuilder<TokioExecutor>,
    service: S3Service,
    watcher: Watcher,
) {
    let connection = http
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!("connection ended with an error: {e}");
    }
}
