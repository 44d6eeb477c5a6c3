//! The satellite's gRPC services end to end: `run` on 127.0.0.1:0 over a fresh
//! database of each backend, called with the generated clients. Storage nodes
//! are test identities that check in and sign piece hashes like real ones,
//! each answering the satellite's ping-back with a TLS listener of its own
//! (every 127.x.y.z address is loopback, so each can have its own /24).

// Test helpers outside #[test] functions unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use archipel_proto::orders::{
    derive_piece_id, piece_id_from_bytes, sign_check_in, sign_piece_hash, unix_now,
    verify_order_limit_signature,
};
use archipel_proto::pb::commit_object_request::LastSegment;
use archipel_proto::pb::metainfo_client::MetainfoClient;
use archipel_proto::pb::node_client::NodeClient;
use archipel_proto::pb::{self, PieceAction};
use archipel_proto::{transport, Identity, NodeId, PeerKey, Redundancy};
use archipel_satellite::testing::{Backend, FreshDatabase};
use archipel_satellite::Config;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() { super::$name(super::Backend::Sqlite).await; })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() { super::$name(super::Backend::Postgres).await; })*
        }
    };
}

on_both_backends!(
    api_keys_are_required,
    check_in_updates_the_node_registry,
    check_ins_are_pinged_back,
    weak_identities_are_refused,
    upload_commit_download_list_delete,
    invalid_commits_are_refused,
    selection_respects_subnets,
    requests_are_validated,
    abandoned_uploads_are_cleaned_up,
    multipart_uploads_are_scoped_and_checked,
    copies_are_scoped_and_checked,
    folded_requests_are_checked,
);

struct Satellite {
    identity: Identity,
    api_key: String,
    metainfo: MetainfoClient<Channel>,
    node: NodeClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<JoinHandle<archipel_satellite::Result<()>>>,
    /// The TLS listeners test nodes answer ping-backs on.
    listeners: Mutex<Vec<JoinHandle<()>>>,
    database: FreshDatabase,
    _dir: tempfile::TempDir,
}

fn redundancy() -> Redundancy {
    Redundancy::new(4, 6, 8, 10, 1024).unwrap()
}

impl Satellite {
    async fn start(backend: Backend, configure: impl FnOnce(&mut Config)) -> Satellite {
        let dir = tempfile::tempdir().unwrap();
        let database = FreshDatabase::create(backend, dir.path()).await.unwrap();
        let mut config = Config::new(database.url());
        config.redundancy = redundancy();
        config.inline_threshold = 4096;
        config.distinct_subnets = false;
        config.min_identity_difficulty = 0;
        configure(&mut config);
        let identity = Identity::generate();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        // The project first: that migrates the database, which the satellite
        // (and its background workers) would otherwise do at the same moment.
        let api_key = archipel_satellite::create_project(database.url(), "test")
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(archipel_satellite::run(
            config,
            identity.clone(),
            listener,
            None,
            async move {
                let _ = stopped.await;
            },
        ));
        let endpoint = archipel_proto::transport::endpoint(&address).unwrap();
        let channel = archipel_proto::transport::connect_lazy(&endpoint, identity.id());
        Satellite {
            identity,
            api_key,
            metainfo: MetainfoClient::new(channel.clone()),
            node: NodeClient::new(channel),
            stop: Some(stop),
            server: Some(server),
            listeners: Mutex::default(),
            database,
            _dir: dir,
        }
    }

    fn header(&self) -> Option<pb::RequestHeader> {
        Some(pb::RequestHeader {
            api_key: self.api_key.clone(),
        })
    }

    fn satellite_key(&self) -> PeerKey {
        PeerKey::from_public_key(&self.identity.public_key()).unwrap()
    }

    /// Serves TLS as `node` on a free port of `ip`, where the satellite's
    /// ping-back finds it; returns the address.
    async fn listen_as(&self, node: &Identity, ip: &str) -> String {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let tls = transport::ServerTls::new(node).unwrap();
        let task = tokio::spawn(async move {
            let (mut connections, _) = transport::incoming(listener, tls);
            while connections.next().await.is_some() {}
        });
        self.listeners.lock().unwrap().push(task);
        address
    }

    /// Checks `node` in from `address` with `free_bytes` of free space.
    async fn send_check_in(
        &self,
        node: &Identity,
        address: &str,
        free_bytes: i64,
    ) -> Result<pb::CheckInResponse, tonic::Status> {
        let request = sign_check_in(
            node,
            pb::CheckInRequest {
                address: address.into(),
                capacity_bytes: 1 << 30,
                free_bytes,
                version: "test".into(),
                timestamp: unix_now(),
                ..Default::default()
            },
        );
        self.node
            .clone()
            .check_in(request)
            .await
            .map(|r| r.into_inner())
    }

    /// Checks `node` in, listening on a free port of `ip`.
    async fn check_in(
        &self,
        node: &Identity,
        ip: &str,
    ) -> Result<pb::CheckInResponse, tonic::Status> {
        let address = self.listen_as(node, ip).await;
        self.send_check_in(node, &address, 1 << 29).await
    }

    /// Checks in `count` nodes, each in its own /24.
    async fn add_nodes(&self, count: usize) -> Vec<Identity> {
        let mut nodes = Vec::new();
        for i in 0..count {
            let node = Identity::generate();
            self.check_in(&node, &format!("127.0.{}.1", i + 1))
                .await
                .unwrap();
            nodes.push(node);
        }
        nodes
    }

