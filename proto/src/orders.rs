//! Signed order limits, signed piece hashes, signed check-ins and per-node piece ids.
//!
//! A signature always covers the protobuf encoding of the message with its
//! signature field cleared; both sides encode with the same prost code, so the
//! bytes agree.

use prost::Message;

use crate::identity::{Identity, NodeId, PeerKey};
use crate::pb::{CheckInRequest, OrderLimit, PieceAction, PieceHash};
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

/// Fills in `satellite_id` and the signature of an order limit.
pub fn sign_order_limit(satellite: &Identity, mut limit: OrderLimit) -> OrderLimit {
    limit.satellite_id = satellite.id().to_vec();
    limit.satellite_signature.clear();
    let signature = satellite.sign(&limit.encode_to_vec());
    limit.satellite_signature = signature;
    limit
}

/// Checks the satellite's signature on an order limit.
pub fn verify_order_limit_signature(satellite: &PeerKey, limit: &OrderLimit) -> Result<()> {
    if limit.satellite_id != satellite.id().as_bytes() {
        return Err(Error::UntrustedSatellite(NodeId::from_bytes(
            &limit.satellite_id,
        )?));
    }
    let mut unsigned = limit.clone();
    unsigned.satellite_signature.clear();
    satellite.verify(&unsigned.encode_to_vec(), &limit.satellite_signature)
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

pub fn sign_check_in(node: &Identity, mut request: CheckInRequest) -> CheckInRequest {
    request.node_public_key = node.public_key().to_vec();
    request.node_signature.clear();
    request.node_signature = node.sign(&request.encode_to_vec());
    request
}

/// Verifies a check-in's signature and returns the node's checked key.
pub fn verify_check_in(request: &CheckInRequest) -> Result<PeerKey> {
    let key = PeerKey::from_public_key(&request.node_public_key)?;
    let mut unsigned = request.clone();
    unsigned.node_signature.clear();
    key.verify(&unsigned.encode_to_vec(), &request.node_signature)?;
    Ok(key)
}

/// A fresh random order serial number.
pub fn new_serial() -> Vec<u8> {
    rand::random::<[u8; 16]>().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
