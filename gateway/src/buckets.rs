//! Bucket operations: create, delete, head, list, location and versioning
//! (always off: objects have one version).

use archipel_client::{BucketOptions, Project};
use s3s::dto::{
    Bucket, BucketLocationConstraint, CreateBucketInput, CreateBucketOutput, DeleteBucketInput,
    DeleteBucketOutput, GetBucketLocationInput, GetBucketLocationOutput, HeadBucketInput,
    HeadBucketOutput, ListBucketsOutput, Owner,
};
use s3s::{s3_error, S3Result};

use crate::config::DEFAULT_REGION;
use crate::errors::s3_error;

/// Creates the bucket, with unencrypted object names if `unencrypted_names`.
pub(crate) async fn create(
    project: &Project,
    input: CreateBucketInput,
    unencrypted_names: bool,
) -> S3Result<CreateBucketOutput> {
    project
        .create_bucket_with(&input.bucket, BucketOptions { unencrypted_names })
        .await
        .map_err(s3_error)?;
    Ok(CreateBucketOutput {
        location: Some(format!("/{}", input.bucket)),
    })
}

pub(crate) async fn delete(
    project: &Project,
    input: DeleteBucketInput,
) -> S3Result<DeleteBucketOutput> {
    project
        .delete_bucket(&input.bucket)
        .await
        .map_err(s3_error)?;
    Ok(DeleteBucketOutput::default())
}

/// `NoSuchBucket` unless `bucket` exists.
pub(crate) async fn ensure_exists(project: &Project, bucket: &str) -> S3Result<()> {
    let buckets = project.list_buckets().await.map_err(s3_error)?;
    if buckets.iter().any(|b| b.name == bucket) {
        Ok(())
    } else {
        Err(s3_error!(NoSuchBucket, "bucket {bucket:?} does not exist"))
    }
}

pub(crate) async fn head(
    project: &Project,
    region: &str,
    input: HeadBucketInput,
) -> S3Result<HeadBucketOutput> {
    ensure_exists(project, &input.bucket).await?;
    Ok(HeadBucketOutput {
        bucket_region: Some(region.to_string()),
        ..Default::default()
    })
}

pub(crate) async fn list(project: &Project, access_key_id: &str) -> S3Result<ListBucketsOutput> {
    let buckets = project.list_buckets().await.map_err(s3_error)?;
    Ok(ListBucketsOutput {
        buckets: Some(
            buckets
                .into_iter()
                .map(|b| Bucket {
                    name: Some(b.name),
                    creation_date: crate::metadata::timestamp(b.created),
                    ..Default::default()
                })
                .collect(),
        ),
        owner: Some(Owner {
            display_name: Some(access_key_id.to_string()),
            id: Some(access_key_id.to_string()),
        }),
        ..Default::default()
    })
}

/// S3 reports the default region as an empty location constraint.
pub(crate) async fn location(
    project: &Project,
    region: &str,
    input: GetBucketLocationInput,
) -> S3Result<GetBucketLocationOutput> {
    ensure_exists(project, &input.bucket).await?;
    Ok(GetBucketLocationOutput {
        location_constraint: (region != DEFAULT_REGION)
            .then(|| BucketLocationConstraint::from(region.to_string())),
    })
}
