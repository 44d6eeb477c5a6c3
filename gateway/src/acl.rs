//! S3's access control lists, canned ones only: a bucket's ACL and public
//! access block are kept by the satellite with the bucket (in the clear,
//! like its name); an object version's ACL lives in its sealed metadata
//! under `s3:acl` (absent: private), so only holders of its keys see it.
//! `x-amz-acl` on CreateBucket, PutObject, CreateMultipartUpload and
//! CopyObject sets them, `?acl` reads and replaces them, `?publicAccessBlock`
//! keeps the settings that override them. Grants to particular accounts
//! (`x-amz-grant-*`, ACL bodies that no canned ACL describes) answer
//! `NotImplemented`: a project has one owner. What public ACLs let
//! anonymous requests do is decided in [`crate::public`].

use std::collections::BTreeMap;

use archipel_client::{BucketAccessUpdate, CannedAcl, ObjectInfo, Project, PublicAccessBlock};
use s3s::dto::{
    AccessControlPolicy, BucketCannedACL, CreateBucketInput, DeletePublicAccessBlockInput,
    DeletePublicAccessBlockOutput, GetBucketAclInput, GetBucketAclOutput, GetObjectAclInput,
    GetObjectAclOutput, GetPublicAccessBlockInput, GetPublicAccessBlockOutput, Grant, Grantee,
    ObjectCannedACL, Owner, Permission, PublicAccessBlockConfiguration, PutBucketAclInput,
    PutBucketAclOutput, PutObjectAclInput, PutObjectAclOutput, PutPublicAccessBlockInput,
    PutPublicAccessBlockOutput, Type,
};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};

use crate::errors::s3_error;
use crate::{objects, versions};

/// The metadata entry holding a version's canned ACL (absent: private).
const ACL: &str = "s3:acl";
/// The groups S3's canned ACLs grant to.
const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

/// The ACL stored with a version; one that does not parse (damage, since
/// this module wrote it) grants nothing.
pub(crate) fn stored(info: &ObjectInfo) -> CannedAcl {
    info.metadata
        .get(ACL)
        .and_then(|name| CannedAcl::from_name(name))
        .unwrap_or_default()
}

/// Sets the ACL in a version's `metadata` (private takes no entry).
pub(crate) fn set(metadata: &mut BTreeMap<String, String>, acl: CannedAcl) {
    metadata.remove(ACL);
    if acl != CannedAcl::Private {
        metadata.insert(ACL.to_string(), acl.name().to_string());
    }
}

/// The canned ACL an object request's `x-amz-acl` names. The owner of an
/// object is always its bucket's owner here, so the `bucket-owner-*` ACLs
/// are private; `aws-exec-read` grants to an AWS service there is not.
fn requested_for_object(acl: Option<&ObjectCannedACL>) -> S3Result<Option<CannedAcl>> {
    let Some(acl) = acl else {
        return Ok(None);
    };
    match acl.as_str() {
        ObjectCannedACL::BUCKET_OWNER_READ | ObjectCannedACL::BUCKET_OWNER_FULL_CONTROL => {
            Ok(Some(CannedAcl::Private))
        }
        name => CannedAcl::from_name(name)
            .map(Some)
            .ok_or_else(|| s3_error!(NotImplemented, "the canned ACL {name} is not supported")),
    }
}

/// The canned ACL an upload (PutObject, CreateMultipartUpload, CopyObject:
/// the same header fields) gives its new version, private without
/// `x-amz-acl` (a copy never takes its source's); refused if it grants to
/// particular accounts or the bucket blocks public ACLs.
macro_rules! upload_acl {
    ($project:expr, $input:expr) => {
        $crate::acl::acl_of_upload(
            $project,
            &$input.bucket,
            $input.acl.as_ref(),
            &[
                $input.grant_full_control.as_ref(),
                $input.grant_read.as_ref(),
                $input.grant_read_acp.as_ref(),
                $input.grant_write_acp.as_ref(),
            ],
        )
    };
}
pub(crate) use upload_acl;

pub(crate) async fn acl_of_upload(
    project: &Project,
    bucket: &str,
    acl: Option<&ObjectCannedACL>,
    grants: &[Option<&String>],
) -> S3Result<CannedAcl> {
    refuse_grant_headers(grants)?;
    let acl = requested_for_object(acl)?.unwrap_or_default();
    refuse_if_blocked(project, bucket, Some(acl)).await?;
    Ok(acl)
}

