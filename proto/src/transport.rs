//! How Archipel parties connect: every gRPC hop (client ↔ satellite, client ↔
//! node, satellite ↔ node, node ↔ satellite) is TLS 1.3 whose server proves the
//! identity the caller expected, plus the limits every server applies.
//!
//! **Identities, not certificate authorities.** A server presents a
//! self-signed certificate over its own Ed25519 identity key. A client does not
//! ask who signed it: it derives the id from the certificate's key and accepts
//! the connection only if that is the id it meant to reach (the satellite id
//! of an access grant or a node URL, the node id of an order limit or of the
//! satellite's records). The handshake signature, made with that same key, is
//! what proves the server holds it; names, dates and issuers in the
//! certificate mean nothing here. A peer with another identity is refused with
//! [`Error::PeerIdentityMismatch`], naming both ids. Clients present no
//! certificate: what they may do is decided by API keys and signed orders.
//!
//! **Limits.** Servers made with [`server`] time requests out, ping idle
//! connections and drop dead ones, and cap the streams of one connection;
//! [`incoming`] gives each TLS handshake a deadline and caps how many run at
//! once, so a peer that opens connections and says nothing holds nothing.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Server, Uri};

use crate::{Error, Identity, NodeId, PeerKey, Result};

/// Longest wait for a TCP connection and TLS handshake to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time a server waits for a client to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes a server runs at once; more connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;
/// HTTP/2 streams one connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// How often both ends ping a connection with streams open, and how long an
/// unanswered ping may stay so before the connection is dropped as dead.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The ALPN protocol: gRPC is HTTP/2.
const ALPN_H2: &[u8] = b"h2";
/// DER of an Ed25519 SubjectPublicKeyInfo up to the 32 key bytes (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// One crypto provider for TLS and data, as for everything else: ring. Named
/// explicitly because a process may link more than one.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn tls_error(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
}

/// The id a certificate's key derives to, if it is an Ed25519 key.
pub fn certificate_identity(certificate: &CertificateDer<'_>) -> Result<NodeId> {
    let parsed = rustls::server::ParsedCertificate::try_from(certificate).map_err(tls_error)?;
    let info = parsed.subject_public_key_info();
    let key = info
        .as_ref()
        .strip_prefix(ED25519_SPKI_PREFIX.as_slice())
        .ok_or_else(|| Error::Tls("the peer's certificate has no Ed25519 key".into()))?;
    Ok(PeerKey::from_public_key(key)?.id())
}