    async fn create_bucket(&self, name: &str) {
        self.metainfo
            .clone()
            .create_bucket(pb::CreateBucketRequest {
                header: self.header(),
                name: name.into(),
                plain_names: false,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn begin_object(
        &self,
        bucket: &str,
        key: &[u8],
    ) -> Result<pb::BeginObjectResponse, tonic::Status> {
        self.metainfo
            .clone()
            .begin_object(pb::BeginObjectRequest {
                header: self.header(),
                bucket: bucket.into(),
                encrypted_object_key: key.to_vec(),
                encryption: Some(pb::EncryptionParameters {
                    cipher: 1,
                    block_size: 65536,
                }),
                expires_at: 0,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn begin_segment(
        &self,
        stream_id: &[u8],
        position: u32,
        max_encrypted_size: i64,
    ) -> Result<pb::BeginSegmentResponse, tonic::Status> {
        self.metainfo
            .clone()
            .begin_segment(pb::BeginSegmentRequest {
                header: self.header(),
                stream_id: stream_id.to_vec(),
                position,
                max_encrypted_size,
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn commit_segment(
        &self,
        segment_id: &[u8],
        encrypted_size: i64,
        pieces: Vec<pb::SegmentPieceUpload>,
    ) -> Result<(), tonic::Status> {
        self.metainfo
            .clone()
            .commit_segment(pb::CommitSegmentRequest {
                header: self.header(),
                segment_id: segment_id.to_vec(),
                encrypted_key: vec![1; 48],
                encrypted_key_nonce: vec![2; 12],
                plain_size: encrypted_size - 16,
                encrypted_size,
                pieces,
            })
            .await
            .map(|_| ())
    }

    async fn commit_object(&self, stream_id: &[u8]) -> Result<pb::Object, tonic::Status> {
        self.metainfo
            .clone()
            .commit_object(pb::CommitObjectRequest {
                header: self.header(),
                stream_id: stream_id.to_vec(),
                encrypted_metadata: b"meta".to_vec(),
                encrypted_metadata_key: b"mkey".to_vec(),
                encrypted_metadata_nonce: b"nonce".to_vec(),
                parts: Vec::new(),
                part_infos: Vec::new(),
                last_segment: None,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().object.unwrap())
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap().unwrap();
        for listener in self.listeners.lock().unwrap().drain(..) {
            listener.abort();
        }
    }
}

/// What a node that stored piece `limit` would sign; `signer` may differ from
/// the node the limit names, to forge.
fn piece_upload(
    limit: &pb::AddressedOrderLimit,
    signer: &Identity,
    piece_size: i64,
    root: [u8; 32],
) -> pb::SegmentPieceUpload {
    let order = limit.limit.as_ref().unwrap();
    pb::SegmentPieceUpload {
        piece_num: limit.piece_num,
        node_id: order.node_id.clone(),
        hash: Some(sign_piece_hash(
            signer,
            pb::PieceHash {
                piece_id: order.piece_id.clone(),
                root: root.to_vec(),
                piece_size,
                timestamp: unix_now(),
                ..Default::default()
            },
        )),
    }
}

fn identity_of<'a>(nodes: &'a [Identity], limit: &pb::AddressedOrderLimit) -> &'a Identity {
    let id = NodeId::from_bytes(&limit.limit.as_ref().unwrap().node_id).unwrap();
    nodes.iter().find(|n| n.id() == id).unwrap()
}

/// Signed uploads of the first `count` pieces of a segment.
fn uploads(
    nodes: &[Identity],
    segment: &pb::BeginSegmentResponse,
    piece_size: i64,
    count: usize,
) -> Vec<pb::SegmentPieceUpload> {
    segment
        .limits
        .iter()
        .take(count)
        .map(|l| piece_upload(l, identity_of(nodes, l), piece_size, rand::random()))
        .collect()
}

async fn api_keys_are_required(backend: Backend) {
    let sat = Satellite::start(backend, |_| {}).await;
    let mut client = sat.metainfo.clone();
    for key in ["", "ak_not_a_key"] {
        let header = Some(pb::RequestHeader {
            api_key: key.into(),
        });
        let status = client
            .get_project_info(pb::ProjectInfoRequest {
                header: header.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = client
            .create_bucket(pb::CreateBucketRequest {
                header,
                name: "bucket".into(),
                plain_names: false,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let info = client
        .get_project_info(pb::ProjectInfoRequest {
            header: sat.header(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.project_salt.len(), 32);
    assert_eq!(info.satellite_id, sat.identity.id().to_vec());

    // Each key sees only its own project's buckets.
    sat.create_bucket("mine").await;
    let other_key = archipel_satellite::create_project(sat.database.url(), "other")
        .await
        .unwrap();
    let listed = client
        .list_buckets(pb::ListBucketsRequest {
            header: Some(pb::RequestHeader { api_key: other_key }),
            cursor: String::new(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.buckets.is_empty());
    sat.stop().await;
}

/// A check-in is recorded only once the satellite reached the node at the
/// address it announced and found the same identity there.
async fn check_ins_are_pinged_back(backend: Backend) {
    let sat = Satellite::start(backend, |_| {}).await;
    let metabase = sat.database.metabase().await.unwrap();
    let node = Identity::generate();

    // Nobody listens at the announced address.
    let vacant = {
        let listener = tokio::net::TcpListener::bind("127.0.4.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let status = sat
        .send_check_in(&node, &vacant, 1 << 29)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("cannot reach"), "{status:?}");
    assert!(status.message().contains(&vacant), "{status:?}");

    // Another identity answers there: announcing someone else's address
    // (to borrow its subnet, or to point clients at it) fails.
    let other = Identity::generate();
    let borrowed = sat.listen_as(&other, "127.0.5.1").await;
    let status = sat
        .send_check_in(&node, &borrowed, 1 << 29)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains(&node.id().to_string()),
        "{status:?}"
    );
    assert!(
        status.message().contains(&other.id().to_string()),
        "{status:?}"
    );

    // An unspecified address would lead back to the satellite's own host.
    let status = sat
        .send_check_in(&node, "0.0.0.0:7000", 1 << 29)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(metabase.node_count().await.unwrap(), 0);

    sat.check_in(&node, "127.0.6.1").await.unwrap();
    assert_eq!(metabase.node_count().await.unwrap(), 1);
    sat.stop().await;
}

/// Nodes must bring an identity of the configured difficulty.
async fn weak_identities_are_refused(backend: Backend) {
    let sat = Satellite::start(backend, |c| c.min_identity_difficulty = 8).await;
    let weak = std::iter::repeat_with(Identity::generate)
        .find(|i| i.id().difficulty() < 8)
        .unwrap();
    let status = sat.check_in(&weak, "127.0.7.1").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("below this satellite's minimum of 8"),
        "{status:?}"
    );
    let strong = Identity::generate_with_difficulty(8);
    sat.check_in(&strong, "127.0.7.2").await.unwrap();
    let metabase = sat.database.metabase().await.unwrap();
    assert_eq!(metabase.node_count().await.unwrap(), 1);
    sat.stop().await;
}

async fn check_in_updates_the_node_registry(backend: Backend) {
    let sat = Satellite::start(backend, |_| {}).await;
    let node = Identity::generate();
    let address = sat.listen_as(&node, "127.0.3.4").await;
    let response = sat.send_check_in(&node, &address, 1 << 29).await.unwrap();
    assert_eq!(
        response.satellite_public_key,
        sat.identity.public_key().to_vec()
    );
    assert!(response.next_check_in_seconds > 0);
    let metabase = sat.database.metabase().await.unwrap();
    let row = metabase.node(&node.id()).await.unwrap().unwrap();
    assert_eq!(row.address, address);
    assert_eq!(row.last_net, "127.0.3.0/24");
    assert_eq!(row.public_key, node.public_key().to_vec());
    assert_eq!(row.free_bytes, 1 << 29);

    let moved = sat.listen_as(&node, "127.0.9.4").await;
    sat.send_check_in(&node, &moved, 1 << 29).await.unwrap();
    let row = metabase.node(&node.id()).await.unwrap().unwrap();
    assert_eq!(
        (row.address.as_str(), row.last_net.as_str()),
        (moved.as_str(), "127.0.9.0/24")
    );
    assert_eq!(metabase.node_count().await.unwrap(), 1);

    let stale = sign_check_in(
        &node,
        pb::CheckInRequest {
            address: "127.0.0.1:1".into(),
            timestamp: unix_now() - 3600,
            ..Default::default()
        },
    );
    let status = sat.node.clone().check_in(stale).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let far_past = sign_check_in(
        &node,
        pb::CheckInRequest {
            address: "127.0.0.1:1".into(),
            timestamp: i64::MIN,
            ..Default::default()
        },
    );
    let status = sat.node.clone().check_in(far_past).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let mut tampered = sign_check_in(
        &Identity::generate(),
        pb::CheckInRequest {
            address: "127.0.0.1:1".into(),
            timestamp: unix_now(),
            ..Default::default()
        },
    );
    tampered.free_bytes = 1 << 40;
    let status = sat.node.clone().check_in(tampered).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(metabase.node_count().await.unwrap(), 1);
    sat.stop().await;
}

async fn upload_commit_download_list_delete(backend: Backend) {
    let sat = Satellite::start(backend, |_| {}).await;
    let nodes = sat.add_nodes(10).await;
    sat.create_bucket("photos").await;
    let object = sat
        .begin_object("photos", b"enc-dir/enc-file")
        .await
        .unwrap();
    assert_eq!(object.redundancy, Some(redundancy().to_pb()));
    assert_eq!(object.inline_threshold, 4096);

    let encrypted_size = 9000;
    let piece_size = redundancy().piece_size(encrypted_size as u64) as i64;
    let segment = sat
        .begin_segment(&object.stream_id, 0, 10_000)
        .await
        .unwrap();
    assert_eq!(segment.limits.len(), 10);
    let sat_key = sat.satellite_key();
    let mut piece_ids = std::collections::HashSet::new();
    for limit in &segment.limits {
        let order = limit.limit.as_ref().unwrap();
        verify_order_limit_signature(&sat_key, order).unwrap();
        assert_eq!(order.action(), PieceAction::Put);
        assert_eq!(order.limit, redundancy().piece_size(10_000) as i64);
        assert!(order.order_expiration > unix_now());
        let node = identity_of(&nodes, limit);
        assert_eq!(limit.node_public_key, node.public_key().to_vec());
        assert!(limit.node_address.starts_with("127.0."));
        assert!(piece_ids.insert(piece_id_from_bytes(&order.piece_id).unwrap()));
    }

    let pieces = uploads(&nodes, &segment, piece_size, 8);
    let roots: Vec<Vec<u8>> = pieces
        .iter()
        .map(|p| p.hash.as_ref().unwrap().root.clone())
        .collect();
    sat.commit_segment(&segment.segment_id, encrypted_size, pieces)
        .await
        .unwrap();
    sat.metainfo
        .clone()
        .make_inline_segment(pb::MakeInlineSegmentRequest {
            header: sat.header(),
            stream_id: object.stream_id.clone(),
            position: 1,
            encrypted_key: vec![3; 48],
            encrypted_key_nonce: vec![4; 12],
            plain_size: 84,
            encrypted_inline_data: vec![7; 100],
        })
        .await
        .unwrap();
    let committed = sat.commit_object(&object.stream_id).await.unwrap();
    assert_eq!(committed.plain_size, encrypted_size - 16 + 84);
    assert_eq!(committed.segment_count, 2);

    let got = sat
        .metainfo
        .clone()
        .get_object(pb::GetObjectRequest {
            header: sat.header(),
            bucket: "photos".into(),
            encrypted_object_key: b"enc-dir/enc-file".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got_object = got.object.unwrap();
    assert_eq!(got_object.encrypted_metadata, b"meta");
    assert_eq!(got_object.encryption.unwrap().block_size, 65536);
    assert_eq!(got.segments.len(), 2);
    assert_eq!(got.segments[0].piece_count, 8);
    assert!(!got.segments[0].inline);
    assert_eq!(got.segments[1].plain_offset, encrypted_size - 16);
    assert!(got.segments[1].inline);

    let download = |position: u32| {
        let mut client = sat.metainfo.clone();
        let request = pb::DownloadSegmentRequest {
            header: sat.header(),
            stream_id: got_object.stream_id.clone(),
            position,
        };
        async move {
            client
                .download_segment(request)
                .await
                .map(|r| r.into_inner())
        }
    };
    let remote = download(0).await.unwrap();
    assert_eq!(remote.limits.len(), 8);
    assert_eq!(remote.piece_roots, roots);
    assert_eq!(remote.piece_size, piece_size);
    assert_eq!(remote.encrypted_key, vec![1; 48]);
    for (limit, upload) in remote.limits.iter().zip(&segment.limits) {
        let order = limit.limit.as_ref().unwrap();
        verify_order_limit_signature(&sat_key, order).unwrap();
        assert_eq!(order.action(), PieceAction::Get);
        assert_eq!(limit.piece_num, upload.piece_num);
        assert_eq!(order.piece_id, upload.limit.as_ref().unwrap().piece_id);
    }
    let inline = download(1).await.unwrap();
    assert!(inline.limits.is_empty());
    assert_eq!(inline.encrypted_inline_data, vec![7; 100]);
    assert_eq!(download(2).await.unwrap_err().code(), Code::NotFound);

    let listed = sat
        .metainfo
        .clone()
        .list_objects(pb::ListObjectsRequest {
            header: sat.header(),
            bucket: "photos".into(),
            encrypted_prefix: Vec::new(),
            cursor: Vec::new(),
            recursive: false,
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.items.len(), 1);
    assert!(listed.items[0].is_prefix);
    assert_eq!(listed.items[0].encrypted_object_key, b"enc-dir/");

    let deleted = sat
        .metainfo
        .clone()
        .delete_object(pb::DeleteObjectRequest {
            header: sat.header(),
            bucket: "photos".into(),
            encrypted_object_key: b"enc-dir/enc-file".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.object.unwrap().plain_size, committed.plain_size);
    assert_eq!(download(0).await.unwrap_err().code(), Code::NotFound);
    let status = sat
        .metainfo
        .clone()
        .delete_object(pb::DeleteObjectRequest {
            header: sat.header(),
            bucket: "photos".into(),
            encrypted_object_key: b"enc-dir/enc-file".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    sat.stop().await;
}

async fn invalid_commits_are_refused(backend: Backend) {
    let sat = Satellite::start(backend, |_| {}).await;
    let nodes = sat.add_nodes(10).await;
    sat.create_bucket("bucket").await;
    let object = sat.begin_object("bucket", b"key").await.unwrap();
    let segment = sat.begin_segment(&object.stream_id, 0, 4096).await.unwrap();
    let piece_size = redundancy().piece_size(4096) as i64;
    let invalid = |result: Result<(), tonic::Status>| {
        assert_eq!(result.unwrap_err().code(), Code::InvalidArgument);
    };

    // Forged segment ids: a changed byte, a stream id, another satellite's.
    let mut forged = segment.segment_id.clone();
    let middle = forged.len() / 2;
    forged[middle] ^= 1;
    invalid(
        sat.commit_segment(&forged, 4096, uploads(&nodes, &segment, piece_size, 8))
            .await,
    );
    invalid(
        sat.commit_segment(
            &object.stream_id,
            4096,
            uploads(&nodes, &segment, piece_size, 8),
        )
        .await,
    );

    invalid(
        sat.commit_segment(
            &segment.segment_id,
            4096,
            uploads(&nodes, &segment, piece_size, 7),
        )
        .await,
    );

    // A plain size beyond the segment's encrypted size would corrupt offsets.
    let status = sat
        .metainfo
        .clone()
        .commit_segment(pb::CommitSegmentRequest {
            header: sat.header(),
            segment_id: segment.segment_id.clone(),
            encrypted_key: vec![1; 48],
            encrypted_key_nonce: vec![2; 12],
            plain_size: i64::MAX,
            encrypted_size: 4096,
            pieces: uploads(&nodes, &segment, piece_size, 8),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("plain size"), "{status:?}");

    let mut wrong_signer = uploads(&nodes, &segment, piece_size, 8);
    wrong_signer[3] = piece_upload(
        &segment.limits[3],
        identity_of(&nodes, &segment.limits[4]),
        piece_size,
        [0; 32],
    );
    invalid(
        sat.commit_segment(&segment.segment_id, 4096, wrong_signer)
            .await,
    );

    let mut wrong_node = uploads(&nodes, &segment, piece_size, 8);
    wrong_node[2].node_id = segment.limits[9].limit.as_ref().unwrap().node_id.clone();
    invalid(
        sat.commit_segment(&segment.segment_id, 4096, wrong_node)
            .await,
    );

    let mut wrong_piece = uploads(&nodes, &segment, piece_size, 8);
    let mut other_piece = segment.limits[0].clone();
    other_piece.limit.as_mut().unwrap().piece_id =
        derive_piece_id(&[1; 32], &nodes[0].id(), 0).to_vec();
    wrong_piece[0] = piece_upload(
        &other_piece,
        identity_of(&nodes, &segment.limits[0]),
        piece_size,
        [0; 32],
    );
    invalid(
        sat.commit_segment(&segment.segment_id, 4096, wrong_piece)
            .await,
    );

    let mut duplicated = uploads(&nodes, &segment, piece_size, 8);
    duplicated[7] = duplicated[0].clone();
    invalid(
        sat.commit_segment(&segment.segment_id, 4096, duplicated)
            .await,
    );

    invalid(
        sat.commit_segment(
            &segment.segment_id,
            4096,
            uploads(&nodes, &segment, piece_size - 1024, 8),
        )
        .await,
    );
    // More than the order limits allow.
    let big = redundancy().piece_size(1 << 20) as i64;
    invalid(
        sat.commit_segment(
            &segment.segment_id,
            1 << 20,
            uploads(&nodes, &segment, big, 8),
        )
        .await,
    );

    // Another project's key cannot use this project's ids.
    let other_key = archipel_satellite::create_project(sat.database.url(), "other")
        .await
        .unwrap();
    let status = sat
        .metainfo
        .clone()
        .commit_segment(pb::CommitSegmentRequest {
            header: Some(pb::RequestHeader { api_key: other_key }),
            segment_id: segment.segment_id.clone(),
            encrypted_size: 4096,
            pieces: uploads(&nodes, &segment, piece_size, 8),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // Nothing above was stored; the honest commit still works, once.
    sat.commit_segment(
        &segment.segment_id,
        4096,
        uploads(&nodes, &segment, piece_size, 9),
    )
    .await
    .unwrap();
    let again = sat
        .commit_segment(
            &segment.segment_id,
            4096,
            uploads(&nodes, &segment, piece_size, 8),
        )
        .await;
    assert_eq!(again.unwrap_err().code(), Code::AlreadyExists);
    // Segments must be contiguous before the object commits.
    let gap = sat.begin_segment(&object.stream_id, 2, 4096).await.unwrap();
    sat.commit_segment(&gap.segment_id, 4096, uploads(&nodes, &gap, piece_size, 8))
        .await
        .unwrap();
    assert_eq!(
        sat.commit_object(&object.stream_id)
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    sat.stop().await;
}

async fn selection_respects_subnets(backend: Backend) {
    let sat = Satellite::start(backend, |c| c.distinct_subnets = true).await;
    let mut nodes = Vec::new();
    for i in 0..10 {
        let node = Identity::generate();
        sat.check_in(&node, &format!("127.0.{}.{}", i % 4, i + 1))
            .await
            .unwrap();
        nodes.push(node);
    }
    sat.create_bucket("bucket").await;
    let object = sat.begin_object("bucket", b"key").await.unwrap();
    let status = sat
        .begin_segment(&object.stream_id, 0, 4096)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("need 8, have 4"),
        "{}",
        status.message()
    );

    for i in 0..4 {
        let node = Identity::generate();
        sat.check_in(&node, &format!("127.1.{i}.1")).await.unwrap();
        nodes.push(node);
    }
    // 8 networks: enough to succeed, fewer than total.
    for _ in 0..5 {
        let segment = sat.begin_segment(&object.stream_id, 0, 4096).await.unwrap();
        assert_eq!(segment.limits.len(), 8);
        let networks: std::collections::HashSet<_> = segment
            .limits
            .iter()
            .map(|l| {
                let ip = l.node_address.rsplit_once(':').unwrap().0;
                ip.rsplit_once('.').unwrap().0.to_string()
            })
            .collect();
        assert_eq!(networks.len(), 8);
    }

    // Nodes without room for the pieces are not chosen.
    let full = Identity::generate();
    let address = sat.listen_as(&full, "127.2.0.1").await;
    sat.send_check_in(&full, &address, 10).await.unwrap();
    for _ in 0..5 {
        let segment = sat.begin_segment(&object.stream_id, 0, 4096).await.unwrap();
        assert!(segment
            .limits
            .iter()
            .all(|l| l.limit.as_ref().unwrap().node_id != full.id().to_vec()));
    }
    sat.stop().await;
}

async fn requests_are_validated(backend: Backend) {
    let sat = Satellite::start(backend, |_| {}).await;
    let mut client = sat.metainfo.clone();
    for name in ["ab", "Upper", "bad_name", "192.168.0.1"] {
        let status = client
            .create_bucket(pb::CreateBucketRequest {
                header: sat.header(),
                name: name.into(),
                plain_names: false,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
    }
    sat.create_bucket("bucket").await;
    let status = client
        .create_bucket(pb::CreateBucketRequest {
            header: sat.header(),
            name: "bucket".into(),
            plain_names: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(
        sat.begin_object("missing", b"key")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    for (cipher, block_size) in [(2, 65536), (1, 0), (1, 1), (1, 1 << 30)] {
        let status = client
            .begin_object(pb::BeginObjectRequest {
                header: sat.header(),
                bucket: "bucket".into(),
                encrypted_object_key: b"key".to_vec(),
                encryption: Some(pb::EncryptionParameters { cipher, block_size }),
                expires_at: 0,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{cipher} {block_size}"
        );
    }
    let object = sat.begin_object("bucket", b"key").await.unwrap();
    let status = client
        .make_inline_segment(pb::MakeInlineSegmentRequest {
            header: sat.header(),
            stream_id: object.stream_id.clone(),
            position: 0,
            plain_size: 10,
            encrypted_inline_data: vec![0; 8192],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        sat.begin_segment(&object.stream_id, 0, 4096)
            .await
            .unwrap_err()
            .code(),
        Code::ResourceExhausted
    );
    let status = client
        .get_object(pb::GetObjectRequest {
            header: sat.header(),
            bucket: "bucket".into(),
            encrypted_object_key: b"key".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // A bucket holding only a pending upload is deleted, the upload with it.
    client
        .delete_bucket(pb::DeleteBucketRequest {
            header: sat.header(),
            name: "bucket".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        sat.begin_segment(&object.stream_id, 0, 4096)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    sat.stop().await;
}

async fn abandoned_uploads_are_cleaned_up(backend: Backend) {
    let sat = Satellite::start(backend, |c| {
        c.pending_object_expiration = Duration::from_secs(1);
        c.cleanup_interval = Duration::from_millis(100);
    })
    .await;
    sat.create_bucket("bucket").await;
    let object = sat.begin_object("bucket", b"key").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = sat
            .begin_segment(&object.stream_id, 0, 4096)
            .await
            .unwrap_err();
        if status.code() == Code::NotFound {
            break;
        }
        // Until it is swept, the upload exists and only lacks nodes.
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload was never swept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The bucket is empty again.
    sat.metainfo
        .clone()
        .delete_bucket(pb::DeleteBucketRequest {
            header: sat.header(),
            name: "bucket".into(),
        })
        .await
        .unwrap();
    sat.stop().await;
}

async fn multipart_uploads_are_scoped_and_checked(backend: Backend) {
    let sat = Satellite::start(backend, |_| {}).await;
    let mut client = sat.metainfo.clone();
    sat.create_bucket("bucket").await;
    sat.create_bucket("other").await;
    let begin = |key: &[u8]| pb::BeginObjectRequest {
        header: sat.header(),
        bucket: "bucket".into(),
        encrypted_object_key: key.to_vec(),
        encryption: Some(pb::EncryptionParameters {
            cipher: 1,
            block_size: 65536,
        }),
        multipart: true,
        encrypted_metadata: b"started".to_vec(),
        ..Default::default()
    };
    let upload = client.begin_object(begin(b"k")).await.unwrap().into_inner();
    let stream = upload.stream_id.clone();
    let single = sat.begin_object("bucket", b"single").await.unwrap();
    let commit_part =
        |stream_id: &[u8], part_number, plain_size, info: Vec<u8>| pb::CommitPartRequest {
            header: sat.header(),
            stream_id: stream_id.to_vec(),
            part_number,
            // The inline segment below, committed without a key nonce.
            segment_key_nonces: vec![Vec::new()],
            plain_size,
            encrypted_info: info,
        };

    // A part of one inline segment at part 2's position.
    client
        .make_inline_segment(pb::MakeInlineSegmentRequest {
            header: sat.header(),
            stream_id: stream.clone(),
            position: archipel_proto::multipart::position(2, 0).unwrap(),
            plain_size: 10,
            encrypted_inline_data: vec![7; 26],
            ..Default::default()
        })
        .await
        .unwrap();
    for (request, code) in [
        (commit_part(&stream, 0, 10, vec![1]), Code::InvalidArgument),
        (
            commit_part(&stream, 2, 10, vec![0; 2000]),
            Code::InvalidArgument,
        ),
        (
            commit_part(&stream, 2, 11, vec![1]),
            Code::FailedPrecondition,
        ),
        // Segments that are not the ones named: another upload's.
        (
            pb::CommitPartRequest {
                segment_key_nonces: vec![vec![5; 12]],
                ..commit_part(&stream, 2, 10, vec![1])
            },
            Code::FailedPrecondition,
        ),
        (
            commit_part(&single.stream_id, 1, 0, vec![1]),
            Code::NotFound,
        ),
    ] {
        let status = client.commit_part(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{}", status.message());
    }
    client
        .commit_part(commit_part(&stream, 2, 10, b"tag".to_vec()))
        .await
        .unwrap();
    let listed = client
        .list_parts(pb::ListPartsRequest {
            header: sat.header(),
            stream_id: stream.clone(),
            after: 0,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.object.unwrap().encrypted_metadata, b"started");
    assert_eq!(listed.parts.len(), 1);
    assert_eq!(
        (listed.parts[0].part_number, listed.parts[0].plain_size),
        (2, 10)
    );
    assert_eq!(listed.parts[0].encrypted_info, b"tag");
    assert!(listed.redundancy.is_some() && listed.max_segment_size > 0);

    // Only multipart uploads are listed; cursors stay in their bucket.
    let pending = |bucket: &str, cursor: Vec<u8>| pb::ListPendingObjectsRequest {
        header: sat.header(),
        bucket: bucket.into(),
        cursor,
        limit: 0,
    };
    let uploads = client
        .list_pending_objects(pending("bucket", Vec::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(uploads.objects.len(), 1);
    assert_eq!(uploads.objects[0].encrypted_object_key, b"k");
    for (request, code) in [
        (pending("other", stream.clone()), Code::InvalidArgument),
        (pending("missing", Vec::new()), Code::NotFound),
        (pending("bucket", b"forged".to_vec()), Code::InvalidArgument),
    ] {
        let status = client.list_pending_objects(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{}", status.message());
    }

    // Another project can neither see nor touch the upload.
    let other_key = archipel_satellite::create_project(sat.database.url(), "other")
        .await
        .unwrap();
    let other = Some(pb::RequestHeader { api_key: other_key });
    let status = client
        .list_parts(pb::ListPartsRequest {
            header: other.clone(),
            stream_id: stream.clone(),
            after: 0,
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .abort_object(pb::AbortObjectRequest {
            header: other.clone(),
            stream_id: stream.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .commit_part(pb::CommitPartRequest {
            header: other,
            ..commit_part(&stream, 2, 10, vec![1])
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // Completed with its part: the object is the part's bytes.
    // Parts are named with their info as listed, one each.
    for (infos, code) in [
        (vec![], Code::InvalidArgument),
        (vec![b"old tag".to_vec()], Code::FailedPrecondition),
    ] {
        let status = client
            .commit_object(pb::CommitObjectRequest {
                header: sat.header(),
                stream_id: stream.clone(),
                parts: vec![2],
                part_infos: infos,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{}", status.message());
    }
    let completed = client
        .commit_object(pb::CommitObjectRequest {
            header: sat.header(),
            stream_id: stream.clone(),
            encrypted_metadata: b"done".to_vec(),
            parts: vec![2],
            part_infos: vec![b"tag".to_vec()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .object
        .unwrap();
    assert_eq!((completed.plain_size, completed.segment_count), (10, 1));
    let status = client
        .abort_object(pb::AbortObjectRequest {
            header: sat.header(),
            stream_id: stream,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    // Aborting a single upload deletes it.
    client
        .abort_object(pb::AbortObjectRequest {
            header: sat.header(),
            stream_id: single.stream_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        sat.commit_object(&single.stream_id)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    sat.stop().await;
}

async fn copies_are_scoped_and_checked(backend: Backend) {
    let sat = Satellite::start(backend, |_| {}).await;
    let mut client = sat.metainfo.clone();
    sat.create_bucket("bucket").await;
    let upload = sat.begin_object("bucket", b"src").await.unwrap();
    client
        .make_inline_segment(pb::MakeInlineSegmentRequest {
            header: sat.header(),
            stream_id: upload.stream_id.clone(),
            position: 0,
            plain_size: 10,
            encrypted_key: vec![1; 48],
            encrypted_inline_data: vec![7; 26],
            ..Default::default()
        })
        .await
        .unwrap();
    sat.commit_object(&upload.stream_id).await.unwrap();

    let begin = |header| pb::BeginCopyObjectRequest {
        header,
        bucket: "bucket".into(),
        encrypted_object_key: b"src".to_vec(),
        ..Default::default()
    };
    // No credential, no copy.
    let status = client.begin_copy_object(begin(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let begun = client
        .begin_copy_object(begin(sat.header()))
        .await
        .unwrap()
        .into_inner();
    let source = begun.object.unwrap();
    assert_eq!(begun.segment_keys.len(), 1);
    assert_eq!(begun.segment_keys[0].encrypted_key, vec![1; 48]);
    let finish = |header, keys: Vec<pb::SegmentKey>| pb::FinishCopyObjectRequest {
        header,
        stream_id: source.stream_id.clone(),
        bucket: "bucket".into(),
        encrypted_object_key: b"dst".to_vec(),
        encrypted_metadata: b"copied".to_vec(),
        segment_keys: keys,
        ..Default::default()
    };
    let key = |position, size| pb::SegmentKey {
        position,
        encrypted_key: vec![3; size],
        encrypted_key_nonce: vec![4; 12],
    };

    let other_key = archipel_satellite::create_project(sat.database.url(), "other")
        .await
        .unwrap();
    let other = Some(pb::RequestHeader { api_key: other_key });
    for (request, code) in [
        // Another project's stream id, a forged one, keys that do not match.
        (
            finish(other.clone(), vec![key(0, 48)]),
            Code::InvalidArgument,
        ),
        (
            pb::FinishCopyObjectRequest {
                stream_id: b"forged".to_vec(),
                ..finish(sat.header(), vec![key(0, 48)])
            },
            Code::InvalidArgument,
        ),
        (finish(sat.header(), vec![]), Code::InvalidArgument),
        (
            finish(sat.header(), vec![key(1, 48)]),
            Code::InvalidArgument,
        ),
        (
            finish(sat.header(), vec![key(0, 4096)]),
            Code::InvalidArgument,
        ),
        (
            pb::FinishCopyObjectRequest {
                encrypted_object_key: Vec::new(),
                ..finish(sat.header(), vec![key(0, 48)])
            },
            Code::InvalidArgument,
        ),
        (
            pb::FinishCopyObjectRequest {
                bucket: "missing".into(),
                ..finish(sat.header(), vec![key(0, 48)])
            },
            Code::NotFound,
        ),
    ] {
        let status = client.finish_copy_object(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{}", status.message());
    }
    let status = client.begin_copy_object(begin(other)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let copy = client
        .finish_copy_object(finish(sat.header(), vec![key(0, 48)]))
        .await
        .unwrap()
        .into_inner()
        .object
        .unwrap();
    assert_eq!(copy.encrypted_object_key, b"dst");
    assert_eq!((copy.plain_size, copy.segment_count), (10, 1));
    assert_ne!(copy.stream_id, source.stream_id);
    // The copy reads like any object: its segment with the new key.
    let segment = client
        .download_segment(pb::DownloadSegmentRequest {
            header: sat.header(),
            stream_id: copy.stream_id.clone(),
            position: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(segment.encrypted_key, vec![3; 48]);
    assert_eq!(segment.encrypted_inline_data, vec![7; 26]);
    // Once the source is gone, its stream id copies nothing.
    client
        .delete_object(pb::DeleteObjectRequest {
            header: sat.header(),
            bucket: "bucket".into(),
            encrypted_object_key: b"src".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let status = client
        .finish_copy_object(finish(sat.header(), vec![key(0, 48)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    sat.stop().await;
}

/// BeginObject with its first segment, CommitObject with its last, and
/// PutInlineObject check what they carry as the separate calls do.
async fn folded_requests_are_checked(backend: Backend) {
    let sat = Satellite::start(backend, |_| {}).await;
    let nodes = sat.add_nodes(10).await;
    sat.create_bucket("bkt").await;
    let begin = |key: &[u8], first_segment: i64| pb::BeginObjectRequest {
        header: sat.header(),
        bucket: "bkt".into(),
        encrypted_object_key: key.to_vec(),
        encryption: Some(pb::EncryptionParameters {
            cipher: 1,
            block_size: 65536,
        }),
        first_segment_max_encrypted_size: first_segment,
        ..Default::default()
    };
    let mut client = sat.metainfo.clone();

    // Segment 0 begins with the object and commits with it.
    let object = client
        .begin_object(begin(b"remote", 10_000))
        .await
        .unwrap()
        .into_inner();
    let segment = object.first_segment.unwrap();
    assert_eq!(segment.limits.len(), 10);
    let piece_size = redundancy().piece_size(9000) as i64;
    let commit = |stream_id: &[u8], last: LastSegment| pb::CommitObjectRequest {
        header: sat.header(),
        stream_id: stream_id.to_vec(),
        encrypted_metadata: b"meta".to_vec(),
        last_segment: Some(last),
        ..Default::default()
    };
    let remote = |segment_id: &[u8], pieces| {
        LastSegment::RemoteSegment(pb::CommitSegmentRequest {
            segment_id: segment_id.to_vec(),
            encrypted_key: vec![1; 48],
            encrypted_key_nonce: vec![2; 12],
            plain_size: 8984,
            encrypted_size: 9000,
            pieces,
            ..Default::default()
        })
    };
    // Forged piece hashes fail the commit, which leaves the object pending.
    let forged = segment
        .limits
        .iter()
        .map(|l| piece_upload(l, &nodes[0], piece_size, rand::random()))
        .collect();
    let status = client
        .commit_object(commit(
            &object.stream_id,
            remote(&segment.segment_id, forged),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let pieces = uploads(&nodes, &segment, piece_size, 8);
    let committed = client
        .commit_object(commit(
            &object.stream_id,
            remote(&segment.segment_id, pieces.clone()),
        ))
        .await
        .unwrap()
        .into_inner()
        .object
        .unwrap();
    assert_eq!((committed.plain_size, committed.segment_count), (8984, 1));
    // A segment id of that object does not commit another.
    let other = client
        .begin_object(begin(b"other", 0))
        .await
        .unwrap()
        .into_inner();
    assert!(other.first_segment.is_none());
    let status = client
        .commit_object(commit(
            &other.stream_id,
            remote(&segment.segment_id, pieces),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // A first segment beyond the bound begins nothing, not even the object.
    let status = client
        .begin_object(begin(b"huge", i64::MAX))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // Only "other" is pending.
    let (pending, _) = sat
        .database
        .metabase()
        .await
        .unwrap()
        .delete_pending_before(i64::MAX, i64::MAX, 100)
        .await
        .unwrap();
    assert_eq!(pending, 1);

    // An inline object in one request, read back with its data in one.
    let inline = |key: &[u8], data: Vec<u8>| pb::PutInlineObjectRequest {
        header: sat.header(),
        bucket: "bkt".into(),
        encrypted_object_key: key.to_vec(),
        encryption: Some(pb::EncryptionParameters {
            cipher: 1,
            block_size: 65536,
        }),
        encrypted_key: vec![3; 48],
        encrypted_key_nonce: vec![4; 12],
        plain_size: data.len() as i64 - 16,
        encrypted_inline_data: data,
        encrypted_metadata: b"m".to_vec(),
        ..Default::default()
    };
    let stored = client
        .put_inline_object(inline(b"small", vec![5; 300]))
        .await
        .unwrap()
        .into_inner()
        .object
        .unwrap();
    assert_eq!((stored.plain_size, stored.segment_count), (284, 1));
    let got = client
        .get_object(pb::GetObjectRequest {
            header: sat.header(),
            bucket: "bkt".into(),
            encrypted_object_key: b"small".to_vec(),
            download: true,
            download_offset: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.download.unwrap().encrypted_inline_data, vec![5; 300]);
    for (request, why) in [
        (inline(b"big", vec![5; 4096 + 100]), "over the threshold"),
        (inline(b"", vec![5; 30]), "without a key"),
        (inline(b"nobucket", vec![5; 30]), "into a missing bucket"),
    ] {
        let mut request = request;
        if why == "into a missing bucket" {
            request.bucket = "missing".into();
        }
        let status = client.put_inline_object(request).await.unwrap_err();
        assert_ne!(status.code(), tonic::Code::Ok, "{why}");
        assert_ne!(status.code(), tonic::Code::Internal, "{why}: {status:?}");
    }
    sat.stop().await;
}
