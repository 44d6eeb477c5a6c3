//! Requests that carry no signature, answered as S3 answers them: a bucket
//! whose ACL is public-read may be listed by anyone, one that is
//! public-read-write written to as well, and an object version whose ACL is
//! public-read may be read by anyone; a public access block with
//! IgnorePublicAcls makes them private again. Everything else is refused:
//! 404 `NoSuchBucket` when no bucket has the name, 403 `AccessDenied` when
//! one does.
//!
//! Bucket names belong to projects, and an unsigned request names no
//! project: the bucket's owner is the first key pair of the gateway's
//! configuration (by access key id) whose project has a bucket of that
//! name. The request then acts with a grant derived from the owner's,
//! restricted to that bucket and to reading and listing (and, for a
//! public-read-write bucket, writing and deleting), so a mistake in the
//! checks here cannot reach any other bucket or bypass a retention.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use archipel_client::{BucketInfo, Error, Permissions, Project, Share};
use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;
use s3s::{s3_error, S3Result};

use crate::errors::s3_error;
use crate::grants::Grants;
use crate::{acl, cors, metrics, versions};

/// The project an unsigned request acts with, left in its extensions by
/// the access check for the S3 service.
#[derive(Clone)]
pub(crate) struct Anonymous(pub(crate) Project);

/// Operations that read a bucket (its listings), which its ACL governs.
const BUCKET_READS: [&str; 5] = [
    "HeadBucket",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "ListMultipartUploads",
];
/// Operations that write a bucket, allowed by public-read-write.
const BUCKET_WRITES: [&str; 8] = [
    "PutObject",
    "DeleteObject",
    "DeleteObjects",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListParts",
];
/// Operations that read an object version, which its own ACL governs.
const OBJECT_READS: [&str; 2] = ["GetObject", "HeadObject"];

/// Restricted projects kept open at once.
const RESTRICTED_CAPACITY: usize = 64;

/// Finds the owners of buckets named by requests without a project, and
/// keeps the restricted projects unsigned requests act with.
pub(crate) struct Public {
    grants: Arc<Grants>,
    /// Per (owner's access key id, bucket, writable): the project of the
    /// restricted grant.
    restricted: Mutex<HashMap<(String, String, bool), Project>>,
}

/// A bucket's owner: its access key id and project, and the bucket.
pub(crate) struct Owner {
    key_id: String,
    project: Project,
    pub(crate) bucket: BucketInfo,
}

impl Public {
    pub(crate) fn new(grants: Arc<Grants>) -> Public {
        Public {
            grants,
            restricted: Mutex::default(),
        }
    }

    /// The owner of `bucket` among the configured key pairs, if any.
    pub(crate) async fn owner(&self, bucket: &str) -> S3Result<Option<Owner>> {
        for (key_id, project) in self.grants.configured() {
            match project.bucket(bucket).await {
                Ok(info) => {
                    return Ok(Some(Owner {
                        key_id: key_id.to_string(),
                        project: project.clone(),
                        bucket: info,
                    }))
                }
                Err(Error::BucketNotFound(_) | Error::PermissionDenied(_)) => continue,
                Err(e) => return Err(s3_error(e)),
            }
        }
        Ok(None)
    }

