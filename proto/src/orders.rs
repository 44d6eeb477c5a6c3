//! Signed order limits, piece hashes, check-ins, retain filters, trash
//! restore requests, graceful exit requests and receipts; per-node piece ids.
//!
//! A signature always covers the protobuf encoding of the message with its
//! signature field cleared; both sides encode with the same prost code, so the
//! bytes agree.

use prost::Message;

use crate::bloom::BloomFilter;
use crate::identity::{Identity, NodeId, PeerKey};
use crate::pb::{
    CheckInRequest, ExitCompleted, ExitRequest, OrderLimit, PieceAction, PieceHash,
    RestoreTrashRequest, RetainFilter,
};
use crate::{Error, Result};

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A 32-byte piece id.
pub type PieceId = [u8; 32];

/// A fresh random root piece id for a segment.
pub fn new_root_piece_id() -> PieceId {
    rand::random()
}

/// The id under which `node` stores piece number `piece_num` of the segment whose
/// root piece id is `root`. Keyed by the root, so nodes cannot link the pieces
/// of one segment without knowing it.
pub fn derive_piece_id(root: &PieceId, node: &NodeId, piece_num: u32) -> PieceId {
    let mut hasher = blake3::Hasher::new_keyed(root);
    hasher.update(node.as_bytes());
    hasher.update(&piece_num.to_be_bytes());
    *hasher.finalize().as_bytes()
}

pub fn piece_id_from_bytes(bytes: &[u8]) -> Result<PieceId> {
    bytes
        .try_into()
        .map_err(|_| Error::InvalidIdLength(bytes.len()))
}

/// The satellite id and signature fields of a message a satellite signs.
type SatelliteFields<M> = fn(&mut M) -> (&mut Vec<u8>, &mut Vec<u8>);

/// Fills in the satellite id and signature of `message`: the signature covers
/// the encoding with the id filled in and the signature empty.
fn sign_as_satellite<M: Message>(
    satellite: &Identity,
    mut message: M,
    fields: SatelliteFields<M>,
) -> M {
    let (id, signature) = fields(&mut message);
    *id = satellite.id().to_vec();
    signature.clear();
    let signed = satellite.sign(&message.encode_to_vec());
    *fields(&mut message).1 = signed;
    message
}

/// Checks that `message` names `satellite` and carries its signature.
fn verify_satellite_signed<M: Message + Clone>(
    satellite: &PeerKey,
    message: &M,
    fields: SatelliteFields<M>,
) -> Result<()> {
    let mut unsigned = message.clone();
    let (id, signature) = fields(&mut unsigned);
    if id.as_slice() != satellite.id().as_bytes() {
        return Err(Error::UntrustedSatellite(NodeId::from_bytes(id)?));
    }
    let signature = std::mem::take(signature);
    satellite.verify(&unsigned.encode_to_vec(), &signature)
}

/// The public key and signature fields of a message a node signs.
type NodeFields<M> = fn(&mut M) -> (&mut Vec<u8>, &mut Vec<u8>);

/// Fills in the node's public key and signature of `message`: the signature
/// covers the encoding with the key filled in and the signature empty.
fn sign_as_node<M: Message>(node: &Identity, mut message: M, fields: NodeFields<M>) -> M {
    let (key, signature) = fields(&mut message);
    *key = node.public_key().to_vec();
    signature.clear();
    let signed = node.sign(&message.encode_to_vec());
    *fields(&mut message).1 = signed;
    message
}

/// Checks the signature of a message a node signed; returns the node's key.
fn verify_node_signed<M: Message + Clone>(message: &M, fields: NodeFields<M>) -> Result<PeerKey> {
    let mut unsigned = message.clone();
    let (key, signature) = fields(&mut unsigned);
    let key = PeerKey::from_public_key(key)?;
    let signature = std::mem::take(signature);
    key.verify(&unsigned.encode_to_vec(), &signature)?;
    Ok(key)
}

fn check_in_fields(request: &mut CheckInRequest) -> (&mut Vec<u8>, &mut Vec<u8>) {
    (&mut request.node_public_key, &mut request.node_signature)
}