/// Accepts a server only if its certificate's key derives to `expected`.
#[derive(Debug)]
struct PinnedIdentity {
    expected: NodeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // Typed, so that callers can downcast the reason out of the I/O error.
        let refuse = |e: Error| rustls::Error::Other(rustls::OtherError(Arc::new(e)));
        let found = certificate_identity(end_entity).map_err(refuse)?;
        if found != self.expected {
            return Err(refuse(Error::PeerIdentityMismatch {
                expected: self.expected,
                found,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered, so this is never reached.
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

fn client_config(expected: NodeId) -> Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let verifier = PinnedIdentity {
        expected,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // The peer is named by its id, not a host name: nothing to indicate.
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// Bytes read from a connection's socket at once. TLS reads records in 4 KiB
/// steps; through this buffer a piece stream costs a system call per 32 KiB
/// instead (it was a tenth of a download's CPU time, measured with `perf`).
const SOCKET_READ_BUFFER: usize = 32 * 1024;

/// A TCP connection with reads from its socket buffered.
pub type Wire = tokio::io::BufReader<TcpStream>;

fn wire(tcp: TcpStream) -> Wire {
    tokio::io::BufReader::with_capacity(SOCKET_READ_BUFFER, tcp)
}

/// A client's TLS connection to a server that proved its identity.
pub type ClientStream = tokio_rustls::client::TlsStream<Wire>;

/// Runs the TLS handshake on a connected `tcp` stream and checks that the
/// server is `expected`.
pub async fn handshake(tcp: TcpStream, expected: NodeId) -> io::Result<ClientStream> {
    let config = client_config(expected).map_err(io::Error::other)?;
    // Never sent (SNI is off) and never checked: the id is what is checked.
    let name = ServerName::try_from("archipel").map_err(io::Error::other)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, wire(tcp))
        .await
}

/// Connects to `address` (host:port) and runs the handshake of [`handshake`].
pub async fn dial(address: &str, expected: NodeId) -> io::Result<ClientStream> {
    let tcp = TcpStream::connect(address).await?;
    // Small requests must not wait on Nagle's algorithm for a delayed ACK.
    tcp.set_nodelay(true)?;
    handshake(tcp, expected).await
}

/// An endpoint for `address` (host:port) with Archipel's client settings:
/// connect timeout, keepalive, and HTTP/2 windows wide enough that piece
/// streams do not stall on every round trip. Callers may add a request
/// timeout; [`connect`] and [`connect_lazy`] add TLS.
pub fn endpoint(address: &str) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| Error::InvalidNodeUrl(format!("{address:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .initial_stream_window_size(crate::PIECE_STREAM_WINDOW)
        .initial_connection_window_size(crate::PIECE_CONNECTION_WINDOW))
}

/// Dials the endpoint's address over TLS pinned to `expected`.
#[derive(Clone, Copy)]
struct PinnedConnector {
    expected: NodeId,
}

type Connecting =
    Pin<Box<dyn Future<Output = io::Result<hyper_util::rt::TokioIo<ClientStream>>> + Send>>;

impl tower::Service<Uri> for PinnedConnector {
    type Response = hyper_util::rt::TokioIo<ClientStream>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let expected = self.expected;
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| io::Error::other("the endpoint has no host:port"))?
                .to_string();
            dial(&authority, expected)
                .await
                .map(hyper_util::rt::TokioIo::new)
        })
    }
}

/// Connects to `endpoint` now, over TLS pinned to `expected`.
pub async fn connect(
    endpoint: &Endpoint,
    expected: NodeId,
) -> std::result::Result<Channel, tonic::transport::Error> {
    endpoint
        .connect_with_connector(PinnedConnector { expected })
        .await
}

/// A channel to `endpoint` that connects (over TLS pinned to `expected`) at
/// its first request, and again after a broken connection.
pub fn connect_lazy(endpoint: &Endpoint, expected: NodeId) -> Channel {
    endpoint.connect_with_connector_lazy(PinnedConnector { expected })
}

/// A channel over one already established connection, for callers that must
/// tell a peer that cannot be reached from one that does not answer.
pub async fn channel_over(
    endpoint: &Endpoint,
    stream: ClientStream,
) -> std::result::Result<Channel, tonic::transport::Error> {
    let mut slot = Some(stream);
    let connector = tower::service_fn(move |_: Uri| {
        let stream = slot.take();
        async move {
            stream
                .map(hyper_util::rt::TokioIo::new)
                .ok_or_else(|| io::Error::other("the connection was already used"))
        }
    });
    endpoint.connect_with_connector(connector).await
}

/// A server's TLS set-up: a self-signed certificate over its identity key.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    pub fn new(identity: &Identity) -> Result<ServerTls> {
        let pkcs8 = identity.pkcs8_der();
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &pkcs8.as_slice().into(),
            &rcgen::PKCS_ED25519,
        )
        .map_err(tls_error)?;
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, identity.id().to_string());
        let certificate = params.self_signed(&key_pair).map_err(tls_error)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                PrivateKeyDer::Pkcs8(pkcs8.into()),
            )
            .map_err(tls_error)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }
}

/// A gRPC server builder with Archipel's limits: `request_timeout` per
/// request, keepalive pings that drop dead connections, a cap on streams per
/// connection, and the piece-stream windows. Serve it with [`incoming`].
pub fn server(request_timeout: Duration) -> Server {
    Server::builder()
        .timeout(request_timeout)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
        .initial_stream_window_size(crate::PIECE_STREAM_WINDOW)
        .initial_connection_window_size(crate::PIECE_CONNECTION_WINDOW)
}

/// A server's side of a TLS connection.
pub struct ServerStream(tokio_rustls::server::TlsStream<Wire>);

impl Connected for ServerStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.get_ref().connect_info()
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// The stream of connections [`incoming`] accepts.
pub type Connections = tokio_stream::wrappers::ReceiverStream<io::Result<ServerStream>>;

/// The task that accepts connections for [`incoming`]; it owns the listener.
pub struct Accepting(tokio::task::JoinHandle<()>);