/// The canned ACL a bucket request's `x-amz-acl` names.
fn requested_for_bucket(acl: Option<&BucketCannedACL>) -> S3Result<Option<CannedAcl>> {
    let Some(acl) = acl else {
        return Ok(None);
    };
    CannedAcl::from_name(acl.as_str())
        .map(Some)
        .ok_or_else(|| s3_error!(InvalidArgument, "unknown canned ACL {}", acl.as_str()))
}

/// Every `x-amz-grant-*` header of a bucket or `?acl` request.
macro_rules! all_grant_headers {
    ($input:expr) => {
        [
            $input.grant_full_control.as_ref(),
            $input.grant_read.as_ref(),
            $input.grant_read_acp.as_ref(),
            $input.grant_write.as_ref(),
            $input.grant_write_acp.as_ref(),
        ]
    };
}

/// Refuses grants to particular accounts (`x-amz-grant-*` headers).
fn refuse_grant_headers(grants: &[Option<&String>]) -> S3Result<()> {
    if grants.iter().any(Option::is_some) {
        return Err(s3_error!(
            NotImplemented,
            "grants to particular accounts are not supported; use a canned ACL"
        ));
    }
    Ok(())
}

/// The canned ACL an `<AccessControlPolicy>` body describes: the owner's
/// FULL_CONTROL plus the group grants of one canned ACL.
fn canned_of_policy(policy: &AccessControlPolicy) -> S3Result<CannedAcl> {
    let mut group_grants: Vec<(&str, &str)> = Vec::new();
    for grant in policy.grants.iter().flatten() {
        let permission = grant.permission.as_ref().map_or("", |p| p.as_str());
        let Some(grantee) = &grant.grantee else {
            return Err(s3_error!(MalformedACLError, "a grant names no grantee"));
        };
        match (grantee.type_.as_str(), grantee.uri.as_deref()) {
            (Type::GROUP, Some(uri)) => group_grants.push((uri, permission)),
            (Type::CANONICAL_USER, _) if permission == Permission::FULL_CONTROL => {}
            _ => {
                return Err(s3_error!(
                    NotImplemented,
                    "grants to particular accounts are not supported; use a canned ACL"
                ))
            }
        }
    }
    group_grants.sort_unstable();
    CannedAcl::ALL
        .into_iter()
        .find(|acl| {
            let mut canned: Vec<(&str, &str)> = group_grants_of(*acl)
                .iter()
                .map(|(uri, permission)| (*uri, *permission))
                .collect();
            canned.sort_unstable();
            canned == group_grants
        })
        .ok_or_else(|| {
            s3_error!(
                NotImplemented,
                "only ACLs that a canned ACL describes are supported"
            )
        })
}

/// The ACL a `?acl` request sets: its `x-amz-acl` or its body, not both.
fn one_of(canned: Option<CannedAcl>, policy: Option<&AccessControlPolicy>) -> S3Result<CannedAcl> {
    match (canned, policy) {
        (Some(acl), None) => Ok(acl),
        (None, Some(policy)) => canned_of_policy(policy),
        _ => Err(s3_error!(
            InvalidRequest,
            "name either a canned ACL or an access control policy"
        )),
    }
}

/// The (group, permission) grants of a canned ACL besides the owner's.
fn group_grants_of(acl: CannedAcl) -> &'static [(&'static str, &'static str)] {
    match acl {
        CannedAcl::Private => &[],
        CannedAcl::PublicRead => &[(ALL_USERS, Permission::READ)],
        CannedAcl::PublicReadWrite => &[
            (ALL_USERS, Permission::READ),
            (ALL_USERS, Permission::WRITE),
        ],
        CannedAcl::AuthenticatedRead => &[(AUTHENTICATED_USERS, Permission::READ)],
    }
}

fn owner(owner_id: &str) -> Owner {
    Owner {
        display_name: Some(owner_id.to_string()),
        id: Some(owner_id.to_string()),
    }
}

