//! The gRPC services: `Node` (storage node check-ins) and `Metainfo` (buckets,
//! objects, segments and the order limits that authorize piece transfers).
//! Every metainfo call is authenticated by its API key, scoped to the key's
//! project and checked against the key's caveats ([`crate::permission`]);
//! stream and segment ids are signed tokens (see [`crate::tokens`]).
//! Segment infos carry their healthy piece count by [`crate::health`]'s rules;
//! pieces clients report bad are audited promptly ([`crate::audit`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use archipel_proto::macaroon::{ApiKey, Op};
use archipel_proto::orders::{
    derive_piece_id, new_root_piece_id, unix_now, verify_check_in, verify_exit_request,
    verify_piece_hash,
};
use archipel_proto::pb::commit_object_request::LastSegment;
use archipel_proto::pb::{self, metainfo_server::Metainfo, node_server::Node, PieceAction};
use archipel_proto::version::VersionId;
use archipel_proto::{Identity, NodeId, PeerKey, Redundancy};
use tonic::{Request, Response, Status};

use crate::audit::{AuditRequests, PieceRef};
use crate::deletes::PieceDeleter;
use crate::exit::GracefulExit;
use crate::health::{self, NetworkView};
use crate::metabase::{
    self, BucketAccessUpdate, CannedAcl, Credential, DefaultRetention, ListEntry, Listing,
    ObjectCommit, ObjectLock, Piece, Precondition, Project, PublicAccessBlock, Retention,
    RetentionMode, RetentionPeriod, Segment, VersionLock, VersionRef, Versioning,
};
use crate::metrics::{self, Metrics};
use crate::orders::OrderSigner;
use crate::permission::Scope;
use crate::tokens::{self, SegmentToken, StreamToken};
use crate::{overlay, size_i64, Config, Error, Metabase, Result};

/// Every operation a caveat can allow.
const ALL_OPS: [Op; 4] = [Op::Read, Op::Write, Op::List, Op::Delete];
/// Check-ins whose clock is further off than this are refused (replay guard).
const CHECK_IN_CLOCK_SKEW: i64 = 600;
/// Encrypted inline data may exceed the threshold by this much (AEAD tag and nonce).
const INLINE_OVERHEAD: u64 = 64;
/// The most bytes a client may keep sealed with a multipart upload's part.
const MAX_PART_INFO: usize = 1024;
/// The most bytes of a wrapped segment key (or its nonce) a copy may bring.
const MAX_WRAPPED_KEY: usize = 256;
/// The most bytes of sealed metadata an update in place may bring (S3 keeps
/// user metadata to 2 KiB and tags to 10 small pairs; sealing adds little).
const MAX_UPDATED_METADATA: usize = 64 << 10;

