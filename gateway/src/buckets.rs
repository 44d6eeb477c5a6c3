//! Bucket operations: create, delete, head, list and location (versioning
//! is in `versions`).

use archipel_client::{BucketOptions, Error, Project};
use s3s::dto::{
    Bucket, BucketLocationConstraint, CreateBucketInput, CreateBucketOutput, DeleteBucketInput,
    DeleteBucketOutput, GetBucketLocationInput, GetBucketLocationOutput, HeadBucketInput,
    HeadBucketOutput, ListBucketsInput, ListBucketsOutput, Owner,
};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};

use crate::config::DEFAULT_REGION;
use crate::errors::s3_error;

/// Creates the bucket in the gateway's `region`, with unencrypted object
/// names if `unencrypted_names`.
pub(crate) async fn create(
    project: &Project,
    region: &str,
    input: CreateBucketInput,
    unencrypted_names: bool,
) -> S3Result<CreateBucketOutput> {
    let constraint = input
        .create_bucket_configuration
        .as_ref()
        .and_then(|c| c.location_constraint.as_ref())
        .map(|c| c.as_str());
    if let Some(constraint) = constraint.filter(|c| *c != region) {
        return Err(S3Error::with_message(
            S3ErrorCode::Custom("IllegalLocationConstraintException".into()),
            format!(
                "The {constraint} location constraint is incompatible for the region specific endpoint this request was sent to ({region})."
            ),
        ));
    }
    match project
        .create_bucket_with(
            &input.bucket,
            BucketOptions {
                unencrypted_names,
                object_lock: input.object_lock_enabled_for_bucket.unwrap_or(false),
            },
        )
        .await
    {
        Ok(_) => {}
        // As S3 in us-east-1: creating a bucket you own again succeeds.
        Err(Error::BucketExists(_)) if region == DEFAULT_REGION => {}
        Err(e) => return Err(s3_error(e)),
    }
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
    project.bucket(bucket).await.map_err(s3_error)?;
    Ok(())
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

/// S3's largest page of ListBuckets.
const MAX_BUCKETS: usize = 10_000;

/// The buckets in name order: with `prefix`, those starting with it; with
/// `max-buckets`, a page of at most that many after the continuation token
/// (the last name of the page before), and the token of the next page.
pub(crate) async fn list(
    project: &Project,
    access_key_id: &str,
    input: ListBucketsInput,
) -> S3Result<ListBucketsOutput> {
    let max_buckets = match input.max_buckets {
        None => MAX_BUCKETS,
        Some(n) if (1..=MAX_BUCKETS as i32).contains(&n) => n as usize,
        Some(_) => {
            return Err(s3_error!(
                InvalidArgument,
                "max-buckets must be between 1 and {MAX_BUCKETS}"
            ))
        }
    };
    let prefix = input.prefix.as_deref().unwrap_or_default();
    let after = input.continuation_token.as_deref();
    let mut buckets: Vec<_> = project
        .list_buckets()
        .await
        .map_err(s3_error)?
        .into_iter()
        .filter(|b| b.name.starts_with(prefix) && after.is_none_or(|after| b.name.as_str() > after))
        .collect();
    let truncated = buckets.len() > max_buckets;
    buckets.truncate(max_buckets);
    let continuation_token = buckets.last().filter(|_| truncated).map(|b| b.name.clone());
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
        continuation_token,
        prefix: input.prefix,
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