    /// The project an unsigned `operation` on `path` acts with, or S3's
    /// refusal.
    async fn admit(&self, operation: &str, path: &S3Path, query: Option<&str>) -> S3Result<Owned> {
        let Some(bucket) = path.get_bucket_name() else {
            return Err(s3_error!(AccessDenied, "anonymous requests name a bucket"));
        };
        let owner = self
            .owner(bucket)
            .await?
            .ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist"))?;
        let access = &owner.bucket.access;
        let listable = access.allows_anonymous(None);
        let writable = listable && access.acl == archipel_client::CannedAcl::PublicReadWrite;
        if BUCKET_READS.contains(&operation) && listable
            || BUCKET_WRITES.contains(&operation) && writable
        {
            let project = self.restricted(&owner, writable).await?;
            return Ok(Owned { project, owner });
        }
        if let (true, S3Path::Object { key, .. }) = (OBJECT_READS.contains(&operation), path) {
            let project = self.restricted(&owner, false).await?;
            let version = versions::requested(version_id(query).as_deref())?;
            let readable = match project.stat_version(bucket, key, &version).await {
                Ok(info) => access.allows_anonymous(Some(acl::stored(&info))),
                // As S3: who may list learns that the key is not there.
                Err(Error::ObjectNotFound { .. } | Error::VersionNotFound { .. }) => listable,
                Err(e) => return Err(s3_error(e)),
            };
            if readable {
                return Ok(Owned { project, owner });
            }
        }
        Err(s3_error!(AccessDenied, "Access Denied"))
    }

    /// The owner's grant restricted to its bucket and to reading and
    /// listing, and writing and deleting if `writable`; opened once.
    async fn restricted(&self, owner: &Owner, writable: bool) -> S3Result<Project> {
        let slot = (owner.key_id.clone(), owner.bucket.name.clone(), writable);
        if let Some(project) = self.lock().get(&slot) {
            return Ok(project.clone());
        }
        let share = Share {
            permissions: Permissions {
                read: true,
                list: true,
                write: writable,
                delete: writable,
                bypass_governance: false,
            },
            prefixes: vec![(owner.bucket.name.clone(), String::new())],
            not_before: None,
            not_after: None,
        };
        let access = owner.project.share(&share).await.map_err(s3_error)?;
        let project = Project::open(&access).await.map_err(s3_error)?;
        let mut restricted = self.lock();
        // Each holds a connection to the satellite; past the bound they are
        // all let go and opened again as they are needed.
        if restricted.len() >= RESTRICTED_CAPACITY {
            restricted.clear();
        }
        restricted.insert(slot, project.clone());
        Ok(project)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, bool), Project>> {
        // A cache stays valid whatever panicked while it was locked.
        self.restricted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An admitted unsigned request's project and its bucket's owner.
struct Owned {
    project: Project,
    owner: Owner,
}

/// The `versionId` of a query string, decoded.
fn version_id(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let value = pair.strip_prefix("versionId=")?;
        percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()
            .map(|v| v.into_owned())
    })
}

/// The S3 service's access check: names the operation for the metrics,
/// admits unsigned requests as above, and finds the CORS headers of
/// requests from browsers.
pub(crate) struct AccessCheck {
    pub(crate) public: Arc<Public>,
}

#[async_trait::async_trait]
impl S3Access for AccessCheck {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        metrics::name_operation(cx);
        let origin = cors::origin(cx.headers());
        let bucket = match cx.credentials() {
            Some(credentials) => {
                let key_id = credentials.access_key.clone();
                match (&origin, cx.s3_path().get_bucket_name()) {
                    (Some(_), Some(name)) => self.signed_bucket(&key_id, name).await,
                    _ => None,
                }
            }
            None => {
                let query = cx.uri().query().map(str::to_string);
                let operation = cx.s3_op().name().to_string();
                let owned = self
                    .public
                    .admit(&operation, cx.s3_path(), query.as_deref())
                    .await?;
                cx.extensions_mut().insert(Anonymous(owned.project));
                Some(owned.owner.bucket)
            }
        };
        if let (Some(origin), Some(bucket)) = (origin, bucket) {
            let method = cx.method().as_str().to_string();
            cors::remember_response_headers(cx.extensions_mut(), &bucket, &origin, &method);
        }
        Ok(())
    }
}

impl AccessCheck {
    /// The bucket a signed request names, as its key pair sees it (for its
    /// CORS rules); none if that cannot be read, as the operation will say.
    async fn signed_bucket(&self, key_id: &str, name: &str) -> Option<BucketInfo> {
        let project = self.public.grants.project(key_id).await.ok()??;
        project.bucket(name).await.ok()
    }
}
