//! Trust on the wire: every hop is TLS, and a peer is accepted only if it
//! proves the identity the caller meant to reach. Impostors are real servers
//! (a satellite or storage node with another identity) on the expected
//! address; the eavesdropper is a TCP proxy that records every byte; the liar
//! is a piecestore with a node's own identity that signs the root of other
//! data than it was sent.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use archipel_client::{Access, Project, UploadOptions};
use archipel_proto::hashtree::{TreeBuilder, DEFAULT_CHUNK_SIZE};
use archipel_proto::pb::piecestore_server::{Piecestore, PiecestoreServer};
use archipel_proto::pb::{
    PieceDeleteRequest, PieceDeleteResponse, PieceDownloadRequest, PieceDownloadResponse,
    PieceHash, PieceUploadRequest, PieceUploadResponse, RestoreTrashRequest, RestoreTrashResponse,
    RetainRequest, RetainResponse,
};
use archipel_proto::{orders, transport, Identity};
use archipel_tests::{on_both_backends, test_data, Backend, Planet, PlanetConfig};
use futures::stream::BoxStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, Streaming};

/// Asserts that `text` names both the id that was expected and the one found.
fn names_both(text: &str, expected: impl ToString, found: impl ToString) {
    assert!(text.contains(&expected.to_string()), "{text}");
    assert!(text.contains(&found.to_string()), "{text}");
}

async fn an_impostor_satellite_is_refused(backend: Backend) {
    let planet = Planet::start(PlanetConfig {
        nodes: 0,
        ..PlanetConfig::with_backend(backend)
    })
    .await
    .unwrap();
    // Another real satellite, with its own identity, plays the impostor.
    let impostor = Planet::start(PlanetConfig {
        nodes: 0,
        ..PlanetConfig::with_backend(backend)
    })
    .await
    .unwrap();
    let mut misdirected = planet.satellite_url();
    misdirected.address = impostor.satellite_address.to_string();

    let error = Access::request(&misdirected, &planet.api_key, "pass")
        .await
        .unwrap_err();
    assert!(
        matches!(error, archipel_client::Error::SatelliteUnreachable { .. }),
        "{error}"
    );
    names_both(
        &error.to_string(),
        planet.satellite_identity.id(),
        impostor.satellite_identity.id(),
    );

    // A grant whose address now leads to the impostor is refused too.
    let mut access = Access::parse(&planet.access().serialize()).unwrap();
    access.satellite_address = misdirected.address.clone();
    let error = Project::open(&access).await.err().unwrap();
    names_both(
        &error.to_string(),
        planet.satellite_identity.id(),
        impostor.satellite_identity.id(),
    );
    impostor.shutdown().await.unwrap();
    planet.shutdown().await.unwrap();
}

async fn an_impostor_node_is_refused(backend: Backend) {
    let mut planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("trust").await.unwrap();
    let data = test_data(300_000, 7);
    project
        .upload("trust", "object", &data[..], UploadOptions::default())
        .await
        .unwrap();
    let holder = planet.holders().await.unwrap()[0];
    let honest = planet.nodes[holder].id();
    let impostor = planet.impersonate_node(holder).await.unwrap();

    // Dialled as the node it replaced, the impostor is refused by name.
    let address = planet.nodes[holder].address.to_string();
    let endpoint = transport::endpoint(&address).unwrap();
    let error = transport::connect(&endpoint, honest).await.unwrap_err();
    names_both(
        &archipel_proto::error_chain(&error),
        honest,
        impostor.identity.id(),
    );

    // Downloads route around it: every byte still comes from honest nodes.
    let mut out = Vec::new();
    project
        .download("trust", "object", None, &mut out, None)
        .await
        .unwrap();
    assert!(out == data);
    impostor.stop().await.unwrap();
    planet.shutdown().await.unwrap();
}

/// A storage node that lies about what it stored: it takes a piece, flips a
/// bit of it, and signs the hash tree of the altered bytes with the node's
/// own key — a signature every check of the signature alone accepts, for data
/// an audit against that root would find intact.
struct LyingPiecestore {
    identity: Identity,
}

#[tonic::async_trait]
impl Piecestore for LyingPiecestore {
    async fn upload(
        &self,
        request: Request<Streaming<PieceUploadRequest>>,
    ) -> Result<Response<PieceUploadResponse>, Status> {
        let mut stream = request.into_inner();
        let mut piece_id = Vec::new();
        let mut tree = TreeBuilder::new(DEFAULT_CHUNK_SIZE);
        while let Some(mut message) = stream.message().await? {
            if let Some(limit) = message.limit {
                piece_id = limit.piece_id;
            }
            if let Some(byte) = message.data.first_mut() {
                *byte ^= 1;
            }
            tree.update(&message.data);
            if message.done {
                break;
            }
        }
        let piece_size = tree.size() as i64;
        let (root, _) = tree.finish();
        let hash = orders::sign_piece_hash(
            &self.identity,
            PieceHash {
                piece_id,
                root: root.to_vec(),
                piece_size,
                timestamp: orders::unix_now(),
                node_signature: Vec::new(),
            },
        );
        Ok(Response::new(PieceUploadResponse { hash: Some(hash) }))
    }

    type DownloadStream = BoxStream<'static, Result<PieceDownloadResponse, Status>>;

    async fn download(
        &self,
        _: Request<PieceDownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        Err(Status::not_found("this node keeps nothing"))
    }