fn exit_request_fields(request: &mut ExitRequest) -> (&mut Vec<u8>, &mut Vec<u8>) {
    (&mut request.node_public_key, &mut request.node_signature)
}

fn exit_completed_fields(receipt: &mut ExitCompleted) -> (&mut Vec<u8>, &mut Vec<u8>) {
    (&mut receipt.satellite_id, &mut receipt.satellite_signature)
}

/// Fills in the node's key and signature of a graceful exit request.
pub fn sign_exit_request(node: &Identity, request: ExitRequest) -> ExitRequest {
    sign_as_node(node, request, exit_request_fields)
}

/// Checks a graceful exit request's signature; returns the node's key.
pub fn verify_exit_request(request: &ExitRequest) -> Result<PeerKey> {
    verify_node_signed(request, exit_request_fields)
}

/// Fills in `satellite_id` and the signature of an exit receipt.
pub fn sign_exit_completed(satellite: &Identity, receipt: ExitCompleted) -> ExitCompleted {
    sign_as_satellite(satellite, receipt, exit_completed_fields)
}

/// Checks that an exit receipt is `satellite`'s, signed, and for `node`.
pub fn verify_exit_completed(
    satellite: &PeerKey,
    node: NodeId,
    receipt: &ExitCompleted,
) -> Result<()> {
    verify_satellite_signed(satellite, receipt, exit_completed_fields)?;
    let named = NodeId::from_bytes(&receipt.node_id)?;
    if named != node {
        return Err(Error::WrongNode {
            expected: node,
            actual: named,
        });
    }
    Ok(())
}

fn order_limit_fields(limit: &mut OrderLimit) -> (&mut Vec<u8>, &mut Vec<u8>) {
    (&mut limit.satellite_id, &mut limit.satellite_signature)
}

fn retain_filter_fields(filter: &mut RetainFilter) -> (&mut Vec<u8>, &mut Vec<u8>) {
    (&mut filter.satellite_id, &mut filter.satellite_signature)
}

fn restore_trash_fields(request: &mut RestoreTrashRequest) -> (&mut Vec<u8>, &mut Vec<u8>) {
    (&mut request.satellite_id, &mut request.satellite_signature)
}

/// Fills in `satellite_id` and the signature of an order limit.
pub fn sign_order_limit(satellite: &Identity, limit: OrderLimit) -> OrderLimit {
    sign_as_satellite(satellite, limit, order_limit_fields)
}

/// Checks the satellite's signature on an order limit.
pub fn verify_order_limit_signature(satellite: &PeerKey, limit: &OrderLimit) -> Result<()> {
    verify_satellite_signed(satellite, limit, order_limit_fields)
}

/// Fills in `satellite_id` and the signature of a retain filter.
pub fn sign_retain_filter(satellite: &Identity, filter: RetainFilter) -> RetainFilter {
    sign_as_satellite(satellite, filter, retain_filter_fields)
}

/// A retain filter for `node` holding `bloom` (of `piece_count` piece ids),
/// signed by `satellite`: pieces created before `created_before` and not in
/// it may be trashed.
pub fn retain_filter(
    satellite: &Identity,
    node: NodeId,
    bloom: BloomFilter,
    piece_count: u64,
    created_at: i64,
    created_before: i64,
) -> RetainFilter {
    sign_retain_filter(
        satellite,
        RetainFilter {
            node_id: node.to_vec(),
            created_at,
            created_before,
            seed: bloom.seed().to_vec(),
            hash_count: bloom.hash_count(),
            piece_count,
            bits: bloom.into_bits(),
            ..RetainFilter::default()
        },
    )
}

/// Checks the satellite's signature on a retain filter.
pub fn verify_retain_filter(satellite: &PeerKey, filter: &RetainFilter) -> Result<()> {
    verify_satellite_signed(satellite, filter, retain_filter_fields)
}

