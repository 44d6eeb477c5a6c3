//! The s3s `S3` implementation: picks the project of the access key that
//! signed the request and hands the operation to its area's module.
//! Operations not listed here answer `NotImplemented` (the s3s default).

use std::sync::Arc;

use archipel_client::Project;
use s3s::auth::Credentials;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

use crate::checksums::Checksummer;
use crate::conditional::WriteCondition;
use crate::grants::Grants;
use crate::listing::{Lister, Snapshots};
use crate::public::Anonymous;
use crate::{
    acl, attributes, buckets, config, copy, cors, listing, locks, multipart, objects, tagging,
    versions,
};

pub(crate) struct Gateway {
    /// The project of every key pair, configured or registered.
    pub(crate) grants: Arc<Grants>,
    pub(crate) region: String,
    /// Listings kept between the pages of walks over encrypted names.
    pub(crate) snapshots: Snapshots,
    /// Which new buckets get unencrypted names (`Config::unencrypted_names`).
    pub(crate) unencrypted_names: Vec<String>,
}

impl Gateway {
    /// The project of the access key that signed the request (s3s has
    /// already checked the signature), or for an unsigned one, the project
    /// the access check admitted it with (see [`crate::public`]).
    async fn project<T>(&self, req: &S3Request<T>) -> S3Result<Project> {
        let Some(credentials) = &req.credentials else {
            return req
                .extensions
                .get::<Anonymous>()
                .map(|anonymous| anonymous.0.clone())
                .ok_or_else(|| s3_error!(AccessDenied, "Access Denied"));
        };
        let key_id = credentials.access_key.as_str();
        match self.grants.project(key_id).await {
            Ok(Some(project)) => Ok(project),
            Ok(None) => Err(s3_error!(InvalidAccessKeyId)),
            Err(e) => {
                // The grant stays out of the answer; the log says what failed.
                tracing::warn!("cannot act for access key id {key_id}: {e}");
                Err(s3_error!(
                    ServiceUnavailable,
                    "the gateway cannot open the project of this access key"
                ))
            }
        }
    }
}

/// The access key id that signed a request ("" for none): the owner ACLs
/// and listings name.
fn key_id(credentials: &Option<Credentials>) -> &str {
    credentials.as_ref().map_or("", |c| c.access_key.as_str())
}

/// Lists for the access key that signed the request.
fn lister<'a>(
    gateway: &'a Gateway,
    project: &'a Project,
    credentials: &'a Option<Credentials>,
) -> Lister<'a> {
    Lister {
        project,
        access_key: key_id(credentials),
        snapshots: &gateway.snapshots,
    }
}