    async fn delete(
        &self,
        _: Request<PieceDeleteRequest>,
    ) -> Result<Response<PieceDeleteResponse>, Status> {
        Ok(Response::new(PieceDeleteResponse {}))
    }

    async fn retain(&self, _: Request<RetainRequest>) -> Result<Response<RetainResponse>, Status> {
        Ok(Response::new(RetainResponse::default()))
    }

    async fn restore_trash(
        &self,
        _: Request<RestoreTrashRequest>,
    ) -> Result<Response<RestoreTrashResponse>, Status> {
        Ok(Response::new(RestoreTrashResponse::default()))
    }
}

/// Stops node `i` and serves a [`LyingPiecestore`] with its identity on its
/// address; the returned sender stops the liar.
async fn replace_with_liar(planet: &mut Planet, i: usize) -> oneshot::Sender<()> {
    planet.stop_node(i).await.unwrap();
    let identity = planet.nodes[i].identity.clone();
    let listener = TcpListener::bind(planet.nodes[i].address).await.unwrap();
    let tls = transport::ServerTls::new(&identity).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        transport::server(std::time::Duration::from_secs(60))
            .add_service(PiecestoreServer::new(LyingPiecestore { identity }))
            .serve_with_incoming_shutdown(transport::incoming(listener, tls).0, async {
                let _ = stopped.await;
            }),
    );
    stop
}

async fn a_node_that_signs_other_data_is_left_out(backend: Backend) {
    // Every upload goes to all ten nodes and needs eight of them.
    let mut planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let liar = planet.nodes[0].id();
    let mut liars = vec![replace_with_liar(&mut planet, 0).await];
    let project = planet.project().await.unwrap();
    project.create_bucket("trust").await.unwrap();
    let data = test_data(300_000, 11);
    project
        .upload("trust", "object", &data[..], UploadOptions::default())
        .await
        .unwrap();

    // The segment committed from the nine honest nodes; the liar's root was
    // never recorded, so no audit or repair can ever hold it up as valid.
    let segments = planet.remote_segments().await.unwrap();
    assert_eq!(segments.len(), 1);
    let holders: Vec<_> = segments[0].pieces.iter().map(|p| p.node).collect();
    assert_eq!(holders.len(), 9, "{holders:?}");
    assert!(!holders.contains(&liar));
    let mut out = Vec::new();
    project
        .download("trust", "object", None, &mut out, None)
        .await
        .unwrap();
    assert!(out == data);

    // With three liars only seven honest pieces are left: the upload fails
    // and says why, rather than committing pieces nobody can check.
    for i in 1..3 {
        liars.push(replace_with_liar(&mut planet, i).await);
    }
    let error = project
        .upload("trust", "other", &data[..], UploadOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            archipel_client::Error::UploadFailed {
                stored: 7,
                needed: 8,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("signed the hash of other data than the piece it was sent"),
        "{error}"
    );
    for stop in liars {
        let _ = stop.send(());
    }
    planet.shutdown().await.unwrap();
}

/// A TCP proxy to `target` that keeps every byte it forwards, one buffer per
/// connection and direction.
async fn recording_proxy(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let record = recorded.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(target).await.unwrap();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            for (from, to) in [(client_read, server_write), (server_read, client_write)] {
                let record = record.clone();
                tokio::spawn(forward(from, to, record));
            }
        }
    });
    (address, recorded)
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    record: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let index = {
        let mut record = record.lock().unwrap();
        record.push(Vec::new());
        record.len() - 1
    };
    let mut buf = vec![0; 64 << 10];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        record.lock().unwrap()[index].extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn an_eavesdropper_sees_no_api_key_and_no_order_limit(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let (proxy, recorded) = recording_proxy(planet.satellite_address).await;
    let mut access = Access::parse(&planet.access().serialize()).unwrap();
    access.satellite_address = proxy.to_string();
    let project = Project::open(&access).await.unwrap();
    project.create_bucket("secret").await.unwrap();
    // Two segments: the satellite hands out order limits for both.
    let data = test_data(300_000, 3);
    project
        .upload("secret", "object", &data[..], UploadOptions::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    project
        .download("secret", "object", None, &mut out, None)
        .await
        .unwrap();
    assert!(out == data);

    let streams = recorded.lock().unwrap().clone();
    for stream in streams.iter().filter(|s| !s.is_empty()) {
        assert!(
            stream.starts_with(&[0x16, 0x03]),
            "a connection did not begin with a TLS handshake record"
        );
    }
    let recorded = streams.concat();
    // The proxy carried the whole conversation: handshakes, order limits for
    // every node, the object's metadata.
    assert!(recorded.len() > 10_000, "only {} bytes", recorded.len());
    assert!(!contains(&recorded, planet.api_key.as_bytes()));
    for node in &planet.nodes {
        // Every order limit names its node by id and address.
        assert!(!contains(&recorded, node.id().as_bytes()));
        assert!(!contains(&recorded, node.address.to_string().as_bytes()));
    }
    assert!(!contains(&recorded, b"secret"));
    planet.shutdown().await.unwrap();
}

on_both_backends!(
    an_impostor_satellite_is_refused,
    an_impostor_node_is_refused,
    an_eavesdropper_sees_no_api_key_and_no_order_limit,
    a_node_that_signs_other_data_is_left_out,
);