/// Fills in `satellite_id` and the signature of a trash restore request.
pub fn sign_restore_trash(
    satellite: &Identity,
    request: RestoreTrashRequest,
) -> RestoreTrashRequest {
    sign_as_satellite(satellite, request, restore_trash_fields)
}

/// Checks the satellite's signature on a trash restore request.
pub fn verify_restore_trash(satellite: &PeerKey, request: &RestoreTrashRequest) -> Result<()> {
    verify_satellite_signed(satellite, request, restore_trash_fields)
}

/// Everything a storage node checks before honouring an order limit, except the
/// signature (which needs the satellite's key; see [`verify_order_limit_signature`])
/// and replay (which needs the node's memory of used serials).
pub fn check_order_limit_fields(
    limit: &OrderLimit,
    this_node: NodeId,
    allowed: &[PieceAction],
    now: i64,
) -> Result<()> {
    let node = NodeId::from_bytes(&limit.node_id)?;
    if node != this_node {
        return Err(Error::WrongNode {
            expected: this_node,
            actual: node,
        });
    }
    let action = limit.action();
    if !allowed.contains(&action) {
        return Err(Error::WrongAction {
            expected: allowed[0],
            actual: action,
        });
    }
    if limit.order_expiration <= now {
        return Err(Error::OrderExpired);
    }
    if limit.serial_number.len() != 16 {
        return Err(Error::MissingField("serial_number"));
    }
    piece_id_from_bytes(&limit.piece_id)?;
    Ok(())
}

/// A node signs the hash of a piece it stored.
pub fn sign_piece_hash(node: &Identity, mut hash: PieceHash) -> PieceHash {
    hash.node_signature.clear();
    hash.node_signature = node.sign(&hash.encode_to_vec());
    hash
}

pub fn verify_piece_hash(node: &PeerKey, hash: &PieceHash) -> Result<()> {
    let mut unsigned = hash.clone();
    unsigned.node_signature.clear();
    node.verify(&unsigned.encode_to_vec(), &hash.node_signature)
}

pub fn sign_check_in(node: &Identity, request: CheckInRequest) -> CheckInRequest {
    sign_as_node(node, request, check_in_fields)
}

/// Verifies a check-in's signature and returns the node's checked key.
pub fn verify_check_in(request: &CheckInRequest) -> Result<PeerKey> {
    verify_node_signed(request, check_in_fields)
}