impl Accepting {
    /// Waits until accepting has stopped (the connection stream was dropped)
    /// and the listener is closed, so that its address may be bound again.
    pub async fn closed(self) {
        let _ = self.0.await;
    }
}

/// The TLS connections accepted on `listener`, for
/// `Server::serve_with_incoming_shutdown`. Handshakes run concurrently, each
/// within [`HANDSHAKE_TIMEOUT`] and at most [`MAX_HANDSHAKES`] at once; a
/// failed one is logged and dropped. Accepting stops when the stream is
/// dropped; a server that returns should wait for [`Accepting::closed`] so
/// that its listener is gone when it does.
pub fn incoming(listener: TcpListener, tls: ServerTls) -> (Connections, Accepting) {
    let (sender, receiver) = mpsc::channel(16);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let task = tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = sender.closed() => return,
                permit = handshakes.clone().acquire_owned() => permit,
            };
            // The semaphore is never closed.
            let Ok(permit) = permit else { return };
            let (tcp, peer) = tokio::select! {
                _ = sender.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, then go on.
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
                }
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(wire(tcp))).await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => return log_failed_handshake(peer, &e.to_string()),
                        Err(_) => return log_failed_handshake(peer, "it timed out"),
                    };
                drop(permit);
                let _ = sender.send(Ok(ServerStream(stream))).await;
            });
        }
    });
    (
        tokio_stream::wrappers::ReceiverStream::new(receiver),
        Accepting(task),
    )
}

fn log_failed_handshake(peer: SocketAddr, why: &str) {
    tracing::debug!(%peer, "a TLS handshake failed: {why}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server(identity: &Identity) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (mut connections, _) = incoming(listener, ServerTls::new(identity).unwrap());
        tokio::spawn(async move {
            use tokio_stream::StreamExt;
            while let Some(Ok(mut stream)) = connections.next().await {
                tokio::spawn(async move {
                    let mut buf = [0; 5];
                    if stream.read_exact(&mut buf).await.is_ok() {
                        let _ = stream.write_all(&buf).await;
                        let _ = stream.flush().await;
                    }
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn a_client_reaches_the_identity_it_expects() {
        let server = Identity::generate();
        let address = echo_server(&server).await;
        let mut stream = dial(&address.to_string(), server.id()).await.unwrap();
        let (_, connection) = stream.get_ref();
        let certificate = &connection.peer_certificates().unwrap()[0];
        assert_eq!(certificate_identity(certificate).unwrap(), server.id());
        assert_eq!(connection.alpn_protocol(), Some(ALPN_H2));
        stream.write_all(b"hello").await.unwrap();
        let mut buf = [0; 5];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[tokio::test]
    async fn another_identity_is_refused_with_both_ids() {
        let server = Identity::generate();
        let expected = Identity::generate().id();
        let address = echo_server(&server).await;
        let error = dial(&address.to_string(), expected).await.unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&expected.to_string()), "{text}");
        assert!(text.contains(&server.id().to_string()), "{text}");
        // The typed error is there for callers that look.
        let mismatch = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .and_then(|e| match e {
                rustls::Error::Other(other) => other.0.downcast_ref::<Error>(),
                _ => None,
            });
        assert!(matches!(
            mismatch,
            Some(Error::PeerIdentityMismatch { expected: e, found: f })
                if *e == expected && *f == server.id()
        ));
    }

    #[tokio::test]
    async fn a_silent_client_does_not_block_other_handshakes() {
        let server = Identity::generate();
        let address = echo_server(&server).await;
        // Connections that never start a handshake hold no one up.
        let _silent: Vec<TcpStream> = open_silent_connections(address, 8).await;
        let mut stream = dial(&address.to_string(), server.id()).await.unwrap();
        stream.write_all(b"again").await.unwrap();
        let mut buf = [0; 5];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"again");
    }

    async fn open_silent_connections(address: SocketAddr, count: usize) -> Vec<TcpStream> {
        let mut streams = Vec::new();
        for _ in 0..count {
            streams.push(TcpStream::connect(address).await.unwrap());
        }
        streams
    }

    #[test]
    fn certificates_of_other_key_types_have_no_identity() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(matches!(
            certificate_identity(certificate.der()),
            Err(Error::Tls(_))
        ));
        assert!(certificate_identity(&CertificateDer::from(vec![1, 2, 3])).is_err());
    }
}