/// What the services share.
pub struct State {
    pub config: Config,
    pub identity: Identity,
    key: PeerKey,
    pub metabase: Metabase,
    deleter: PieceDeleter,
    orders: OrderSigner,
    /// Where prompt audits are requested (`None` when audits are disabled).
    pub audit_requests: Option<AuditRequests>,
    pub metrics: Arc<Metrics>,
    exits: GracefulExit,
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn bucket_pb(bucket: metabase::Bucket) -> pb::Bucket {
    pb::Bucket {
        name: bucket.name,
        created_at: bucket.created_at,
        plain_names: bucket.plain_names,
        versioning: versioning_pb(bucket.versioning).into(),
        object_lock: Some(object_lock_pb(bucket.object_lock)),
        tags: bucket
            .tags
            .into_iter()
            .map(|(key, value)| pb::BucketTag { key, value })
            .collect(),
        acl: canned_acl_pb(bucket.access.acl).into(),
        public_access_block: bucket
            .access
            .public_access_block
            .map(public_access_block_pb),
        cors: bucket.access.cors,
    }
}

fn canned_acl_pb(acl: CannedAcl) -> pb::CannedAcl {
    match acl {
        CannedAcl::Private => pb::CannedAcl::Private,
        CannedAcl::PublicRead => pb::CannedAcl::PublicRead,
        CannedAcl::PublicReadWrite => pb::CannedAcl::PublicReadWrite,
        CannedAcl::AuthenticatedRead => pb::CannedAcl::AuthenticatedRead,
    }
}

fn canned_acl_from_pb(acl: pb::CannedAcl) -> CannedAcl {
    match acl {
        pb::CannedAcl::Private => CannedAcl::Private,
        pb::CannedAcl::PublicRead => CannedAcl::PublicRead,
        pb::CannedAcl::PublicReadWrite => CannedAcl::PublicReadWrite,
        pb::CannedAcl::AuthenticatedRead => CannedAcl::AuthenticatedRead,
    }
}

fn public_access_block_pb(block: PublicAccessBlock) -> pb::PublicAccessBlock {
    pb::PublicAccessBlock {
        block_public_acls: block.block_public_acls,
        ignore_public_acls: block.ignore_public_acls,
        block_public_policy: block.block_public_policy,
        restrict_public_buckets: block.restrict_public_buckets,
    }
}

fn public_access_block_from_pb(block: pb::PublicAccessBlock) -> PublicAccessBlock {
    PublicAccessBlock {
        block_public_acls: block.block_public_acls,
        ignore_public_acls: block.ignore_public_acls,
        block_public_policy: block.block_public_policy,
        restrict_public_buckets: block.restrict_public_buckets,
    }
}

fn object_lock_pb(lock: ObjectLock) -> pb::BucketObjectLock {
    let (days, years) = match lock.default_retention.map(|d| d.period) {
        None => (0, 0),
        Some(RetentionPeriod::Days(days)) => (days, 0),
        Some(RetentionPeriod::Years(years)) => (0, years),
    };
    pb::BucketObjectLock {
        enabled: lock.enabled,
        default_mode: retention_mode_pb(lock.default_retention.map(|d| d.mode)).into(),
        default_days: days,
        default_years: years,
    }
}

/// A bucket's Object Lock as a request sets it.
fn object_lock_of(lock: &pb::BucketObjectLock) -> Result<ObjectLock> {
    let period = match (lock.default_days, lock.default_years) {
        (0, 0) => None,
        (days, 0) => Some(RetentionPeriod::Days(days)),
        (0, years) => Some(RetentionPeriod::Years(years)),
        _ => {
            return Err(Error::InvalidArgument(
                "a default retention is in days or in years, not both".into(),
            ))
        }
    };
    let default_retention = match (retention_mode_of(lock.default_mode)?, period) {
        (Some(mode), Some(period)) => Some(DefaultRetention { mode, period }),
        (None, None) => None,
        _ => {
            return Err(Error::InvalidArgument(
                "a default retention needs both a mode and a period".into(),
            ))
        }
    };
    Ok(ObjectLock {
        enabled: lock.enabled,
        default_retention,
    })
}

fn retention_mode_pb(mode: Option<RetentionMode>) -> pb::RetentionMode {
    match mode {
        None => pb::RetentionMode::None,
        Some(RetentionMode::Governance) => pb::RetentionMode::Governance,
        Some(RetentionMode::Compliance) => pb::RetentionMode::Compliance,
    }
}

fn retention_mode_of(mode: i32) -> Result<Option<RetentionMode>> {
    match pb::RetentionMode::try_from(mode) {
        Ok(pb::RetentionMode::None) => Ok(None),
        Ok(pb::RetentionMode::Governance) => Ok(Some(RetentionMode::Governance)),
        Ok(pb::RetentionMode::Compliance) => Ok(Some(RetentionMode::Compliance)),
        Err(_) => Err(Error::InvalidArgument(format!(
            "unknown retention mode {mode}"
        ))),
    }
}

/// A retention as a request names it (absent, or with no mode: none); a
/// new one must end in the future.
fn retention_of(retention: Option<&pb::Retention>, now: i64) -> Result<Option<Retention>> {
    let Some(retention) = retention else {
        return Ok(None);
    };
    let Some(mode) = retention_mode_of(retention.mode)? else {
        return Ok(None);
    };
    if retention.retain_until <= now {
        return Err(Error::InvalidArgument(
            "the retain-until date must be in the future".into(),
        ));
    }
    Ok(Some(Retention {
        mode,
        until: retention.retain_until,
    }))
}

/// The Object Lock a new version asks for.
fn version_lock_of(lock: Option<&pb::VersionLock>, now: i64) -> Result<VersionLock> {
    Ok(VersionLock {
        retention: retention_of(lock.and_then(|l| l.retention.as_ref()), now)?,
        legal_hold: lock.is_some_and(|l| l.legal_hold),
    })
}

fn version_lock_pb(lock: VersionLock) -> pb::VersionLock {
    pb::VersionLock {
        retention: lock.retention.map(|r| pb::Retention {
            mode: retention_mode_pb(Some(r.mode)).into(),
            retain_until: r.until,
        }),
        legal_hold: lock.legal_hold,
    }
}

fn versioning_pb(versioning: Versioning) -> pb::BucketVersioning {
    match versioning {
        Versioning::Unversioned => pb::BucketVersioning::Unversioned,
        Versioning::Enabled => pb::BucketVersioning::Enabled,
        Versioning::Suspended => pb::BucketVersioning::Suspended,
    }
}

/// The version a request names: its key's current one when it names none.
fn version_ref(selector: Option<&pb::VersionSelector>) -> Result<VersionRef> {
    match selector {
        Some(s) if s.null_version && !s.version_id.is_empty() => Err(Error::InvalidArgument(
            "a request names a version id or the null version, not both".into(),
        )),
        Some(s) if s.null_version => Ok(VersionRef::Null),
        Some(s) if !s.version_id.is_empty() => {
            Ok(VersionRef::Exact(VersionId::from_bytes(&s.version_id)?))
        }
        _ => Ok(VersionRef::Latest),
    }
}

/// The condition a write or delete carries, if any.
fn precondition(condition: Option<&pb::Precondition>) -> Result<Option<Precondition>> {
    match condition {
        None => Ok(None),
        Some(c) if c.absent && !c.current_version.is_empty() => Err(Error::InvalidArgument(
            "a precondition is on absence or on a version, not both".into(),
        )),
        Some(c) if c.absent => Ok(Some(Precondition::Absent)),
        Some(c) if !c.current_version.is_empty() => Ok(Some(Precondition::Current(
            VersionId::from_bytes(&c.current_version)?,
        ))),
        Some(_) => Ok(None),
    }
}

/// Checks a bucket name against the S3 rules.
pub fn validate_bucket_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "bucket name {name:?} {why}"
        )))
    };
    if !(3..=63).contains(&name.len()) {
        return bad("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("may only hold lowercase letters, digits, '.' and '-'");
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(name.as_bytes()[0]) || !edge(name.as_bytes()[name.len() - 1]) {
        return bad("must begin and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return bad("must not have adjacent dots or a dot next to a dash");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not look like an IP address");
    }
    Ok(())
}

fn redundancy_text(r: &Redundancy) -> String {
    format!(
        "{}/{}/{}/{}/{}",
        r.required, r.repair, r.success, r.total, r.share_size
    )
}

/// The parts of an inline segment a request brings.
struct InlineSegment {
    encrypted_key: Vec<u8>,
    encrypted_key_nonce: Vec<u8>,
    plain_size: i64,
    data: Vec<u8>,
}

impl State {
    pub fn new(
        config: Config,
        identity: Identity,
        metabase: Metabase,
        deleter: PieceDeleter,
        metrics: Arc<Metrics>,
    ) -> Self {
        // The identity's own public key always derives its id.
        let key = PeerKey::for_id(identity.id(), &identity.public_key())
            .unwrap_or_else(|_| unreachable!("an identity's key matches its id"));
        let orders = OrderSigner::new(identity.clone(), config.order_expiration);
        State {
            exits: GracefulExit::new(
                config.clone(),
                identity.clone(),
                key.clone(),
                metabase.clone(),
                orders.clone(),
                deleter.clone(),
            ),
            orders,
            config,
            identity,
            key,
            metabase,
            deleter,
            audit_requests: None,
            metrics,
        }
    }

    async fn authenticate(&self, header: Option<&pb::RequestHeader>) -> Result<Credential> {
        let key = header.map(|h| h.api_key.as_str()).unwrap_or_default();
        if key.is_empty() {
            return Err(Error::Unauthenticated);
        }
        self.metabase.authenticate(key).await
    }

    /// The caller's credential, checked for `op` on `scope`.
    async fn authorize(
        &self,
        header: Option<&pb::RequestHeader>,
        op: Op,
        scope: Scope<'_>,
    ) -> Result<Credential> {
        let credential = self.authenticate(header).await?;
        credential.check(op, scope, unix_now())?;
        Ok(credential)
    }

    /// The caller's project, checked for `op` on the object stored as `key`.
    async fn authorize_object(
        &self,
        header: Option<&pb::RequestHeader>,
        op: Op,
        bucket: &str,
        key: &[u8],
    ) -> Result<Project> {
        let credential = self
            .authorize(header, op, Scope::Object(bucket, key))
            .await?;
        Ok(credential.project)
    }

    /// The caller's credential, checked for `op` on the object stored as
    /// `key`, and for bypassing governance retention there if `bypass`.
    async fn authorize_bypass(
        &self,
        header: Option<&pb::RequestHeader>,
        op: Op,
        (bucket, key): (&str, &[u8]),
        bypass: bool,
    ) -> Result<Credential> {
        let scope = Scope::Object(bucket, key);
        let credential = self.authorize(header, op, scope).await?;
        if bypass {
            credential.check(Op::BypassGovernance, scope, unix_now())?;
        }
        Ok(credential)
    }

    /// The caller's credential, checked for the first of `ops` it allows on
    /// `scope` (an error for the first if none).
    async fn authorize_any(
        &self,
        header: Option<&pb::RequestHeader>,
        ops: &[Op],
        scope: Scope<'_>,
    ) -> Result<Credential> {
        let credential = self.authenticate(header).await?;
        let now = unix_now();
        let mut first_refusal = None;
        for &op in ops {
            match credential.check(op, scope, now) {
                Ok(()) => return Ok(credential),
                Err(e) => {
                    first_refusal.get_or_insert(e);
                }
            }
        }
        Err(first_refusal.unwrap_or(Error::PermissionDenied("no operation was named".into())))
    }

    /// The caller's credential and the token of `stream_id`, checked for
    /// `op` on the stream's object.
    async fn authorize_stream(
        &self,
        header: Option<&pb::RequestHeader>,
        stream_id: &[u8],
        op: Op,
    ) -> Result<(Credential, StreamToken)> {
        let credential = self.authenticate(header).await?;
        let token = self.open_stream(&credential.project, stream_id)?;
        credential.check(
            op,
            Scope::Object(&token.bucket, &token.object_key),
            unix_now(),
        )?;
        Ok((credential, token))
    }

    /// Whether the caller may replace a committed object at `bucket`/`key`:
    /// only a key that may delete it.
    fn may_replace(credential: &Credential, bucket: &str, key: &[u8]) -> bool {
        credential
            .check(Op::Delete, Scope::Object(bucket, key), unix_now())
            .is_ok()
    }

    fn open_stream(&self, project: &Project, stream_id: &[u8]) -> Result<StreamToken> {
        let token = tokens::open_stream(&self.key, stream_id)?;
        if token.project_id != project.id {
            return Err(Error::InvalidArgument(
                "the stream id belongs to another project".into(),
            ));
        }
        Ok(token)
    }

    /// A new pending object of `project` with a fresh stream id, its
    /// parameters checked.
    fn new_object(
        &self,
        project: &Project,
        bucket: String,
        encrypted_object_key: Vec<u8>,
        encryption: Option<pb::EncryptionParameters>,
        expires_at: i64,
    ) -> Result<metabase::Object> {
        if encrypted_object_key.is_empty() {
            return Err(Error::InvalidArgument("an object needs a key".into()));
        }
        let now = unix_now();
        if expires_at != 0 && expires_at <= now {
            return Err(Error::InvalidArgument(
                "the expiration is in the past".into(),
            ));
        }
        let encryption = encryption.unwrap_or_default();
        if encryption.cipher != 1 || !(1024..=1 << 20).contains(&encryption.block_size) {
            return Err(Error::InvalidArgument(format!(
                "unsupported encryption: cipher {} with {}-byte blocks (AES-256-GCM = 1, blocks of 1 KiB to 1 MiB)",
                encryption.cipher, encryption.block_size
            )));
        }
        let stream: [u8; 16] = rand::random();
        Ok(metabase::Object::pending(
            stream.to_vec(),
            project.id.clone(),
            bucket,
            encrypted_object_key,
            now,
            expires_at,
            encryption.cipher,
            encryption.block_size,
        ))
    }

    fn stream_id_of(&self, object: &metabase::Object) -> Vec<u8> {
        tokens::seal_stream(
            &self.identity,
            &StreamToken {
                project_id: object.project_id.clone(),
                bucket: object.bucket.clone(),
                object_key: object.object_key.clone(),
                stream: object.stream_id.clone(),
                created_at: object.created_at,
                expires_at: object.expires_at,
                cipher: u32::try_from(object.cipher).unwrap_or_default(),
                block_size: u32::try_from(object.block_size).unwrap_or_default(),
            },
        )
    }

    /// The answer to a commit of `object`.
    fn committed_pb(&self, object: &metabase::Object) -> Result<pb::CommitObjectResponse> {
        Ok(pb::CommitObjectResponse {
            object: Some(self.object_pb(object)),
            versioning: versioning_pb(object.written_with()?).into(),
        })
    }

    fn object_pb(&self, object: &metabase::Object) -> pb::Object {
        pb::Object {
            stream_id: self.stream_id_of(object),
            ..State::listed_object_pb(object)
        }
    }

    /// An object as a listing shows it: without a stream id, whose signature
    /// would cost more than all the rest of a listing (and that nobody
    /// listing needs; it comes with the object when it is read).
    fn listed_object_pb(object: &metabase::Object) -> pb::Object {
        pb::Object {
            bucket: object.bucket.clone(),
            encrypted_object_key: object.object_key.clone(),
            created_at: object.created_at,
            expires_at: object.expires_at,
            plain_size: object.plain_size,
            segment_count: u32::try_from(object.segment_count).unwrap_or_default(),
            encryption: Some(pb::EncryptionParameters {
                cipher: u32::try_from(object.cipher).unwrap_or_default(),
                block_size: u32::try_from(object.block_size).unwrap_or_default(),
            }),
            encrypted_metadata: object.encrypted_metadata.clone(),
            encrypted_metadata_key: object.encrypted_metadata_key.clone(),
            encrypted_metadata_nonce: object.encrypted_metadata_nonce.clone(),
            lock: object
                .lock()
                .ok()
                .filter(VersionLock::is_set)
                .map(version_lock_pb),
            stream_id: Vec::new(),
            version_id: object
                .version_id()
                .map(|id| id.to_bytes())
                .unwrap_or_default(),
            null_version: object.is_null_version(),
            delete_marker: object.delete_marker != 0,
        }
    }

    async fn begin_segment(&self, r: pb::BeginSegmentRequest) -> Result<pb::BeginSegmentResponse> {
        let (credential, stream) = self
            .authorize_stream(r.header.as_ref(), &r.stream_id, Op::Write)
            .await?;
        let project = credential.project;
        let object = self
            .metabase
            .object_by_stream(&project.id, &stream.stream)
            .await?;
        if object.committed != 0 {
            return Err(Error::FailedPrecondition(
                "the object is already committed".into(),
            ));
        }
        self.segment_limits(&project, &object, r.position, r.max_encrypted_size)
            .await
    }

    /// Chooses nodes for segment `position` of the pending `object` and signs
    /// an order limit for each: the answer to BeginSegment.
    async fn segment_limits(
        &self,
        project: &Project,
        object: &metabase::Object,
        position: u32,
        max_encrypted_size: i64,
    ) -> Result<pb::BeginSegmentResponse> {
        let max_size = u64::try_from(max_encrypted_size).unwrap_or(0);
        let bound = self.config.max_segment_size.saturating_mul(2) + (1 << 20);
        if max_size == 0 || max_size > bound {
            return Err(Error::InvalidArgument(format!(
                "max_encrypted_size must be between 1 and {bound} bytes"
            )));
        }
        let redundancy = self.config.redundancy;
        let piece_size = redundancy.piece_size(max_size);
        let now = unix_now();
        let reputation = &self.config.reputation;
        let (vetted, unvetted) =
            overlay::eligible_nodes(&self.metabase, &self.config, piece_size, now).await?;
        let chosen = overlay::select_vetted(
            &mut rand::thread_rng(),
            vetted,
            unvetted,
            redundancy.total.into(),
            reputation.unvetted_share,
            self.config.distinct_subnets,
        );
        if chosen.len() < usize::from(redundancy.success) {
            return Err(Error::NotEnoughNodes {
                need: usize::from(redundancy.success),
                have: chosen.len(),
            });
        }
        let root = new_root_piece_id();
        let mut limits = Vec::with_capacity(chosen.len());
        let mut token = SegmentToken {
            project_id: project.id.clone(),
            stream: object.stream_id.clone(),
            bucket: object.bucket.clone(),
            object_key: object.object_key.clone(),
            position,
            root_piece_id: root.to_vec(),
            redundancy: redundancy_text(&redundancy),
            max_piece_size: size_i64(piece_size),
            created_at: now,
            ..Default::default()
        };
        for (num, node) in chosen.into_iter().enumerate() {
            let num = u32::try_from(num).unwrap_or(u32::MAX);
            let id = NodeId::from_bytes(&node.id)
                .map_err(|_| Error::Corrupt("a node id is not 32 bytes".into()))?;
            let limit = self.orders.sign(
                id,
                &derive_piece_id(&root, &id, num),
                PieceAction::Put,
                size_i64(piece_size),
                object.expires_at,
            );
            limits.push(pb::AddressedOrderLimit {
                limit: Some(limit),
                node_address: node.address,
                node_public_key: node.public_key,
                piece_num: num,
            });
            token.piece_nums.push(num);
            token.node_ids.push(id.to_vec());
        }
        Ok(pb::BeginSegmentResponse {
            segment_id: tokens::seal_segment(&self.identity, &token),
            limits,
            redundancy: Some(redundancy.to_pb()),
        })
    }

    async fn commit_segment(&self, r: pb::CommitSegmentRequest) -> Result<()> {
        let credential = self.authenticate(r.header.as_ref()).await?;
        let segment = self.remote_segment(&credential, r).await?;
        let replaced = self
            .metabase
            .put_segment(&credential.project.id, &segment)
            .await?;
        self.deleter.removed(replaced.as_slice());
        Ok(())
    }

    /// The segment a CommitSegment request describes, checked against its
    /// signed segment id, the caller's right to write its object and the
    /// nodes' signatures.
    async fn remote_segment(
        &self,
        credential: &Credential,
        r: pb::CommitSegmentRequest,
    ) -> Result<Segment> {
        let token = tokens::open_segment(&self.key, &r.segment_id)?;
        if token.project_id != credential.project.id {
            return Err(Error::InvalidArgument(
                "the segment id belongs to another project".into(),
            ));
        }
        credential.check(
            Op::Write,
            Scope::Object(&token.bucket, &token.object_key),
            unix_now(),
        )?;
        // Garbage collection counts on no segment being committed after its
        // grace: its pieces may be missing from a retain filter by then.
        if self
            .config
            .gc
            .too_old_to_commit(token.created_at, unix_now())
        {
            return Err(Error::FailedPrecondition(
                "the segment was begun too long ago to be committed; upload it again".into(),
            ));
        }
        let redundancy: Redundancy = token
            .redundancy
            .parse()
            .map_err(|e| Error::Corrupt(format!("segment id redundancy: {e}")))?;
        let encrypted_size = u64::try_from(r.encrypted_size).unwrap_or(0);
        if encrypted_size == 0 || r.plain_size < 0 {
            return Err(Error::InvalidArgument(
                "a segment needs a positive encrypted size and a non-negative plain size".into(),
            ));
        }
        if r.plain_size > size_i64(self.config.max_segment_size) || r.plain_size > r.encrypted_size
        {
            return Err(Error::InvalidArgument(format!(
                "a segment's plain size ({}) must not exceed the maximum segment size ({}) or its encrypted size ({})",
                r.plain_size, self.config.max_segment_size, r.encrypted_size
            )));
        }
        let piece_size = size_i64(redundancy.piece_size(encrypted_size));
        if piece_size > token.max_piece_size {
            return Err(Error::InvalidArgument(format!(
                "pieces of {piece_size} bytes exceed the {} bytes the order limits allow",
                token.max_piece_size
            )));
        }
        let root: [u8; 32] = token
            .root_piece_id
            .as_slice()
            .try_into()
            .map_err(|_| Error::Corrupt("segment id root piece id".into()))?;
        let assigned: HashMap<u32, &[u8]> = token
            .piece_nums
            .iter()
            .copied()
            .zip(token.node_ids.iter().map(Vec::as_slice))
            .collect();

        let node_ids: Vec<NodeId> = r
            .pieces
            .iter()
            .filter_map(|p| NodeId::from_bytes(&p.node_id).ok())
            .collect();
        let keys: HashMap<Vec<u8>, Vec<u8>> = self
            .metabase
            .nodes(&node_ids)
            .await?
            .into_iter()
            .map(|n| (n.id, n.public_key))
            .collect();

        let mut seen = HashSet::new();
        let mut pieces = Vec::with_capacity(r.pieces.len());
        for upload in &r.pieces {
            let num = upload.piece_num;
            let bad = |why: String| Err(Error::InvalidArgument(format!("piece {num}: {why}")));
            if !seen.insert(num) {
                return bad("committed twice".into());
            }
            match assigned.get(&num) {
                Some(node) if *node == upload.node_id.as_slice() => {}
                Some(_) => return bad("its order limit was for another node".into()),
                None => return bad("no order limit was issued for it".into()),
            }
            let node = NodeId::from_bytes(&upload.node_id)?;
            let Some(public_key) = keys.get(&upload.node_id) else {
                return bad(format!("node {node} is not known"));
            };
            let key = PeerKey::for_id(node, public_key)?;
            let Some(hash) = &upload.hash else {
                return bad("its piece hash is missing".into());
            };
            if verify_piece_hash(&key, hash).is_err() {
                return bad(format!("the piece hash is not signed by node {node}"));
            }
            if hash.piece_id != derive_piece_id(&root, &node, num) {
                return bad("the piece hash is for another piece".into());
            }
            if hash.piece_size != piece_size {
                return bad(format!(
                    "the node stored {} bytes, the segment needs {piece_size}",
                    hash.piece_size
                ));
            }
            let Ok(piece_root) = <[u8; 32]>::try_from(hash.root.as_slice()) else {
                return bad("the piece hash root is not 32 bytes".into());
            };
            pieces.push(Piece {
                num: u16::try_from(num)
                    .map_err(|_| Error::InvalidArgument(format!("piece {num}")))?,
                node,
                root: piece_root,
            });
        }
        if pieces.len() < usize::from(redundancy.success) {
            return Err(Error::InvalidArgument(format!(
                "a segment needs at least {} pieces, got {}",
                redundancy.success,
                pieces.len()
            )));
        }
        pieces.sort_by_key(|p| p.num);
        Ok(Segment {
            stream_id: token.stream,
            position: token.position,
            root_piece_id: root,
            encrypted_key: r.encrypted_key,
            encrypted_key_nonce: r.encrypted_key_nonce,
            plain_offset: 0,
            plain_size: r.plain_size,
            encrypted_size: r.encrypted_size,
            redundancy: Some(redundancy),
            inline_data: None,
            pieces,
            created_at: unix_now(),
        })
    }

    async fn make_inline_segment(&self, r: pb::MakeInlineSegmentRequest) -> Result<()> {
        let (credential, stream) = self
            .authorize_stream(r.header.as_ref(), &r.stream_id, Op::Write)
            .await?;
        let project = credential.project;
        let segment = self.inline_segment(
            stream.stream,
            r.position,
            InlineSegment {
                encrypted_key: r.encrypted_key,
                encrypted_key_nonce: r.encrypted_key_nonce,
                plain_size: r.plain_size,
                data: r.encrypted_inline_data,
            },
        )?;
        let replaced = self.metabase.put_segment(&project.id, &segment).await?;
        self.deleter.removed(replaced.as_slice());
        Ok(())
    }

    /// An inline segment of `stream` at `position`, checked against the
    /// inline threshold.
    fn inline_segment(
        &self,
        stream: Vec<u8>,
        position: u32,
        inline: InlineSegment,
    ) -> Result<Segment> {
        let limit = self.config.inline_threshold + INLINE_OVERHEAD;
        if inline.data.len() as u64 > limit {
            return Err(Error::InvalidArgument(format!(
                "inline data of {} bytes exceeds the {} byte inline threshold",
                inline.data.len(),
                self.config.inline_threshold
            )));
        }
        if inline.plain_size < 0 || inline.plain_size > size_i64(self.config.max_segment_size) {
            return Err(Error::InvalidArgument(
                "the plain size is out of range".into(),
            ));
        }
        Ok(Segment {
            stream_id: stream,
            position,
            root_piece_id: [0; 32],
            encrypted_key: inline.encrypted_key,
            encrypted_key_nonce: inline.encrypted_key_nonce,
            plain_offset: 0,
            plain_size: inline.plain_size,
            encrypted_size: size_i64(inline.data.len() as u64),
            redundancy: None,
            inline_data: Some(inline.data),
            pieces: Vec::new(),
            created_at: unix_now(),
        })
    }

    /// The network view for the health of `segments`; `None` when all are inline.
    async fn view_for(&self, segments: &[Segment]) -> Result<Option<NetworkView>> {
        if segments.iter().all(|s| s.inline_data.is_some()) {
            return Ok(None);
        }
        let pieces = segments.iter().flat_map(|s| s.pieces.iter());
        Ok(Some(
            health::view_of(&self.metabase, &self.config, unix_now(), pieces).await?,
        ))
    }

    /// A node's standing as its operator's dashboard shows it.
    fn reputation_of(
        &self,
        record: &metabase::NodeRecord,
        online_score: f64,
    ) -> pb::NodeReputation {
        let config = &self.config.reputation;
        let health = &record.health;
        pb::NodeReputation {
            audit_score: health.audit.score(),
            suspension_score: health.unknown.score(),
            online_score,
            disqualification_threshold: config.disqualification_threshold,
            suspension_threshold: config.suspension_threshold,
            audits: health.audit_total,
            audits_succeeded: health.audit_success,
            vetting_audits: i64::try_from(config.vetting_audits).unwrap_or(i64::MAX),
            vetted_at: health.vetted_at.unwrap_or(0),
            joined_at: record.node.created_at,
            suspended_at: health.suspended_at.unwrap_or(0),
            disqualified_at: health.disqualified_at.unwrap_or(0),
            exiting_at: record.exiting_at.unwrap_or(0),
        }
    }

    /// `view` must be present for remote segments (see [`State::view_for`]).
    fn segment_info(segment: &Segment, view: Option<&NetworkView>) -> pb::SegmentInfo {
        let healthy = view.map_or(0, |v| v.classify(&segment.pieces).healthy_count());
        pb::SegmentInfo {
            position: segment.position,
            plain_offset: segment.plain_offset,
            plain_size: segment.plain_size,
            encrypted_size: segment.encrypted_size,
            inline: segment.inline_data.is_some(),
            redundancy: segment.redundancy.map(Redundancy::to_pb),
            piece_count: u32::try_from(segment.pieces.len()).unwrap_or(u32::MAX),
            healthy_pieces: u32::from(healthy),
        }
    }

    /// The committed object of `stream`, which must belong to `project` and
    /// not have expired: an expired object is gone for its owner even before
    /// the cleanup deletes it (its nodes may have dropped its pieces already).
    async fn committed_object(
        &self,
        project: &Project,
        stream: &StreamToken,
    ) -> Result<metabase::Object> {
        let object = self
            .metabase
            .object_by_stream(&project.id, &stream.stream)
            .await?;
        let expired = object.expires_at != 0 && object.expires_at <= unix_now();
        if object.committed == 0 || expired {
            return Err(Error::NotFound("a committed object for this stream".into()));
        }
        Ok(object)
    }

    async fn download_segment(
        &self,
        r: pb::DownloadSegmentRequest,
    ) -> Result<pb::DownloadSegmentResponse> {
        let (credential, stream) = self
            .authorize_stream(r.header.as_ref(), &r.stream_id, Op::Read)
            .await?;
        let object = self.committed_object(&credential.project, &stream).await?;
        let segment = self.metabase.segment(&stream.stream, r.position).await?;
        let view = self.view_for(std::slice::from_ref(&segment)).await?;
        self.segment_download(&object, segment, view.as_ref()).await
    }

    /// What a client needs to read `segment` of `object`: its key, and its
    /// inline data or an order limit for each of its pieces. `view` must be
    /// present for a remote segment (see [`State::view_for`]).
    async fn segment_download(
        &self,
        object: &metabase::Object,
        segment: Segment,
        view: Option<&NetworkView>,
    ) -> Result<pb::DownloadSegmentResponse> {
        let mut response = pb::DownloadSegmentResponse {
            segment: Some(Self::segment_info(&segment, view)),
            encrypted_key: segment.encrypted_key.clone(),
            encrypted_key_nonce: segment.encrypted_key_nonce.clone(),
            ..Default::default()
        };
        if let Some(data) = segment.inline_data {
            response.encrypted_inline_data = data;
            return Ok(response);
        }
        let Some(redundancy) = segment.redundancy else {
            return Err(Error::Corrupt("a remote segment without redundancy".into()));
        };
        let piece_size =
            size_i64(redundancy.piece_size(u64::try_from(segment.encrypted_size).unwrap_or(0)));
        let ids: Vec<NodeId> = segment.pieces.iter().map(|p| p.node).collect();
        let nodes: HashMap<Vec<u8>, metabase::Node> = self
            .metabase
            .nodes(&ids)
            .await?
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        for piece in &segment.pieces {
            let Some(node) = nodes.get(piece.node.as_bytes().as_slice()) else {
                continue;
            };
            let limit = self.orders.sign(
                piece.node,
                &derive_piece_id(&segment.root_piece_id, &piece.node, piece.num.into()),
                PieceAction::Get,
                piece_size,
                object.expires_at,
            );
            response.limits.push(pb::AddressedOrderLimit {
                limit: Some(limit),
                node_address: node.address.clone(),
                node_public_key: node.public_key.clone(),
                piece_num: piece.num.into(),
            });
            response.piece_roots.push(piece.root.to_vec());
        }
        response.piece_size = piece_size;
        Ok(response)
    }

    /// Commits a copy of the committed object of `r.stream_id` under a new
    /// key; the copy's segments list the source's pieces (nothing moves).
    async fn finish_copy_object(
        &self,
        r: pb::FinishCopyObjectRequest,
    ) -> Result<pb::FinishCopyObjectResponse> {
        let (credential, source) = self
            .authorize_stream(r.header.as_ref(), &r.stream_id, Op::Read)
            .await?;
        credential.check(
            Op::Write,
            Scope::Object(&r.bucket, &r.encrypted_object_key),
            unix_now(),
        )?;
        let replace = State::may_replace(&credential, &r.bucket, &r.encrypted_object_key);
        let project = credential.project;
        if r.encrypted_object_key.is_empty() {
            return Err(Error::InvalidArgument("an object needs a key".into()));
        }
        if r.segment_keys.iter().any(|k| {
            k.encrypted_key.len() > MAX_WRAPPED_KEY || k.encrypted_key_nonce.len() > MAX_WRAPPED_KEY
        }) {
            return Err(Error::InvalidArgument(format!(
                "a wrapped segment key and its nonce are at most {MAX_WRAPPED_KEY} bytes each"
            )));
        }
        let copy = metabase::ObjectCopy {
            stream_id: rand::random::<[u8; 16]>().to_vec(),
            bucket: r.bucket,
            object_key: r.encrypted_object_key,
            created_at: unix_now(),
            encrypted_metadata: r.encrypted_metadata,
            encrypted_metadata_key: r.encrypted_metadata_key,
            encrypted_metadata_nonce: r.encrypted_metadata_nonce,
            segment_keys: r
                .segment_keys
                .into_iter()
                .map(|k| metabase::WrappedSegmentKey {
                    position: k.position,
                    encrypted_key: k.encrypted_key,
                    encrypted_key_nonce: k.encrypted_key_nonce,
                })
                .collect(),
            replace,
            lock: version_lock_of(r.lock.as_ref(), unix_now())?,
        };
        let (object, removed) = self
            .metabase
            .copy_object(&project.id, &source.stream, &copy)
            .await?;
        self.deleter.removed(&removed);
        Ok(pb::FinishCopyObjectResponse {
            object: Some(self.object_pb(&object)),
            versioning: versioning_pb(object.written_with()?).into(),
        })
    }

    /// Counts the reported pieces that the segment really has on the named
    /// nodes (at most as many as it has pieces) and asks for a prompt audit of
    /// each. Anything else in the report is ignored: a client cannot point
    /// audits at pieces it was never given.
    async fn report_bad_pieces(
        &self,
        r: pb::ReportBadPiecesRequest,
    ) -> Result<pb::ReportBadPiecesResponse> {
        let (credential, stream) = self
            .authorize_stream(r.header.as_ref(), &r.stream_id, Op::Read)
            .await?;
        self.committed_object(&credential.project, &stream).await?;
        let segment = self.metabase.segment(&stream.stream, r.position).await?;
        let mut reported = HashSet::new();
        for bad in r.pieces.iter().take(segment.pieces.len()) {
            let reason = match pb::BadPieceReason::try_from(bad.reason) {
                Ok(pb::BadPieceReason::Corrupt) => "corrupt",
                Ok(pb::BadPieceReason::Missing) => "missing",
                Ok(pb::BadPieceReason::Invalid) | Err(_) => continue,
            };
            let Some(piece) = segment.pieces.iter().find(|p| {
                u32::from(p.num) == bad.piece_num && p.node.as_bytes() == bad.node_id.as_slice()
            }) else {
                continue;
            };
            if !reported.insert(piece.num) {
                continue;
            }
            metrics::bump(&self.metrics.bad_piece_reports);
            tracing::debug!(
                "a client reports piece {} of a segment on node {} as {reason}",
                piece.num,
                piece.node
            );
            if let Some(requests) = &self.audit_requests {
                requests.request_piece(
                    piece.node,
                    PieceRef {
                        segment: segment.key(),
                        num: piece.num,
                    },
                );
            }
        }
        Ok(pb::ReportBadPiecesResponse {
            accepted: u32::try_from(reported.len()).unwrap_or(u32::MAX),
        })
    }
}

#[tonic::async_trait]
impl Node for State {
    async fn check_in(
        &self,
        request: Request<pb::CheckInRequest>,
    ) -> Result<Response<pb::CheckInResponse>, Status> {
        let r = request.into_inner();
        let key = verify_check_in(&r)
            .map_err(|e| Status::unauthenticated(format!("the check-in is not signed: {e}")))?;
        let now = unix_now();
        if r.timestamp.abs_diff(now) > CHECK_IN_CLOCK_SKEW.unsigned_abs() {
            return Err(Status::invalid_argument(format!(
                "the check-in timestamp is {} seconds off the satellite's clock",
                r.timestamp.saturating_sub(now)
            )));
        }
        if r.address.is_empty()
            || r.capacity_bytes < 0
            || r.free_bytes < 0
            || r.used_bytes < 0
            || r.trash_bytes < 0
        {
            return Err(Status::invalid_argument(
                "a check-in needs an address and non-negative space figures",
            ));
        }
        let difficulty = key.id().difficulty();
        if difficulty < self.config.min_identity_difficulty {
            return Err(Status::permission_denied(format!(
                "node {}'s identity has difficulty {difficulty}, below this satellite's minimum of {}; \
                 create one with `archipel-node setup --difficulty {}`",
                key.id(),
                self.config.min_identity_difficulty,
                self.config.min_identity_difficulty,
            )));
        }
        let reached = overlay::ping_back(&r.address, key.id())
            .await
            .map_err(|e| {
                tracing::info!(node = %key.id(), address = %r.address, "ping-back failed: {e}");
                Status::failed_precondition(format!(
                    "the satellite cannot reach node {} at {}: {e}",
                    key.id(),
                    r.address
                ))
            })?;
        self.metabase
            .upsert_node(&metabase::Node {
                id: key.id().to_vec(),
                public_key: key.public_key().to_vec(),
                last_net: overlay::network_of(reached),
                address: r.address,
                capacity_bytes: r.capacity_bytes,
                free_bytes: r.free_bytes,
                version: r.version,
                last_contact: now,
                created_at: now,
            })
            .await?;
        let node_id = key.id();
        let record = self
            .metabase
            .node_record(&node_id, &self.config.reputation)
            .await?
            .ok_or_else(|| Status::internal("a node just recorded is missing"))?;
        let disk_problem = Some(r.disk_problem.as_str()).filter(|p| !p.is_empty());
        if record.disk_problem.as_deref() != disk_problem {
            match disk_problem {
                Some(problem) => {
                    tracing::warn!(node = %node_id, "the node takes no uploads: {problem}")
                }
                None => tracing::info!(node = %node_id, "the node's disk is healthy again"),
            }
        }
        self.metabase
            .record_node_report(&node_id, r.used_bytes, r.trash_bytes, disk_problem)
            .await?;
        let online_score = self
            .metabase
            .online_scores(now, Some(&node_id))
            .await?
            .first()
            .map_or(1.0, |(_, score)| *score);
        Ok(Response::new(pb::CheckInResponse {
            satellite_public_key: self.identity.public_key().to_vec(),
            reputation: Some(self.reputation_of(&record, online_score)),
            next_check_in_seconds: secs(self.config.check_in_interval),
        }))
    }

    async fn exit(
        &self,
        request: Request<pb::ExitRequest>,
    ) -> Result<Response<pb::ExitResponse>, Status> {
        let r = request.into_inner();
        let key = verify_exit_request(&r)
            .map_err(|e| Status::unauthenticated(format!("the exit request is not signed: {e}")))?;
        let now = unix_now();
        if r.timestamp.abs_diff(now) > CHECK_IN_CLOCK_SKEW.unsigned_abs() {
            return Err(Status::invalid_argument(format!(
                "the exit request's timestamp is {} seconds off the satellite's clock",
                r.timestamp.saturating_sub(now)
            )));
        }
        Ok(Response::new(self.exits.call(key.id(), r.results).await?))
    }
}

#[tonic::async_trait]
impl Metainfo for State {
    async fn get_project_info(
        &self,
        request: Request<pb::ProjectInfoRequest>,
    ) -> Result<Response<pb::ProjectInfoResponse>, Status> {
        // Any key still in its time window that allows anything at all.
        let credential = self
            .authorize_any(request.get_ref().header.as_ref(), &ALL_OPS, Scope::Project)
            .await?;
        Ok(Response::new(pb::ProjectInfoResponse {
            project_salt: credential.project.salt,
            satellite_id: self.identity.id().to_vec(),
        }))
    }

    async fn create_bucket(
        &self,
        request: Request<pb::CreateBucketRequest>,
    ) -> Result<Response<pb::BucketResponse>, Status> {
        let r = request.into_inner();
        let project = self
            .authorize(r.header.as_ref(), Op::Write, Scope::WholeBucket(&r.name))
            .await?
            .project;
        validate_bucket_name(&r.name)?;
        let bucket = self
            .metabase
            .create_bucket_with(
                &project.id,
                &r.name,
                r.plain_names,
                r.object_lock,
                unix_now(),
            )
            .await?;
        Ok(Response::new(pb::BucketResponse {
            bucket: Some(bucket_pb(bucket)),
        }))
    }

    async fn get_bucket(
        &self,
        request: Request<pb::GetBucketRequest>,
    ) -> Result<Response<pb::BucketResponse>, Status> {
        let r = request.into_inner();
        // Any operation needs the bucket's settings (how it stores names).
        let project = self
            .authorize_any(r.header.as_ref(), &ALL_OPS, Scope::Bucket(&r.name))
            .await?
            .project;
        let bucket = self.metabase.get_bucket(&project.id, &r.name).await?;
        Ok(Response::new(pb::BucketResponse {
            bucket: Some(bucket_pb(bucket)),
        }))
    }

    async fn delete_bucket(
        &self,
        request: Request<pb::DeleteBucketRequest>,
    ) -> Result<Response<pb::DeleteBucketResponse>, Status> {
        let r = request.into_inner();
        let project = self
            .authorize(r.header.as_ref(), Op::Delete, Scope::WholeBucket(&r.name))
            .await?
            .project;
        let removed = self.metabase.delete_bucket(&project.id, &r.name).await?;
        self.deleter.removed(&removed);
        Ok(Response::new(pb::DeleteBucketResponse {}))
    }

    async fn set_bucket_versioning(
        &self,
        request: Request<pb::SetBucketVersioningRequest>,
    ) -> Result<Response<pb::BucketResponse>, Status> {
        let r = request.into_inner();
        // Suspending makes later writes replace data, so it takes a key
        // that may also delete everywhere in the bucket.
        let credential = self
            .authorize(r.header.as_ref(), Op::Write, Scope::WholeBucket(&r.name))
            .await?;
        credential.check(Op::Delete, Scope::WholeBucket(&r.name), unix_now())?;
        let versioning = match pb::BucketVersioning::try_from(r.versioning) {
            Ok(pb::BucketVersioning::Enabled) => Versioning::Enabled,
            Ok(pb::BucketVersioning::Suspended) => Versioning::Suspended,
            _ => {
                return Err(Error::InvalidArgument(
                    "versioning is set to enabled or suspended".into(),
                )
                .into())
            }
        };
        let bucket = self
            .metabase
            .set_versioning(&credential.project.id, &r.name, versioning)
            .await?;
        Ok(Response::new(pb::BucketResponse {
            bucket: Some(bucket_pb(bucket)),
        }))
    }

    async fn set_bucket_object_lock(
        &self,
        request: Request<pb::SetBucketObjectLockRequest>,
    ) -> Result<Response<pb::BucketResponse>, Status> {
        let r = request.into_inner();
        // Locking keeps data from being deleted, so it takes a key that
        // may delete everywhere in the bucket, like suspending versioning.
        let credential = self
            .authorize(r.header.as_ref(), Op::Write, Scope::WholeBucket(&r.name))
            .await?;
        credential.check(Op::Delete, Scope::WholeBucket(&r.name), unix_now())?;
        let lock = object_lock_of(&r.object_lock.unwrap_or_default())?;
        let bucket = self
            .metabase
            .set_object_lock(&credential.project.id, &r.name, lock)
            .await?;
        Ok(Response::new(pb::BucketResponse {
            bucket: Some(bucket_pb(bucket)),
        }))
    }

    async fn set_bucket_tags(
        &self,
        request: Request<pb::SetBucketTagsRequest>,
    ) -> Result<Response<pb::BucketResponse>, Status> {
        let r = request.into_inner();
        let project = self
            .authorize(r.header.as_ref(), Op::Write, Scope::WholeBucket(&r.name))
            .await?
            .project;
        let tags: Vec<(String, String)> = r.tags.into_iter().map(|t| (t.key, t.value)).collect();
        let bucket = self
            .metabase
            .set_bucket_tags(&project.id, &r.name, &tags)
            .await?;
        Ok(Response::new(pb::BucketResponse {
            bucket: Some(bucket_pb(bucket)),
        }))
    }

    async fn set_bucket_access(
        &self,
        request: Request<pb::SetBucketAccessRequest>,
    ) -> Result<Response<pb::BucketResponse>, Status> {
        let r = request.into_inner();
        let project = self
            .authorize(r.header.as_ref(), Op::Write, Scope::WholeBucket(&r.name))
            .await?
            .project;
        let acl = match r.acl {
            Some(update) => Some(canned_acl_from_pb(
                pb::CannedAcl::try_from(update.acl)
                    .map_err(|_| Status::invalid_argument("unknown canned ACL"))?,
            )),
            None => None,
        };
        let update = BucketAccessUpdate {
            acl,
            public_access_block: r
                .public_access_block
                .map(|update| update.settings.map(public_access_block_from_pb)),
            cors: r.cors.map(|cors| cors.rules),
        };
        let bucket = self
            .metabase
            .set_bucket_access(&project.id, &r.name, &update)
            .await?;
        Ok(Response::new(pb::BucketResponse {
            bucket: Some(bucket_pb(bucket)),
        }))
    }

    async fn list_buckets(
        &self,
        request: Request<pb::ListBucketsRequest>,
    ) -> Result<Response<pb::ListBucketsResponse>, Status> {
        let r = request.into_inner();
        let credential = self
            .authorize(r.header.as_ref(), Op::List, Scope::Project)
            .await?;
        let limit = if r.limit == 0 {
            metabase::MAX_LIST_LIMIT
        } else {
            r.limit as usize
        };
        // A key limited to some buckets sees only those; pages the caveats
        // empty are skipped, since a client stops at an empty page.
        let mut cursor = r.cursor;
        let mut shown = Vec::new();
        let more = loop {
            let (buckets, more) = self
                .metabase
                .list_buckets(&credential.project.id, &cursor, limit)
                .await?;
            if let Some(last) = buckets.last() {
                cursor.clone_from(&last.name);
            }
            shown.extend(
                buckets
                    .into_iter()
                    .filter(|b| credential.shows_bucket(&b.name)),
            );
            if !shown.is_empty() || !more {
                break more;
            }
        };
        Ok(Response::new(pb::ListBucketsResponse {
            buckets: shown.into_iter().map(bucket_pb).collect(),
            more,
        }))
    }

    async fn begin_object(
        &self,
        request: Request<pb::BeginObjectRequest>,
    ) -> Result<Response<pb::BeginObjectResponse>, Status> {
        let r = request.into_inner();
        let credential = self
            .authorize(
                r.header.as_ref(),
                Op::Write,
                Scope::Object(&r.bucket, &r.encrypted_object_key),
            )
            .await?;
        // The commit refuses to replace a null version holding data for a
        // key that may not delete it (a versioned bucket keeps it instead);
        // refusing here too spares the upload in between.
        if !State::may_replace(&credential, &r.bucket, &r.encrypted_object_key) {
            let project = &credential.project.id;
            let bucket = self.metabase.get_bucket(project, &r.bucket).await?;
            let null_version = match bucket.versioning {
                Versioning::Enabled => None,
                Versioning::Unversioned | Versioning::Suspended => {
                    let found = self
                        .metabase
                        .get_version(
                            project,
                            &r.bucket,
                            &r.encrypted_object_key,
                            &VersionRef::Null,
                            unix_now(),
                        )
                        .await;
                    match found {
                        Ok(null) => Some(null),
                        Err(Error::NotFound(_)) => None,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            if null_version.is_some_and(|null| null.delete_marker == 0) {
                return Err(Error::PermissionDenied(metabase::OVERWRITE_REFUSED.into()).into());
            }
        }
        let lock = version_lock_of(r.lock.as_ref(), unix_now())?;
        // The commit refuses a lock the bucket cannot hold; refusing here
        // spares the upload.
        if lock.is_set()
            && !self
                .metabase
                .get_bucket(&credential.project.id, &r.bucket)
                .await?
                .object_lock
                .enabled
        {
            return Err(Error::InvalidArgument(
                "the bucket has no Object Lock configuration".into(),
            )
            .into());
        }
        let project = credential.project;
        let mut object = self.new_object(
            &project,
            r.bucket,
            r.encrypted_object_key,
            r.encryption,
            r.expires_at,
        )?;
        object.set_lock(lock);
        if r.multipart {
            object.multipart = 1;
            object.encrypted_metadata = r.encrypted_metadata;
            object.encrypted_metadata_key = r.encrypted_metadata_key;
            object.encrypted_metadata_nonce = r.encrypted_metadata_nonce;
        }
        // Nodes first: without enough of them nothing is left pending.
        let first_segment = match r.first_segment_max_encrypted_size {
            0 => None,
            max_size => Some(self.segment_limits(&project, &object, 0, max_size).await?),
        };
        self.metabase.begin_object(&object).await?;
        Ok(Response::new(pb::BeginObjectResponse {
            stream_id: self.stream_id_of(&object),
            redundancy: Some(self.config.redundancy.to_pb()),
            max_segment_size: size_i64(self.config.max_segment_size),
            inline_threshold: size_i64(self.config.inline_threshold),
            first_segment,
        }))
    }

    async fn put_inline_object(
        &self,
        request: Request<pb::PutInlineObjectRequest>,
    ) -> Result<Response<pb::CommitObjectResponse>, Status> {
        let r = request.into_inner();
        let credential = self
            .authorize(
                r.header.as_ref(),
                Op::Write,
                Scope::Object(&r.bucket, &r.encrypted_object_key),
            )
            .await?;
        let replace = State::may_replace(&credential, &r.bucket, &r.encrypted_object_key);
        let project = credential.project;
        let mut object = self.new_object(
            &project,
            r.bucket,
            r.encrypted_object_key,
            r.encryption,
            r.expires_at,
        )?;
        let segment = self.inline_segment(
            object.stream_id.clone(),
            0,
            InlineSegment {
                encrypted_key: r.encrypted_key,
                encrypted_key_nonce: r.encrypted_key_nonce,
                plain_size: r.plain_size,
                data: r.encrypted_inline_data,
            },
        )?;
        object.set_lock(version_lock_of(r.lock.as_ref(), unix_now())?);
        object.committed = 1;
        object.plain_size = segment.plain_size;
        object.segment_count = 1;
        object.encrypted_metadata = r.encrypted_metadata;
        object.encrypted_metadata_key = r.encrypted_metadata_key;
        object.encrypted_metadata_nonce = r.encrypted_metadata_nonce;
        let condition = precondition(r.precondition.as_ref())?;
        let (object, removed) = self
            .metabase
            .put_inline_object(&object, &segment, replace, condition.as_ref())
            .await?;
        self.deleter.removed(&removed);
        Ok(Response::new(self.committed_pb(&object)?))
    }

    async fn begin_segment(
        &self,
        request: Request<pb::BeginSegmentRequest>,
    ) -> Result<Response<pb::BeginSegmentResponse>, Status> {
        Ok(Response::new(
            State::begin_segment(self, request.into_inner()).await?,
        ))
    }

    async fn commit_segment(
        &self,
        request: Request<pb::CommitSegmentRequest>,
    ) -> Result<Response<pb::CommitSegmentResponse>, Status> {
        State::commit_segment(self, request.into_inner()).await?;
        Ok(Response::new(pb::CommitSegmentResponse {}))
    }

    async fn make_inline_segment(
        &self,
        request: Request<pb::MakeInlineSegmentRequest>,
    ) -> Result<Response<pb::MakeInlineSegmentResponse>, Status> {
        State::make_inline_segment(self, request.into_inner()).await?;
        Ok(Response::new(pb::MakeInlineSegmentResponse {}))
    }

    async fn commit_object(
        &self,
        request: Request<pb::CommitObjectRequest>,
    ) -> Result<Response<pb::CommitObjectResponse>, Status> {
        let r = request.into_inner();
        let (credential, stream) = self
            .authorize_stream(r.header.as_ref(), &r.stream_id, Op::Write)
            .await?;
        let replace = State::may_replace(&credential, &stream.bucket, &stream.object_key);
        if r.part_infos.len() != r.parts.len() {
            return Err(
                Error::InvalidArgument("each part named needs its info as listed".into()).into(),
            );
        }
        let last_segment = match r.last_segment {
            Some(LastSegment::RemoteSegment(commit)) => {
                Some(self.remote_segment(&credential, commit).await?)
            }
            Some(LastSegment::InlineSegment(inline)) => Some(self.inline_segment(
                stream.stream.clone(),
                inline.position,
                InlineSegment {
                    encrypted_key: inline.encrypted_key,
                    encrypted_key_nonce: inline.encrypted_key_nonce,
                    plain_size: inline.plain_size,
                    data: inline.encrypted_inline_data,
                },
            )?),
            None => None,
        };
        let commit = ObjectCommit {
            stream_id: stream.stream,
            encrypted_metadata: r.encrypted_metadata,
            encrypted_metadata_key: r.encrypted_metadata_key,
            encrypted_metadata_nonce: r.encrypted_metadata_nonce,
            parts: r.parts.into_iter().zip(r.part_infos).collect(),
            last_segment,
            replace,
            precondition: precondition(r.precondition.as_ref())?,
        };
        let (object, removed) = self
            .metabase
            .commit_object(&credential.project.id, &commit)
            .await?;
        self.deleter.removed(&removed);
        Ok(Response::new(self.committed_pb(&object)?))
    }

    async fn get_object(
        &self,
        request: Request<pb::GetObjectRequest>,
    ) -> Result<Response<pb::GetObjectResponse>, Status> {
        let r = request.into_inner();
        let project = self
            .authorize_object(
                r.header.as_ref(),
                Op::Read,
                &r.bucket,
                &r.encrypted_object_key,
            )
            .await?;
        let object = self
            .metabase
            .get_version(
                &project.id,
                &r.bucket,
                &r.encrypted_object_key,
                &version_ref(r.version.as_ref())?,
                unix_now(),
            )
            .await?;
        let versioning = self
            .metabase
            .get_bucket(&project.id, &r.bucket)
            .await?
            .versioning;
        let segments = self.metabase.segments(&object.stream_id).await?;
        let view = self.view_for(&segments).await?;
        let infos = segments
            .iter()
            .map(|s| State::segment_info(s, view.as_ref()))
            .collect();
        let wanted = r.download.then(|| {
            let offset = r.download_offset;
            segments
                .iter()
                .position(|s| offset < s.plain_offset.saturating_add(s.plain_size))
                .unwrap_or(segments.len().saturating_sub(1))
        });
        let download = match wanted.and_then(|i| segments.into_iter().nth(i)) {
            Some(segment) => Some(
                self.segment_download(&object, segment, view.as_ref())
                    .await?,
            ),
            None => None,
        };
        Ok(Response::new(pb::GetObjectResponse {
            object: Some(self.object_pb(&object)),
            segments: infos,
            download,
            versioning: versioning_pb(versioning).into(),
        }))
    }

    async fn download_segment(
        &self,
        request: Request<pb::DownloadSegmentRequest>,
    ) -> Result<Response<pb::DownloadSegmentResponse>, Status> {
        Ok(Response::new(
            State::download_segment(self, request.into_inner()).await?,
        ))
    }

    async fn list_objects(
        &self,
        request: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<pb::ListObjectsResponse>, Status> {
        let r = request.into_inner();
        let credential = self
            .authorize(
                r.header.as_ref(),
                Op::List,
                Scope::Listing(&r.bucket, &r.encrypted_prefix),
            )
            .await?;
        let project = &credential.project;
        self.metabase.get_bucket(&project.id, &r.bucket).await?;
        // Above an allowed path only the way to it shows; pages the caveats
        // empty are skipped, since a client stops at an empty page.
        let mut cursor = r.cursor;
        let mut after_version = match r.cursor_version.as_slice() {
            [] => None,
            id => Some(VersionId::from_bytes(id).map_err(Error::from)?.version),
        };
        let mut entries = Vec::new();
        let more = loop {
            let listing = Listing {
                prefix: &r.encrypted_prefix,
                cursor: &cursor,
                recursive: r.recursive,
                limit: r.limit as usize,
            };
            let (page, more) = if r.versions {
                self.metabase
                    .list_versions(&project.id, &r.bucket, &listing, after_version, unix_now())
                    .await?
            } else {
                self.metabase
                    .list_objects(&project.id, &r.bucket, &listing, unix_now())
                    .await?
            };
            if let Some(last) = page.last() {
                cursor = last.key().to_vec();
                after_version = match last {
                    ListEntry::Version { object, .. } => Some(object.version),
                    _ => None,
                };
            }
            entries.extend(page.into_iter().filter(|entry| {
                let relative = entry.key();
                let is_prefix = matches!(entry, ListEntry::Prefix(_));
                let relative = relative.strip_suffix(b"/").unwrap_or(relative);
                let full = [r.encrypted_prefix.as_slice(), relative].concat();
                credential.shows(&r.bucket, &full, is_prefix)
            }));
            if !entries.is_empty() || !more {
                break more;
            }
        };
        let items = entries
            .into_iter()
            .map(|entry| match entry {
                ListEntry::Prefix(key) => pb::ListItem {
                    encrypted_object_key: key,
                    is_prefix: true,
                    object: None,
                    is_latest: false,
                },
                ListEntry::Object(key, object) => pb::ListItem {
                    encrypted_object_key: key,
                    is_prefix: false,
                    object: Some(State::listed_object_pb(&object)),
                    is_latest: true,
                },
                ListEntry::Version {
                    key,
                    object,
                    latest,
                } => pb::ListItem {
                    encrypted_object_key: key,
                    is_prefix: false,
                    object: Some(State::listed_object_pb(&object)),
                    is_latest: latest,
                },
            })
            .collect();
        Ok(Response::new(pb::ListObjectsResponse { items, more }))
    }

    async fn delete_object(
        &self,
        request: Request<pb::DeleteObjectRequest>,
    ) -> Result<Response<pb::DeleteObjectResponse>, Status> {
        let r = request.into_inner();
        let target = (r.bucket.as_str(), r.encrypted_object_key.as_slice());
        let credential = self
            .authorize_bypass(r.header.as_ref(), Op::Delete, target, r.bypass_governance)
            .await?;
        let deletion = self
            .metabase
            .delete_object(
                &credential.project.id,
                &r.bucket,
                &r.encrypted_object_key,
                &version_ref(r.version.as_ref())?,
                precondition(r.precondition.as_ref())?.as_ref(),
                r.bypass_governance,
            )
            .await?;
        self.deleter.removed(&deletion.segments);
        Ok(Response::new(pb::DeleteObjectResponse {
            object: deletion.removed.map(|o| self.object_pb(&o)),
            marker: deletion.marker.map(|o| self.object_pb(&o)),
            versioning: versioning_pb(deletion.versioning).into(),
        }))
    }

    async fn set_object_retention(
        &self,
        request: Request<pb::SetObjectRetentionRequest>,
    ) -> Result<Response<pb::SetObjectLockResponse>, Status> {
        let r = request.into_inner();
        let target = (r.bucket.as_str(), r.encrypted_object_key.as_slice());
        let credential = self
            .authorize_bypass(r.header.as_ref(), Op::Write, target, r.bypass_governance)
            .await?;
        let object = self
            .metabase
            .set_retention(
                &credential.project.id,
                &r.bucket,
                &r.encrypted_object_key,
                &version_ref(r.version.as_ref())?,
                retention_of(r.retention.as_ref(), unix_now())?,
                r.bypass_governance,
            )
            .await?;
        Ok(Response::new(pb::SetObjectLockResponse {
            object: Some(self.object_pb(&object)),
        }))
    }

    async fn set_object_legal_hold(
        &self,
        request: Request<pb::SetObjectLegalHoldRequest>,
    ) -> Result<Response<pb::SetObjectLockResponse>, Status> {
        let r = request.into_inner();
        let project = self
            .authorize_object(
                r.header.as_ref(),
                Op::Write,
                &r.bucket,
                &r.encrypted_object_key,
            )
            .await?;
        let object = self
            .metabase
            .set_legal_hold(
                &project.id,
                &r.bucket,
                &r.encrypted_object_key,
                &version_ref(r.version.as_ref())?,
                r.legal_hold,
            )
            .await?;
        Ok(Response::new(pb::SetObjectLockResponse {
            object: Some(self.object_pb(&object)),
        }))
    }

    async fn update_object_metadata(
        &self,
        request: Request<pb::UpdateObjectMetadataRequest>,
    ) -> Result<Response<pb::UpdateObjectMetadataResponse>, Status> {
        let r = request.into_inner();
        // Replacing sealed metadata destroys what was there, which a key
        // that may write but not delete must not do (as with overwrites).
        let scope = Scope::Object(&r.bucket, &r.encrypted_object_key);
        let credential = self.authorize(r.header.as_ref(), Op::Write, scope).await?;
        credential.check(Op::Delete, scope, unix_now())?;
        let project = credential.project;
        if r.encrypted_metadata.len() > MAX_UPDATED_METADATA
            || r.encrypted_metadata_key.len() > MAX_WRAPPED_KEY
            || r.encrypted_metadata_nonce.len() > MAX_WRAPPED_KEY
        {
            return Err(Error::InvalidArgument(format!(
                "sealed metadata is at most {MAX_UPDATED_METADATA} bytes, its wrapped key and nonce {MAX_WRAPPED_KEY} each"
            ))
            .into());
        }
        let id = VersionId::from_bytes(&r.version_id).map_err(Error::from)?;
        let object = self
            .metabase
            .update_metadata(
                &project.id,
                &r.bucket,
                &r.encrypted_object_key,
                &id,
                [
                    &r.encrypted_metadata,
                    &r.encrypted_metadata_key,
                    &r.encrypted_metadata_nonce,
                ],
                unix_now(),
            )
            .await?;
        Ok(Response::new(pb::UpdateObjectMetadataResponse {
            object: Some(self.object_pb(&object)),
        }))
    }

    async fn report_bad_pieces(
        &self,
        request: Request<pb::ReportBadPiecesRequest>,
    ) -> Result<Response<pb::ReportBadPiecesResponse>, Status> {
        Ok(Response::new(
            State::report_bad_pieces(self, request.into_inner()).await?,
        ))
    }

    async fn commit_part(
        &self,
        request: Request<pb::CommitPartRequest>,
    ) -> Result<Response<pb::CommitPartResponse>, Status> {
        let r = request.into_inner();
        let (credential, stream) = self
            .authorize_stream(r.header.as_ref(), &r.stream_id, Op::Write)
            .await?;
        let project = credential.project;
        if r.encrypted_info.len() > MAX_PART_INFO {
            return Err(Error::InvalidArgument(format!(
                "a part's info is at most {MAX_PART_INFO} bytes"
            ))
            .into());
        }
        let removed = self
            .metabase
            .commit_part(
                &project.id,
                &stream.stream,
                r.part_number,
                &r.segment_key_nonces,
                r.plain_size,
                &r.encrypted_info,
                unix_now(),
            )
            .await?;
        self.deleter.removed(&removed);
        Ok(Response::new(pb::CommitPartResponse {}))
    }

    async fn list_parts(
        &self,
        request: Request<pb::ListPartsRequest>,
    ) -> Result<Response<pb::ListPartsResponse>, Status> {
        let r = request.into_inner();
        // Completing an upload lists its parts: writing is enough.
        let credential = self.authenticate(r.header.as_ref()).await?;
        let stream = self.open_stream(&credential.project, &r.stream_id)?;
        let scope = Scope::Object(&stream.bucket, &stream.object_key);
        let now = unix_now();
        if credential.check(Op::Write, scope, now).is_err() {
            credential.check(Op::List, scope, now)?;
        }
        let project = credential.project;
        let limit = if r.limit == 0 {
            metabase::MAX_LIST_LIMIT
        } else {
            r.limit as usize
        };
        let (object, parts, more) = self
            .metabase
            .list_parts(&project.id, &stream.stream, r.after, limit)
            .await?;
        Ok(Response::new(pb::ListPartsResponse {
            object: Some(self.object_pb(&object)),
            parts: parts
                .into_iter()
                .map(|p| pb::Part {
                    part_number: u32::try_from(p.part_number).unwrap_or_default(),
                    plain_size: p.plain_size,
                    segment_count: u32::try_from(p.segment_count).unwrap_or_default(),
                    encrypted_info: p.encrypted_info,
                    created_at: p.created_at,
                })
                .collect(),
            more,
            redundancy: Some(self.config.redundancy.to_pb()),
            max_segment_size: size_i64(self.config.max_segment_size),
            inline_threshold: size_i64(self.config.inline_threshold),
            completed: object.committed != 0,
        }))
    }

    async fn list_pending_objects(
        &self,
        request: Request<pb::ListPendingObjectsRequest>,
    ) -> Result<Response<pb::ListPendingObjectsResponse>, Status> {
        let r = request.into_inner();
        let credential = self
            .authorize(r.header.as_ref(), Op::List, Scope::Bucket(&r.bucket))
            .await?;
        let project = &credential.project;
        self.metabase.get_bucket(&project.id, &r.bucket).await?;
        let mut cursor = if r.cursor.is_empty() {
            None
        } else {
            let token = self.open_stream(project, &r.cursor)?;
            if token.bucket != r.bucket {
                return Err(Error::InvalidArgument(
                    "the cursor is an upload of another bucket".into(),
                )
                .into());
            }
            Some((token.object_key, token.stream))
        };
        let limit = if r.limit == 0 {
            metabase::MAX_LIST_LIMIT
        } else {
            r.limit as usize
        };
        // Uploads outside the key's paths are left out; pages that leaves
        // empty are skipped, since a client stops at an empty page.
        let mut shown = Vec::new();
        let more = loop {
            let (objects, more) = self
                .metabase
                .list_multipart_uploads(
                    &project.id,
                    &r.bucket,
                    cursor.as_ref().map(|(k, s)| (k.as_slice(), s.as_slice())),
                    limit,
                )
                .await?;
            if let Some(last) = objects.last() {
                cursor = Some((last.object_key.clone(), last.stream_id.clone()));
            }
            shown.extend(
                objects
                    .into_iter()
                    .filter(|o| credential.shows(&r.bucket, &o.object_key, false)),
            );
            if !shown.is_empty() || !more {
                break more;
            }
        };
        Ok(Response::new(pb::ListPendingObjectsResponse {
            objects: shown.iter().map(|o| self.object_pb(o)).collect(),
            more,
        }))
    }

    async fn abort_object(
        &self,
        request: Request<pb::AbortObjectRequest>,
    ) -> Result<Response<pb::AbortObjectResponse>, Status> {
        let r = request.into_inner();
        // Aborting removes only what the upload itself stored: writing is enough.
        let (credential, stream) = self
            .authorize_stream(r.header.as_ref(), &r.stream_id, Op::Write)
            .await?;
        let removed = self
            .metabase
            .abort_object(&credential.project.id, &stream.stream)
            .await?;
        self.deleter.removed(&removed);
        Ok(Response::new(pb::AbortObjectResponse {}))
    }

    async fn begin_copy_object(
        &self,
        request: Request<pb::BeginCopyObjectRequest>,
    ) -> Result<Response<pb::BeginCopyObjectResponse>, Status> {
        let r = request.into_inner();
        let project = self
            .authorize_object(
                r.header.as_ref(),
                Op::Read,
                &r.bucket,
                &r.encrypted_object_key,
            )
            .await?;
        let object = self
            .metabase
            .get_version(
                &project.id,
                &r.bucket,
                &r.encrypted_object_key,
                &version_ref(r.version.as_ref())?,
                unix_now(),
            )
            .await?;
        if object.delete_marker != 0 {
            // As S3: a delete marker is no copy source.
            return Err(Error::NotFound("the object (a delete marker)".into()).into());
        }
        let versioning = self
            .metabase
            .get_bucket(&project.id, &r.bucket)
            .await?
            .versioning;
        let segments = self.metabase.segments(&object.stream_id).await?;
        Ok(Response::new(pb::BeginCopyObjectResponse {
            versioning: versioning_pb(versioning).into(),
            object: Some(self.object_pb(&object)),
            segment_keys: segments
                .into_iter()
                .map(|s| pb::SegmentKey {
                    position: s.position,
                    encrypted_key: s.encrypted_key,
                    encrypted_key_nonce: s.encrypted_key_nonce,
                })
                .collect(),
        }))
    }

    async fn finish_copy_object(
        &self,
        request: Request<pb::FinishCopyObjectRequest>,
    ) -> Result<Response<pb::FinishCopyObjectResponse>, Status> {
        Ok(Response::new(
            State::finish_copy_object(self, request.into_inner()).await?,
        ))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let r = request.into_inner();
        let caller = self.authenticate(r.header.as_ref()).await?;
        let refused = || {
            Error::PermissionDenied(
                "only a key it was restricted from (or the key itself) can revoke a key".into(),
            )
        };
        let target = ApiKey::parse(&r.api_key)
            .map_err(|e| Error::InvalidArgument(format!("the key to revoke: {e}")))?;
        let caller_key = caller.key.as_ref().ok_or_else(refused)?;
        // The target must be a real key of this project, restricted from the caller's.
        let revoked = self.metabase.authenticate(&r.api_key).await?;
        if revoked.project.id != caller.project.id || !target.derives_from(caller_key) {
            return Err(refused().into());
        }
        self.metabase.revoke_api_key(&target, unix_now()).await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["abc", "my-bucket.2", "a1b", &"a".repeat(63)] {
            assert!(validate_bucket_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "Abc",
            "a_b",
            "-ab",
            "ab.",
            "a..b",
            "a.-b",
            "192.168.1.1",
            "a b",
        ] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }
}