/// A fresh random order serial number.
pub fn new_serial() -> Vec<u8> {
    rand::random::<[u8; 16]>().to_vec()
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;

    use super::*;
    use crate::hostile;

    fn limit_for(node: NodeId, action: PieceAction, expires: i64) -> OrderLimit {
        OrderLimit {
            serial_number: new_serial(),
            node_id: node.to_vec(),
            piece_id: vec![7; 32],
            action: action as i32,
            limit: 1000,
            order_expiration: expires,
            ..Default::default()
        }
    }

    #[test]
    fn signed_order_limit_verifies_and_forgery_does_not() {
        let sat = Identity::generate();
        let node = Identity::generate();
        let sat_key = PeerKey::from_public_key(&sat.public_key()).unwrap();
        let limit = sign_order_limit(
            &sat,
            limit_for(node.id(), PieceAction::Put, unix_now() + 60),
        );
        verify_order_limit_signature(&sat_key, &limit).unwrap();
        check_order_limit_fields(&limit, node.id(), &[PieceAction::Put], unix_now()).unwrap();

        let mut forged = limit.clone();
        forged.limit = 1 << 40;
        assert!(matches!(
            verify_order_limit_signature(&sat_key, &forged),
            Err(Error::BadSignature)
        ));

        let other = Identity::generate();
        let self_signed = sign_order_limit(
            &other,
            limit_for(node.id(), PieceAction::Put, unix_now() + 60),
        );
        assert!(matches!(
            verify_order_limit_signature(&sat_key, &self_signed),
            Err(Error::UntrustedSatellite(_))
        ));
    }

    #[test]
    fn order_limit_field_checks() {
        let node = Identity::generate();
        let now = unix_now();
        let expired = limit_for(node.id(), PieceAction::Get, now - 1);
        assert!(matches!(
            check_order_limit_fields(&expired, node.id(), &[PieceAction::Get], now),
            Err(Error::OrderExpired)
        ));
        let wrong_action = limit_for(node.id(), PieceAction::Get, now + 10);
        assert!(matches!(
            check_order_limit_fields(&wrong_action, node.id(), &[PieceAction::Put], now),
            Err(Error::WrongAction { .. })
        ));
        let other = Identity::generate();
        assert!(matches!(
            check_order_limit_fields(&wrong_action, other.id(), &[PieceAction::Get], now),
            Err(Error::WrongNode { .. })
        ));
    }

    #[test]
    fn piece_hash_and_check_in_signatures() {
        let node = Identity::generate();
        let key = PeerKey::from_public_key(&node.public_key()).unwrap();
        let hash = sign_piece_hash(
            &node,
            PieceHash {
                piece_id: vec![1; 32],
                root: vec![2; 32],
                piece_size: 5,
                ..Default::default()
            },
        );
        verify_piece_hash(&key, &hash).unwrap();
        let mut tampered = hash.clone();
        tampered.piece_size = 6;
        assert!(verify_piece_hash(&key, &tampered).is_err());

        let check_in = sign_check_in(
            &node,
            CheckInRequest {
                address: "127.0.0.1:1".into(),
                ..Default::default()
            },
        );
        assert_eq!(verify_check_in(&check_in).unwrap().id(), node.id());
        let mut moved = check_in.clone();
        moved.address = "10.0.0.1:1".into();
        assert!(verify_check_in(&moved).is_err());
    }

    #[test]
    fn derived_piece_ids_differ_per_node_and_piece() {
        let root = new_root_piece_id();
        let a = Identity::generate().id();
        let b = Identity::generate().id();
        assert_ne!(derive_piece_id(&root, &a, 0), derive_piece_id(&root, &b, 0));
        assert_ne!(derive_piece_id(&root, &a, 0), derive_piece_id(&root, &a, 1));
        assert_eq!(derive_piece_id(&root, &a, 3), derive_piece_id(&root, &a, 3));
    }

    /// Fixed identities, so that strategies (which sign) and properties (which
    /// verify), plain functions both, agree on the keys.
    static SATELLITE: LazyLock<Identity> = LazyLock::new(|| fixed_identity(1));
    static NODE: LazyLock<Identity> = LazyLock::new(|| fixed_identity(2));

    fn fixed_identity(seed: u8) -> Identity {
        Identity::from_file_text(&hex::encode([seed; 32])).unwrap()
    }

    const ACTIONS: [PieceAction; 7] = [
        PieceAction::Invalid,
        PieceAction::Put,
        PieceAction::Get,
        PieceAction::GetAudit,
        PieceAction::GetRepair,
        PieceAction::PutRepair,
        PieceAction::Delete,
    ];

    /// `message`, signed by `sign`, with its encoding damaged or replaced.
    fn signed_then_damaged<M: Message + Clone + std::fmt::Debug + 'static>(
        message: impl Strategy<Value = M>,
        sign: fn(M) -> M,
    ) -> impl Strategy<Value = (M, Vec<u8>)> {
        message.prop_map(sign).prop_flat_map(|signed| {
            let bytes = signed.encode_to_vec();
            (Just(signed), hostile::bytes_or_mutated(bytes))
        })
    }

    fn order_limits() -> impl Strategy<Value = (OrderLimit, Vec<u8>)> {
        let limit = (
            hostile::bytes(20),
            any::<bool>(),
            hostile::bytes(40),
            -1i32..8,
            any::<i64>(),
            any::<i64>(),
            prop_oneof![Just(unix_now() + 60), any::<i64>()],
        )
            .prop_map(
                |(serial_number, ours, piece_id, action, limit, piece_exp, order_exp)| OrderLimit {
                    serial_number,
                    node_id: if ours {
                        NODE.id().to_vec()
                    } else {
                        vec![7; 32]
                    },
                    piece_id,
                    action,
                    limit,
                    piece_expiration: piece_exp,
                    order_expiration: order_exp,
                    order_creation: unix_now(),
                    ..Default::default()
                },
            );
        signed_then_damaged(limit, |limit| sign_order_limit(&SATELLITE, limit))
    }

    fn piece_hashes() -> impl Strategy<Value = (PieceHash, Vec<u8>)> {
        let hash = (
            hostile::bytes(40),
            hostile::bytes(40),
            any::<i64>(),
            any::<i64>(),
        )
            .prop_map(|(piece_id, root, piece_size, timestamp)| PieceHash {
                piece_id,
                root,
                piece_size,
                timestamp,
                node_signature: Vec::new(),
            });
        signed_then_damaged(hash, |hash| sign_piece_hash(&NODE, hash))
    }

    fn check_ins() -> impl Strategy<Value = (CheckInRequest, Vec<u8>)> {
        let request = (hostile::text(), any::<i64>(), any::<i64>(), hostile::text()).prop_map(
            |(address, capacity_bytes, free_bytes, version)| CheckInRequest {
                address,
                capacity_bytes,
                free_bytes,
                version,
                timestamp: unix_now(),
                ..Default::default()
            },
        );
        signed_then_damaged(request, |request| sign_check_in(&NODE, request))
    }

    // Protobuf has more than one encoding of a message (fields in any order,
    // repeated, unknown ones), so damaged bytes may still decode to the signed
    // message; they must never decode to another message that verifies.

    /// What a storage node runs on an order limit off the wire.
    fn order_limit_is_checked(
        ((signed, bytes), allowed, now): ((OrderLimit, Vec<u8>), Vec<PieceAction>, i64),
    ) -> Result<(), TestCaseError> {
        let Ok(limit) = OrderLimit::decode(bytes.as_slice()) else {
            return Ok(());
        };
        let satellite = PeerKey::from_public_key(&SATELLITE.public_key()).unwrap();
        let verified = verify_order_limit_signature(&satellite, &limit).is_ok();
        let _ = check_order_limit_fields(&limit, NODE.id(), &allowed, now);
        let _ = NodeId::from_bytes(&limit.satellite_id);
        let _ = piece_id_from_bytes(&limit.piece_id);
        prop_assert!(!verified || limit == signed, "{limit:?} verified");
        Ok(())
    }

    /// What a client and a satellite run on a node's piece hash.
    fn piece_hash_is_checked((signed, bytes): (PieceHash, Vec<u8>)) -> Result<(), TestCaseError> {
        let Ok(hash) = PieceHash::decode(bytes.as_slice()) else {
            return Ok(());
        };
        let node = PeerKey::from_public_key(&NODE.public_key()).unwrap();
        let verified = verify_piece_hash(&node, &hash).is_ok();
        let _ = piece_id_from_bytes(&hash.piece_id);
        prop_assert!(!verified || hash == signed, "{hash:?} verified");
        Ok(())
    }

    /// What a satellite runs on a check-in.
    fn check_in_is_checked(
        (signed, bytes): (CheckInRequest, Vec<u8>),
    ) -> Result<(), TestCaseError> {
        let Ok(request) = CheckInRequest::decode(bytes.as_slice()) else {
            return Ok(());
        };
        if let Ok(key) = verify_check_in(&request) {
            prop_assert_eq!(key.id(), NODE.id());
            prop_assert_eq!(request, signed);
        }
        Ok(())
    }

    crate::hostile_tests! {
        hostile_order_limits_are_refused_or_the_signed_one: (
            order_limits(),
            prop::sample::subsequence(ACTIONS.to_vec(), 1..=3),
            prop_oneof![Just(unix_now()), any::<i64>()],
        ) => order_limit_is_checked;
        hostile_piece_hashes_are_refused_or_the_signed_one: piece_hashes() => piece_hash_is_checked;
        hostile_check_ins_are_refused_or_the_signed_one: check_ins() => check_in_is_checked;
    }
}
