//! Check-in: one background loop per trusted satellite announces this node
//! (address, capacity, free space, the space that satellite's pieces use, a
//! failing disk, version) at start and every `check_in_interval`, and learns
//! the satellite's public key and the node's standing with it from the answer.
//!
//! A satellite that cannot be reached is retried with a backoff that doubles
//! up to the interval; it never stops the node. The satellite's suggested
//! `next_check_in_seconds` is not used: the operator's interval decides.

use std::sync::Arc;
use std::time::Duration;

use archipel_proto::orders;
use archipel_proto::pb::node_client::NodeClient;
use archipel_proto::pb::CheckInRequest;
use archipel_proto::{transport, Identity};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::config::TrustedSatellite;
use crate::error::{Error, Result};
use crate::standing::Standings;
use crate::store::PieceStore;
use crate::trust::SatelliteKeys;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What every check-in loop needs.
pub struct CheckInContext {
    pub identity: Identity,
    pub store: PieceStore,
    pub keys: Arc<SatelliteKeys>,
    pub standings: Arc<Standings>,
    /// host:port announced to satellites.
    pub address: String,
    pub interval: Duration,
}

/// A satellite's `Node` service, ready to dial (lazily, so that building one
/// never waits for the satellite).
pub struct SatelliteContact {
    satellite: TrustedSatellite,
    client: NodeClient<Channel>,
}

impl SatelliteContact {
    pub fn new(satellite: TrustedSatellite) -> Result<Self> {
        let endpoint = transport::endpoint(&satellite.address)
            .map_err(|e| {
                Error::Config(format!(
                    "satellite address {:?} is not usable: {e}",
                    satellite.address
                ))
            })?
            .timeout(REQUEST_TIMEOUT);
        Ok(SatelliteContact {
            client: NodeClient::new(transport::connect_lazy(&endpoint, satellite.id)),
            satellite,
        })
    }

