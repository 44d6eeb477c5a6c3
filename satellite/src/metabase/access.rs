//! A bucket's access settings, as S3 has them: its canned ACL, its public
//! access block and its CORS rules. They are kept in the clear, like the
//! bucket's name, because the S3 gateway applies them to requests that
//! carry no key of the project (anonymous reads, browsers' preflights).
//! The satellite stores and bounds them; it serves no anonymous request.

use archipel_proto::pb;
use prost::Message;

use super::objects::{Bucket, BucketRow};
use super::{Metabase, Pool};
use crate::{Error, Result};

/// Who besides the owner may read (and write) a bucket or an object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CannedAcl {
    #[default]
    Private,
    PublicRead,
    PublicReadWrite,
    AuthenticatedRead,
}

impl CannedAcl {
    fn from_db(stored: i64) -> Result<CannedAcl> {
        match stored {
            0 => Ok(CannedAcl::Private),
            1 => Ok(CannedAcl::PublicRead),
            2 => Ok(CannedAcl::PublicReadWrite),
            3 => Ok(CannedAcl::AuthenticatedRead),
            other => Err(Error::Corrupt(format!("canned ACL {other}"))),
        }
    }

    fn to_db(self) -> i64 {
        match self {
            CannedAcl::Private => 0,
            CannedAcl::PublicRead => 1,
            CannedAcl::PublicReadWrite => 2,
            CannedAcl::AuthenticatedRead => 3,
        }
    }
}

/// S3's public access block: settings that override public ACLs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublicAccessBlock {
    pub block_public_acls: bool,
    pub ignore_public_acls: bool,
    pub block_public_policy: bool,
    pub restrict_public_buckets: bool,
}

impl PublicAccessBlock {
    /// The block stored as bits (see migration 0014), none for -1.
    fn from_db(stored: i64) -> Result<Option<PublicAccessBlock>> {
        match stored {
            -1 => Ok(None),
            0..=15 => Ok(Some(PublicAccessBlock {
                block_public_acls: stored & 1 != 0,
                ignore_public_acls: stored & 2 != 0,
                block_public_policy: stored & 4 != 0,
                restrict_public_buckets: stored & 8 != 0,
            })),
            other => Err(Error::Corrupt(format!("public access block {other}"))),
        }
    }

    fn to_db(block: Option<PublicAccessBlock>) -> i64 {
        block.map_or(-1, |b| {
            i64::from(b.block_public_acls)
                | i64::from(b.ignore_public_acls) << 1
                | i64::from(b.block_public_policy) << 2
                | i64::from(b.restrict_public_buckets) << 3
        })
    }
}

/// A bucket's access settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BucketAccess {
    pub acl: CannedAcl,
    pub public_access_block: Option<PublicAccessBlock>,
    /// None: CORS is off.
    pub cors: Vec<pb::CorsRule>,
}

// The CORS rules hold only strings and integers (prost derives no `Eq`).
impl Eq for BucketAccess {}

impl BucketAccess {
    pub(super) fn from_row(row: &BucketRow) -> Result<BucketAccess> {
        let cors = pb::CorsRules::decode(row.cors.as_slice())
            .map_err(|e| Error::Corrupt(format!("the CORS rules of bucket {:?}: {e}", row.name)))?
            .rules;
        Ok(BucketAccess {
            acl: CannedAcl::from_db(row.acl)?,
            public_access_block: PublicAccessBlock::from_db(row.public_access_block)?,
            cors,
        })
    }
}

/// What a [`Metabase::set_bucket_access`] replaces; `None` keeps the part.
#[derive(Clone, Debug, Default)]
pub struct BucketAccessUpdate {
    pub acl: Option<CannedAcl>,
    /// `Some(None)` removes the block.
    pub public_access_block: Option<Option<PublicAccessBlock>>,
    /// `Some` of no rules turns CORS off.
    pub cors: Option<Vec<pb::CorsRule>>,
}

/// S3's bounds on a CORS configuration: rules, and the size of its XML
/// (64 KiB), which the encoded rules stay under too.
const MAX_CORS_RULES: usize = 100;
const MAX_CORS_BYTES: usize = 64 * 1024;
const CORS_METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// Checks CORS rules as S3 does, so that what is stored is what a gateway
/// can apply: each rule names at least one origin and one method of S3's
/// five, and origins and allowed headers have at most one wildcard.
fn check_cors_rules(rules: &[pb::CorsRule]) -> Result<()> {
    let invalid = |why: String| Err(Error::InvalidArgument(why));
    if rules.len() > MAX_CORS_RULES {
        return invalid(format!(
            "a CORS configuration has at most {MAX_CORS_RULES} rules"
        ));
    }
    let encoded = pb::CorsRules {
        rules: rules.to_vec(),
    }
    .encoded_len();
    if encoded > MAX_CORS_BYTES {
        return invalid(format!(
            "a CORS configuration is at most {MAX_CORS_BYTES} bytes"
        ));
    }
    for rule in rules {
        if rule.allowed_origins.is_empty() || rule.allowed_methods.is_empty() {
            return invalid("a CORS rule names at least one origin and one method".into());
        }
        if let Some(method) = rule
            .allowed_methods
            .iter()
            .find(|m| !CORS_METHODS.contains(&m.as_str()))
        {
            return invalid(format!(
                "the CORS method {method:?} is none of {CORS_METHODS:?}"
            ));
        }
        let wildcards = |s: &&String| s.matches('*').count() > 1;
        if let Some(pattern) = rule
            .allowed_origins
            .iter()
            .chain(&rule.allowed_headers)
            .find(wildcards)
        {
            return invalid(format!("{pattern:?} has more than one wildcard"));
        }
    }
    Ok(())
}

impl Metabase {
    /// Replaces the parts of a bucket's access settings that `update`
    /// names, each in one column, so that concurrent updates of different
    /// parts never undo each other.
    pub async fn set_bucket_access(
        &self,
        project: &[u8],
        name: &str,
        update: &BucketAccessUpdate,
    ) -> Result<Bucket> {
        let mut columns = Vec::new();
        if let Some(acl) = update.acl {
            columns.push(("acl", Value::Integer(acl.to_db())));
        }
        if let Some(block) = update.public_access_block {
            let stored = PublicAccessBlock::to_db(block);
            columns.push(("public_access_block", Value::Integer(stored)));
        }
        if let Some(rules) = &update.cors {
            check_cors_rules(rules)?;
            let encoded = pb::CorsRules {
                rules: rules.clone(),
            }
            .encode_to_vec();
            columns.push(("cors", Value::Bytes(encoded)));
        }
        if columns.is_empty() {
            return self.get_bucket(project, name).await;
        }
        let assignments: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (column, _))| format!("{column} = ${}", i + 3))
            .collect();
        let sql = format!(
            "UPDATE buckets SET {} WHERE project_id = $1 AND name = $2",
            assignments.join(", ")
        );
        let updated = on_pool!(self, pool => {
            let _writing = self.writing().await;
            let mut query = sqlx::query(&sql).bind(project).bind(name);
            for (_, value) in &columns {
                query = match value {
                    Value::Integer(n) => query.bind(*n),
                    Value::Bytes(b) => query.bind(b.clone()),
                };
            }
            query.execute(pool).await?.rows_affected()
        });
        if updated == 0 {
            return Err(Error::NotFound(format!("bucket {name:?}")));
        }
        self.get_bucket(project, name).await
    }
}

/// A column's new value in [`Metabase::set_bucket_access`].
enum Value {
    Integer(i64),
    Bytes(Vec<u8>),
}
