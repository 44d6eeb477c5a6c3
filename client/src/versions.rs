//! Object versions as the client library shows them: a bucket's
//! [`Versioning`], which [`Version`] of a key a call means, the
//! [`Precondition`]s writes and deletes can carry, and what a version is
//! ([`VersionInfo`]). The satellite keeps each version as a row of its own
//! and checks preconditions in the transaction that writes, so a condition
//! that held when checked still holds when the write lands.

use archipel_proto::pb;
pub use archipel_proto::version::VersionId;

use crate::Error;

/// Whether a bucket keeps the versions its writes replace, as S3's
/// versioning: once enabled it can be suspended, never turned off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Versioning {
    /// Never enabled: a write replaces the key's object.
    #[default]
    Unversioned,
    /// Every write adds a version; a delete adds a delete marker.
    Enabled,
    /// Writes and deletes replace the key's null version; the versions
    /// written while it was enabled stay.
    Suspended,
}

impl Versioning {
    pub(crate) fn from_pb(value: i32) -> Versioning {
        match pb::BucketVersioning::try_from(value) {
            Ok(pb::BucketVersioning::Enabled) => Versioning::Enabled,
            Ok(pb::BucketVersioning::Suspended) => Versioning::Suspended,
            _ => Versioning::Unversioned,
        }
    }

    pub(crate) fn to_pb(self) -> pb::BucketVersioning {
        match self {
            Versioning::Unversioned => pb::BucketVersioning::Unversioned,
            Versioning::Enabled => pb::BucketVersioning::Enabled,
            Versioning::Suspended => pb::BucketVersioning::Suspended,
        }
    }
}

/// Which version of a key a call means.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Version {
    /// The key's current version.
    #[default]
    Current,
    /// The key's null version: the one written while the bucket's
    /// versioning was not enabled.
    Null,
    Id(VersionId),
}

impl Version {
    /// The selector a request carries; `None` for the current version.
    pub(crate) fn to_pb(&self) -> Option<pb::VersionSelector> {
        match self {
            Version::Current => None,
            Version::Null => Some(pb::VersionSelector {
                version_id: Vec::new(),
                null_version: true,
            }),
            Version::Id(id) => Some(pb::VersionSelector {
                version_id: id.to_bytes(),
                null_version: false,
            }),
        }
    }
}

/// A condition on a key's current object that a write or a delete needs.
/// The satellite checks it in the transaction that writes; when it does not
/// hold the call fails with [`Error::ConditionFailed`] and changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The key holds no object (nothing, or a delete marker).
    Absent,
    /// The key's current object is this version.
    Current(VersionId),
}

impl Precondition {
    pub(crate) fn to_pb(&self) -> pb::Precondition {
        match self {
            Precondition::Absent => pb::Precondition {
                absent: true,
                current_version: Vec::new(),
            },
            Precondition::Current(id) => pb::Precondition {
                absent: false,
                current_version: id.to_bytes(),
            },
        }
    }
}

/// One version of an object.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VersionInfo {
    pub id: VersionId,
    /// Written while the bucket's versioning was not enabled: the key's
    /// null version (S3 shows its id as `null`).
    pub null: bool,
    /// The bucket's versioning as the call that returned this saw it: when
    /// the version was written (uploads, copies, deletes) or read (stats,
    /// downloads).
    pub bucket_versioning: Versioning,
}

impl VersionInfo {
    /// The version `object` is, as an answer made under the bucket's
    /// `versioning` (its wire value) describes it; `None` for an object
    /// not committed yet, which has no version.
    pub(crate) fn of(object: &pb::Object, versioning: i32) -> Result<Option<VersionInfo>, Error> {
        if object.version_id.is_empty() {
            return Ok(None);
        }
        let id = VersionId::from_bytes(&object.version_id)
            .map_err(|e| Error::Protocol(format!("the satellite sent {e}")))?;
        Ok(Some(VersionInfo {
            id,
            null: object.null_version,
            bucket_versioning: Versioning::from_pb(versioning),
        }))
    }
}

/// What a delete did.
#[derive(Clone, Debug, PartialEq)]
pub struct Deleted {
    /// The version deleted for good, if any.
    pub removed: Option<VersionInfo>,
    /// The version deleted was a delete marker.
    pub removed_delete_marker: bool,
    /// The delete marker added, if any (a delete of the current version in
    /// a versioned bucket).
    pub marker: Option<VersionInfo>,
}

/// Choices for one delete.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// [`Version::Current`]: in an unversioned bucket the object goes; in a
    /// versioned one a delete marker hides it (suspended: in place of the
    /// null version). A named version is deleted for good.
    pub version: Version,
    pub precondition: Option<Precondition>,
    /// Remove a version whose governance-mode retention is not over (the
    /// grant must allow it; see [`crate::Permissions::bypass_governance`]).
    pub bypass_governance: bool,
}

/// A version in a listing of versions ([`crate::Project::list_versions`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ListedVersion {
    pub id: VersionId,
    pub null: bool,
    /// The key's current version.
    pub latest: bool,
    pub delete_marker: bool,
}