fn ok<T>(output: T) -> S3Result<S3Response<T>> {
    Ok(S3Response::new(output))
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let project = &self.project(&req).await?;
        let plain = config::unencrypted_names_for(&self.unencrypted_names, &req.input.bucket);
        let bucket = req.input.bucket.clone();
        let acl = acl::requested_on_create(&req.input)?;
        let created = buckets::create(project, &self.region, req.input, plain).await?;
        acl::set_on_create(project, &bucket, acl).await?;
        ok(created)
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let project = &self.project(&req).await?;
        ok(buckets::delete(project, req.input).await?)
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let project = &self.project(&req).await?;
        ok(buckets::head(project, &self.region, req.input).await?)
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let project = &self.project(&req).await?;
        ok(buckets::list(project, key_id(&req.credentials), req.input).await?)
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let project = &self.project(&req).await?;
        ok(buckets::location(project, &self.region, req.input).await?)
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let project = &self.project(&req).await?;
        let checksum = Checksummer::from_put(&req.input, req.trailing_headers.as_ref())?;
        let precondition = match WriteCondition::from_put(&req.input)? {
            Some(condition) => Some(
                condition
                    .check(project, &req.input.bucket, &req.input.key)
                    .await?,
            ),
            None => None,
        };
        ok(objects::put(project, req.input, checksum, precondition).await?)
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let project = &self.project(&req).await?;
        ok(objects::get(project, req.input).await?)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let project = &self.project(&req).await?;
        ok(objects::head(project, req.input).await?)
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let project = &self.project(&req).await?;
        ok(objects::delete(project, req.input).await?)
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let project = &self.project(&req).await?;
        ok(objects::delete_many(project, req.input).await?)
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let project = self.project(&req).await?;
        let lister = lister(self, &project, &req.credentials);
        ok(listing::list_v2(&lister, req.input).await?)
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let project = self.project(&req).await?;
        let lister = lister(self, &project, &req.credentials);
        ok(listing::list_v1(&lister, req.input).await?)
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let project = &self.project(&req).await?;
        ok(copy::copy(project, req.input).await?)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let project = &self.project(&req).await?;
        ok(multipart::create(project, req.input).await?)
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let project = &self.project(&req).await?;
        let checksum = Checksummer::from_part(&req.input, req.trailing_headers.as_ref())?;
        ok(multipart::upload_part(project, req.input, checksum).await?)
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let project = &self.project(&req).await?;
        ok(multipart::upload_part_copy(project, req.input).await?)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let project = &self.project(&req).await?;
        ok(multipart::complete(project, req.input).await?)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let project = &self.project(&req).await?;
        ok(multipart::abort(project, req.input).await?)
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let project = &self.project(&req).await?;
        ok(multipart::list_parts(project, req.input).await?)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let project = &self.project(&req).await?;
        ok(multipart::list_uploads(project, req.input).await?)
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let project = &self.project(&req).await?;
        ok(versions::get_bucket_versioning(project, req.input).await?)
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let project = &self.project(&req).await?;
        ok(versions::put_bucket_versioning(project, req.input).await?)
    }

    async fn get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        let project = &self.project(&req).await?;
        ok(locks::get_configuration(project, req.input).await?)
    }

    async fn put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        let project = &self.project(&req).await?;
        ok(locks::put_configuration(project, req.input).await?)
    }

    async fn get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        let project = &self.project(&req).await?;
        ok(locks::get_retention(project, req.input).await?)
    }

    async fn put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        let project = &self.project(&req).await?;
        ok(locks::put_retention(project, req.input).await?)
    }

    async fn get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        let project = &self.project(&req).await?;
        ok(locks::get_legal_hold(project, req.input).await?)
    }

    async fn put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        let project = &self.project(&req).await?;
        ok(locks::put_legal_hold(project, req.input).await?)
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let project = &self.project(&req).await?;
        ok(tagging::get(project, req.input).await?)
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let project = &self.project(&req).await?;
        ok(tagging::put(project, req.input).await?)
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let project = &self.project(&req).await?;
        ok(tagging::delete(project, req.input).await?)
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let project = &self.project(&req).await?;
        ok(attributes::get(project, req.input).await?)
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let project = &self.project(&req).await?;
        ok(tagging::get_bucket(project, req.input).await?)
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let project = &self.project(&req).await?;
        ok(tagging::put_bucket(project, req.input).await?)
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        let project = &self.project(&req).await?;
        ok(tagging::delete_bucket(project, req.input).await?)
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let project = self.project(&req).await?;
        let lister = lister(self, &project, &req.credentials);
        ok(listing::list_versions(&lister, req.input).await?)
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        let project = &self.project(&req).await?;
        ok(acl::get_bucket(project, key_id(&req.credentials), req.input).await?)
    }

    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let project = &self.project(&req).await?;
        ok(acl::put_bucket(project, req.input).await?)
    }

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let project = &self.project(&req).await?;
        ok(acl::get_object(project, key_id(&req.credentials), req.input).await?)
    }

    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        let project = &self.project(&req).await?;
        ok(acl::put_object(project, req.input).await?)
    }

    async fn get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
        let project = &self.project(&req).await?;
        ok(acl::get_public_access_block(project, req.input).await?)
    }

    async fn put_public_access_block(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
        let project = &self.project(&req).await?;
        ok(acl::put_public_access_block(project, req.input).await?)
    }

    async fn delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
        let project = &self.project(&req).await?;
        ok(acl::delete_public_access_block(project, req.input).await?)
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let project = &self.project(&req).await?;
        ok(cors::get(project, req.input).await?)
    }

    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let project = &self.project(&req).await?;
        ok(cors::put(project, req.input).await?)
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        let project = &self.project(&req).await?;
        ok(cors::delete(project, req.input).await?)
    }
}