    /// One check-in: announces the node and learns the satellite's key.
    pub async fn check_in(&mut self, context: &CheckInContext) -> Result<()> {
        let usage = context
            .store
            .usage()
            .get(&self.satellite.id)
            .copied()
            .unwrap_or_default();
        let request = orders::sign_check_in(
            &context.identity,
            CheckInRequest {
                address: context.address.clone(),
                capacity_bytes: clamp_i64(context.store.allocated_bytes()),
                free_bytes: clamp_i64(context.store.available_bytes()?),
                used_bytes: clamp_i64(usage.bytes),
                trash_bytes: clamp_i64(usage.trash_bytes),
                disk_problem: context.store.disk_problem().unwrap_or_default(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                timestamp: orders::unix_now(),
                ..Default::default()
            },
        );
        let response = self
            .client
            .check_in(request)
            .await
            .map_err(|status| Error::CheckIn {
                satellite: self.satellite.id,
                status,
            })?
            .into_inner();
        context
            .keys
            .learn(self.satellite.id, &response.satellite_public_key)
            .await?;
        context
            .standings
            .checked_in(self.satellite.id, orders::unix_now(), response.reputation)
            .await
    }

    /// Checks in until `cancel` fires.
    pub async fn run(mut self, context: Arc<CheckInContext>, cancel: CancellationToken) {
        let id = self.satellite.id;
        let mut retry = FIRST_RETRY;
        let mut reachable = true;
        loop {
            // A check-in may wait for timeouts; shutdown should not.
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                outcome = self.check_in(&context) => outcome,
            };
            let wait = match outcome {
                Ok(()) => {
                    if !reachable {
                        tracing::info!(satellite = %id, "reached the satellite again");
                    }
                    tracing::debug!(satellite = %id, "checked in");
                    reachable = true;
                    retry = FIRST_RETRY;
                    context.interval
                }
                Err(e) => {
                    if let Err(record) = context.standings.failed(id, e.to_string()).await {
                        tracing::warn!(satellite = %id, "cannot record a failed check-in: {record}");
                    }
                    // Warn once per outage; the retries are logged quietly.
                    if reachable {
                        tracing::warn!(satellite = %id, address = %self.satellite.address, "check-in failed, will retry: {e}");
                    } else {
                        tracing::debug!(satellite = %id, "check-in failed again: {e}");
                    }
                    reachable = false;
                    let wait = retry.min(context.interval);
                    retry = retry.saturating_mul(2);
                    wait
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use archipel_proto::pb::node_server::{Node, NodeServer};
    use archipel_proto::pb::CheckInResponse;
    use std::sync::Mutex;
    use tokio::net::TcpListener;
    use tonic::{Request, Response, Status};

    /// A real `Node` service answering check-ins with a test satellite's key,
    /// recording what it was told.
    pub struct TestSatellite {
        pub identity: Identity,
        pub check_ins: Arc<Mutex<Vec<CheckInRequest>>>,
    }

    #[tonic::async_trait]
    impl Node for TestSatellite {
        async fn check_in(
            &self,
            request: Request<CheckInRequest>,
        ) -> Result<Response<CheckInResponse>, Status> {
            let request = request.into_inner();
            orders::verify_check_in(&request)
                .map_err(|e| Status::permission_denied(e.to_string()))?;
            self.check_ins.lock().unwrap().push(request);
            Ok(Response::new(CheckInResponse {
                satellite_public_key: self.identity.public_key().to_vec(),
                next_check_in_seconds: 1,
                reputation: Some(archipel_proto::pb::NodeReputation {
                    audit_score: 1.0,
                    joined_at: 1_700_000_000,
                    ..Default::default()
                }),
            }))
        }

        async fn exit(
            &self,
            _request: Request<archipel_proto::pb::ExitRequest>,
        ) -> Result<Response<archipel_proto::pb::ExitResponse>, Status> {
            Err(Status::unimplemented(
                "this test satellite only takes check-ins",
            ))
        }
    }

    /// Serves `satellite` on `listener` until `stop` fires.
    pub fn serve_satellite(
        satellite: TestSatellite,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let tls = transport::ServerTls::new(&satellite.identity).unwrap();
        tokio::spawn(async move {
            transport::server(Duration::from_secs(10))
                .add_service(NodeServer::new(satellite))
                .serve_with_incoming_shutdown(
                    transport::incoming(listener, tls).0,
                    stop.cancelled_owned(),
                )
                .await
                .unwrap();
        })
    }

    #[tokio::test]
    async fn a_satellite_down_at_start_is_retried_until_it_answers() {
        let dir = tempfile::tempdir().unwrap();
        let satellite = Identity::generate();
        // Take a free port, then leave it closed for a while.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let trusted = TrustedSatellite {
            id: satellite.id(),
            address: port.to_string(),
        };
        let keys = Arc::new(
            SatelliteKeys::load(dir.path(), vec![trusted.clone()])
                .await
                .unwrap(),
        );
        let store = PieceStore::open(dir.path().to_path_buf(), 5_000_000)
            .await
            .unwrap();
        let standings = Arc::new(Standings::load(store.clone(), &[trusted.id]).await.unwrap());
        let context = Arc::new(CheckInContext {
            identity: Identity::generate(),
            store,
            keys: keys.clone(),
            standings: standings.clone(),
            address: "127.0.0.1:4444".into(),
            interval: Duration::from_millis(500),
        });
        let cancel = CancellationToken::new();
        let contact = SatelliteContact::new(trusted).unwrap();
        let node_id = context.identity.id();
        let looping = tokio::spawn(contact.run(context, cancel.clone()));

        // The satellite stays down for a few retries.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let check_ins = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let server = serve_satellite(
            TestSatellite {
                identity: satellite.clone(),
                check_ins: check_ins.clone(),
            },
            TcpListener::bind(port).await.unwrap(),
            stop.clone(),
        );
        let key = keys
            .key(satellite.id(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(key.public_key(), satellite.public_key());
        let first = check_ins.lock().unwrap()[0].clone();
        assert_eq!(orders::verify_check_in(&first).unwrap().id(), node_id);
        assert_eq!(first.address, "127.0.0.1:4444");
        assert_eq!(first.capacity_bytes, 5_000_000);
        assert!(first.free_bytes > 0 && first.free_bytes <= 5_000_000);
        assert_eq!(first.disk_problem, "");

        // Later check-ins keep coming at the interval.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while check_ins.lock().unwrap().len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no second check-in");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The first check-in was recorded before the second was sent.
        let standing = standings.get(&satellite.id());
        assert!(standing.last_contact.is_some(), "{standing:?}");
        assert_eq!(
            standing.reputation.and_then(|r| r.joined_at),
            Some(1_700_000_000)
        );

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), looping)
            .await
            .unwrap()
            .unwrap();
        stop.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_impostor_satellite_is_refused_and_its_key_not_learned() {
        let dir = tempfile::tempdir().unwrap();
        let configured = Identity::generate();
        let impostor = Identity::generate();
        let impostor_id = impostor.id();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let trusted = TrustedSatellite {
            id: configured.id(),
            address: listener.local_addr().unwrap().to_string(),
        };
        let stop = CancellationToken::new();
        let server = serve_satellite(
            TestSatellite {
                identity: impostor,
                check_ins: Arc::default(),
            },
            listener,
            stop.clone(),
        );
        let keys = Arc::new(
            SatelliteKeys::load(dir.path(), vec![trusted.clone()])
                .await
                .unwrap(),
        );
        let store = PieceStore::open(dir.path().to_path_buf(), 5_000_000)
            .await
            .unwrap();
        let context = CheckInContext {
            identity: Identity::generate(),
            standings: Arc::new(Standings::load(store.clone(), &[trusted.id]).await.unwrap()),
            store,
            keys: keys.clone(),
            address: "127.0.0.1:4444".into(),
            interval: Duration::from_secs(1),
        };
        let mut contact = SatelliteContact::new(trusted).unwrap();
        // TLS refuses the impostor before a check-in is sent.
        let error = contact.check_in(&context).await.unwrap_err();
        assert!(matches!(error, Error::CheckIn { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains(&configured.id().to_string()), "{text}");
        assert!(text.contains(&impostor_id.to_string()), "{text}");
        assert!(keys.key(configured.id(), Duration::ZERO).await.is_err());
        stop.cancel();
        server.await.unwrap();
    }
}
