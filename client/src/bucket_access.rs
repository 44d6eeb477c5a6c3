//! A bucket's access settings: its canned ACL, its public access block and
//! its CORS rules, as S3 has them. The satellite keeps them in the clear,
//! like the bucket's name; the S3 gateway applies them to requests that
//! carry no key of the project (anonymous reads, browsers' preflights).

use archipel_proto::pb;

/// Who besides the owner may read (and write) a bucket or an object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CannedAcl {
    #[default]
    Private,
    PublicRead,
    PublicReadWrite,
    AuthenticatedRead,
}

impl CannedAcl {
    /// Every canned ACL, by its S3 name.
    pub const ALL: [CannedAcl; 4] = [
        CannedAcl::Private,
        CannedAcl::PublicRead,
        CannedAcl::PublicReadWrite,
        CannedAcl::AuthenticatedRead,
    ];

    /// The name S3 gives it (`x-amz-acl`).
    pub fn name(self) -> &'static str {
        match self {
            CannedAcl::Private => "private",
            CannedAcl::PublicRead => "public-read",
            CannedAcl::PublicReadWrite => "public-read-write",
            CannedAcl::AuthenticatedRead => "authenticated-read",
        }
    }

    /// The canned ACL of an S3 name.
    pub fn from_name(name: &str) -> Option<CannedAcl> {
        CannedAcl::ALL.into_iter().find(|acl| acl.name() == name)
    }

    /// Whether anyone at all may read.
    pub fn is_public(self) -> bool {
        matches!(self, CannedAcl::PublicRead | CannedAcl::PublicReadWrite)
    }

    fn to_pb(self) -> pb::CannedAcl {
        match self {
            CannedAcl::Private => pb::CannedAcl::Private,
            CannedAcl::PublicRead => pb::CannedAcl::PublicRead,
            CannedAcl::PublicReadWrite => pb::CannedAcl::PublicReadWrite,
            CannedAcl::AuthenticatedRead => pb::CannedAcl::AuthenticatedRead,
        }
    }

    fn from_pb(acl: i32) -> CannedAcl {
        match pb::CannedAcl::try_from(acl) {
            Ok(pb::CannedAcl::PublicRead) => CannedAcl::PublicRead,
            Ok(pb::CannedAcl::PublicReadWrite) => CannedAcl::PublicReadWrite,
            Ok(pb::CannedAcl::AuthenticatedRead) => CannedAcl::AuthenticatedRead,
            // An ACL this client does not know grants nothing it can honour.
            Ok(pb::CannedAcl::Private) | Err(_) => CannedAcl::Private,
        }
    }
}

/// S3's public access block: settings that override public ACLs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PublicAccessBlock {
    /// Refuse requests that set a public ACL.
    pub block_public_acls: bool,
    /// Treat public ACLs as private.
    pub ignore_public_acls: bool,
    /// Kept for S3 clients; there are no bucket policies.
    pub block_public_policy: bool,
    /// Kept for S3 clients; there are no bucket policies.
    pub restrict_public_buckets: bool,
}

impl PublicAccessBlock {
    fn to_pb(self) -> pb::PublicAccessBlock {
        pb::PublicAccessBlock {
            block_public_acls: self.block_public_acls,
            ignore_public_acls: self.ignore_public_acls,
            block_public_policy: self.block_public_policy,
            restrict_public_buckets: self.restrict_public_buckets,
        }
    }

    fn from_pb(block: &pb::PublicAccessBlock) -> PublicAccessBlock {
        PublicAccessBlock {
            block_public_acls: block.block_public_acls,
            ignore_public_acls: block.ignore_public_acls,
            block_public_policy: block.block_public_policy,
            restrict_public_buckets: block.restrict_public_buckets,
        }
    }
}

/// One rule of a bucket's CORS configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CorsRule {
    pub id: Option<String>,
    /// Origins, each with at most one `*`.
    pub allowed_origins: Vec<String>,
    /// Of GET, PUT, POST, DELETE and HEAD.
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may name, each with at most one `*`.
    pub allowed_headers: Vec<String>,
    /// Response headers a page's script may read.
    pub expose_headers: Vec<String>,
    /// How long a browser may keep a preflight's answer.
    pub max_age_seconds: Option<u32>,
}

impl CorsRule {
    fn to_pb(&self) -> pb::CorsRule {
        pb::CorsRule {
            id: self.id.clone().unwrap_or_default(),
            allowed_origins: self.allowed_origins.clone(),
            allowed_methods: self.allowed_methods.clone(),
            allowed_headers: self.allowed_headers.clone(),
            expose_headers: self.expose_headers.clone(),
            max_age_seconds: self.max_age_seconds.map_or(-1, i64::from),
        }
    }

    fn from_pb(rule: pb::CorsRule) -> CorsRule {
        CorsRule {
            id: Some(rule.id).filter(|id| !id.is_empty()),
            allowed_origins: rule.allowed_origins,
            allowed_methods: rule.allowed_methods,
            allowed_headers: rule.allowed_headers,
            expose_headers: rule.expose_headers,
            max_age_seconds: u32::try_from(rule.max_age_seconds).ok(),
        }
    }
}

/// A bucket's access settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BucketAccess {
    pub acl: CannedAcl,
    pub public_access_block: Option<PublicAccessBlock>,
    /// No rules: CORS is off.
    pub cors: Vec<CorsRule>,
}

impl BucketAccess {
    pub(crate) fn from_pb(bucket: &mut pb::Bucket) -> BucketAccess {
        BucketAccess {
            acl: CannedAcl::from_pb(bucket.acl),
            public_access_block: bucket
                .public_access_block
                .as_ref()
                .map(PublicAccessBlock::from_pb),
            cors: std::mem::take(&mut bucket.cors)
                .into_iter()
                .map(CorsRule::from_pb)
                .collect(),
        }
    }

    /// Whether anonymous requests may use the bucket or, when
    /// `object_acl` is given, read that object: a public ACL that the
    /// public access block does not tell to ignore.
    pub fn allows_anonymous(&self, object_acl: Option<CannedAcl>) -> bool {
        let ignored = self
            .public_access_block
            .is_some_and(|b| b.ignore_public_acls);
        !ignored && object_acl.unwrap_or(self.acl).is_public()
    }
}

/// What [`crate::Project::set_bucket_access`] replaces; `None` keeps a part.
#[derive(Clone, Debug, Default)]
pub struct BucketAccessUpdate {
    pub acl: Option<CannedAcl>,
    /// `Some(None)` removes the block.
    pub public_access_block: Option<Option<PublicAccessBlock>>,
    /// `Some` of no rules turns CORS off.
    pub cors: Option<Vec<CorsRule>>,
}

impl BucketAccessUpdate {
    pub(crate) fn to_pb(
        &self,
        header: Option<pb::RequestHeader>,
        name: &str,
    ) -> pb::SetBucketAccessRequest {
        pb::SetBucketAccessRequest {
            header,
            name: name.to_string(),
            acl: self.acl.map(|acl| pb::AclUpdate {
                acl: acl.to_pb().into(),
            }),
            public_access_block: self.public_access_block.map(|block| {
                pb::PublicAccessBlockUpdate {
                    settings: block.map(PublicAccessBlock::to_pb),
                }
            }),
            cors: self.cors.as_ref().map(|rules| pb::CorsRules {
                rules: rules.iter().map(CorsRule::to_pb).collect(),
            }),
        }
    }
}