/// The grants a canned ACL stands for, as `GetBucketAcl` and
/// `GetObjectAcl` list them.
fn grants(acl: CannedAcl, owner_id: &str) -> Vec<Grant> {
    let owner_grant = Grant {
        grantee: Some(Grantee {
            display_name: Some(owner_id.to_string()),
            email_address: None,
            id: Some(owner_id.to_string()),
            type_: Type::from_static(Type::CANONICAL_USER),
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    };
    let group = group_grants_of(acl).iter().map(|(uri, permission)| Grant {
        grantee: Some(Grantee {
            display_name: None,
            email_address: None,
            id: None,
            type_: Type::from_static(Type::GROUP),
            uri: Some(uri.to_string()),
        }),
        permission: Some(Permission::from_static(permission)),
    });
    std::iter::once(owner_grant).chain(group).collect()
}

/// Refuses to set a public `acl` in a bucket whose public access block
/// says BlockPublicAcls, as S3 does.
async fn refuse_if_blocked(
    project: &Project,
    bucket: &str,
    acl: Option<CannedAcl>,
) -> S3Result<()> {
    if !acl.is_some_and(CannedAcl::is_public) {
        return Ok(());
    }
    let info = project.bucket(bucket).await.map_err(s3_error)?;
    if info
        .access
        .public_access_block
        .is_some_and(|b| b.block_public_acls)
    {
        return Err(s3_error!(
            AccessDenied,
            "the bucket's public access block refuses public ACLs"
        ));
    }
    Ok(())
}

/// The ACL CreateBucket's `x-amz-acl` asks for, checked before the bucket
/// is created.
pub(crate) fn requested_on_create(input: &CreateBucketInput) -> S3Result<Option<CannedAcl>> {
    refuse_grant_headers(&all_grant_headers!(input))?;
    requested_for_bucket(input.acl.as_ref())
}

/// Gives a new bucket the ACL its CreateBucket asked for (a new bucket has
/// no public access block yet).
pub(crate) async fn set_on_create(
    project: &Project,
    bucket: &str,
    acl: Option<CannedAcl>,
) -> S3Result<()> {
    let Some(acl) = acl.filter(|acl| *acl != CannedAcl::Private) else {
        return Ok(());
    };
    let update = BucketAccessUpdate {
        acl: Some(acl),
        ..BucketAccessUpdate::default()
    };
    update_access(project, bucket, &update).await?;
    Ok(())
}

pub(crate) async fn get_bucket(
    project: &Project,
    owner_id: &str,
    input: GetBucketAclInput,
) -> S3Result<GetBucketAclOutput> {
    let info = project.bucket(&input.bucket).await.map_err(s3_error)?;
    Ok(GetBucketAclOutput {
        grants: Some(grants(info.access.acl, owner_id)),
        owner: Some(owner(owner_id)),
    })
}

pub(crate) async fn put_bucket(
    project: &Project,
    input: PutBucketAclInput,
) -> S3Result<PutBucketAclOutput> {
    refuse_grant_headers(&all_grant_headers!(input))?;
    let acl = one_of(
        requested_for_bucket(input.acl.as_ref())?,
        input.access_control_policy.as_ref(),
    )?;
    refuse_if_blocked(project, &input.bucket, Some(acl)).await?;
    let update = BucketAccessUpdate {
        acl: Some(acl),
        ..BucketAccessUpdate::default()
    };
    update_access(project, &input.bucket, &update).await?;
    Ok(PutBucketAclOutput::default())
}

pub(crate) async fn get_object(
    project: &Project,
    owner_id: &str,
    input: GetObjectAclInput,
) -> S3Result<GetObjectAclOutput> {
    let version = versions::requested(input.version_id.as_deref())?;
    let info = objects::stat(project, (&input.bucket, &input.key, &version)).await?;
    Ok(GetObjectAclOutput {
        grants: Some(grants(stored(&info), owner_id)),
        owner: Some(owner(owner_id)),
        request_charged: None,
    })
}

pub(crate) async fn put_object(
    project: &Project,
    input: PutObjectAclInput,
) -> S3Result<PutObjectAclOutput> {
    refuse_grant_headers(&all_grant_headers!(input))?;
    let acl = one_of(
        requested_for_object(input.acl.as_ref())?,
        input.access_control_policy.as_ref(),
    )?;
    refuse_if_blocked(project, &input.bucket, Some(acl)).await?;
    let version = versions::requested(input.version_id.as_deref())?;
    project
        .update_metadata(&input.bucket, &input.key, &version, |metadata| {
            set(metadata, acl)
        })
        .await
        .map_err(s3_error)?;
    Ok(PutObjectAclOutput::default())
}

/// Replaces what `update` names of a bucket's access settings.
pub(crate) async fn update_access(
    project: &Project,
    bucket: &str,
    update: &BucketAccessUpdate,
) -> S3Result<()> {
    project
        .set_bucket_access(bucket, update)
        .await
        .map_err(s3_error)?;
    Ok(())
}

/// S3's answer when a bucket has no public access block.
fn no_public_access_block() -> S3Error {
    let mut error = S3Error::with_message(
        S3ErrorCode::Custom("NoSuchPublicAccessBlockConfiguration".into()),
        "The public access block configuration was not found",
    );
    error.set_status_code(http::StatusCode::NOT_FOUND);
    error
}

pub(crate) async fn get_public_access_block(
    project: &Project,
    input: GetPublicAccessBlockInput,
) -> S3Result<GetPublicAccessBlockOutput> {
    let info = project.bucket(&input.bucket).await.map_err(s3_error)?;
    let block = info
        .access
        .public_access_block
        .ok_or_else(no_public_access_block)?;
    Ok(GetPublicAccessBlockOutput {
        public_access_block_configuration: Some(PublicAccessBlockConfiguration {
            block_public_acls: Some(block.block_public_acls),
            block_public_policy: Some(block.block_public_policy),
            ignore_public_acls: Some(block.ignore_public_acls),
            restrict_public_buckets: Some(block.restrict_public_buckets),
        }),
    })
}

pub(crate) async fn put_public_access_block(
    project: &Project,
    input: PutPublicAccessBlockInput,
) -> S3Result<PutPublicAccessBlockOutput> {
    let settings = input.public_access_block_configuration;
    let block = PublicAccessBlock {
        block_public_acls: settings.block_public_acls.unwrap_or(false),
        ignore_public_acls: settings.ignore_public_acls.unwrap_or(false),
        block_public_policy: settings.block_public_policy.unwrap_or(false),
        restrict_public_buckets: settings.restrict_public_buckets.unwrap_or(false),
    };
    let update = BucketAccessUpdate {
        public_access_block: Some(Some(block)),
        ..BucketAccessUpdate::default()
    };
    update_access(project, &input.bucket, &update).await?;
    Ok(PutPublicAccessBlockOutput::default())
}

pub(crate) async fn delete_public_access_block(
    project: &Project,
    input: DeletePublicAccessBlockInput,
) -> S3Result<DeletePublicAccessBlockOutput> {
    let update = BucketAccessUpdate {
        public_access_block: Some(None),
        ..BucketAccessUpdate::default()
    };
    update_access(project, &input.bucket, &update).await?;
    Ok(DeletePublicAccessBlockOutput::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_canned_acl_reads_back_from_its_grants() {
        for acl in CannedAcl::ALL {
            let policy = AccessControlPolicy {
                grants: Some(grants(acl, "OWNER")),
                owner: Some(owner("OWNER")),
            };
            assert_eq!(canned_of_policy(&policy).unwrap(), acl);
        }
        let mut odd = grants(CannedAcl::PublicRead, "OWNER");
        odd[1].permission = Some(Permission::from_static(Permission::WRITE));
        let policy = AccessControlPolicy {
            grants: Some(odd),
            owner: None,
        };
        assert!(canned_of_policy(&policy).is_err());
    }

    #[test]
    fn stored_acls_round_trip_and_private_takes_no_entry() {
        let mut metadata = BTreeMap::new();
        set(&mut metadata, CannedAcl::PublicRead);
        assert_eq!(metadata.get(ACL).map(String::as_str), Some("public-read"));
        set(&mut metadata, CannedAcl::Private);
        assert!(metadata.is_empty());
        let owner_only = requested_for_object(Some(&ObjectCannedACL::from_static(
            ObjectCannedACL::BUCKET_OWNER_FULL_CONTROL,
        )))
        .unwrap();
        assert_eq!(owner_only, Some(CannedAcl::Private));
        let exec = ObjectCannedACL::from_static(ObjectCannedACL::AWS_EXEC_READ);
        assert!(requested_for_object(Some(&exec)).is_err());
    }
}
