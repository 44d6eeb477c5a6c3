//! A thin wrapper over the satellite's Metainfo gRPC client: one TLS
//! connection pinned to the satellite id of the access grant,
//! the API key put into every request, and statuses turned into [`Error`]s that
//! name the bucket or object concerned. It also carries the client's pool of
//! node channels, so that everything a transfer needs comes with it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use archipel_proto::pb::metainfo_client::MetainfoClient;
use archipel_proto::pb::*;
use archipel_proto::{transport, NodeId, NodeUrl};
use tonic::transport::Channel;
use tracing::Instrument;

use crate::error::{Error, Subject};
use crate::nodes::NodePool;
use crate::versions::{DeleteOptions, Precondition, Version};

/// Longest a satellite call may take, listings of whole levels included.
const METAINFO_DEADLINE: Duration = Duration::from_secs(120);
/// Largest satellite answer accepted (long listings).
const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Opens a channel to `address` (host:port) over TLS, refusing any peer but
/// `expected`, and failing fast if nobody answers.
pub(crate) async fn connect(
    address: &str,
    expected: NodeId,
    deadline: Option<Duration>,
) -> Result<Channel, String> {
    let mut endpoint = transport::endpoint(address).map_err(|e| e.to_string())?;
    if let Some(deadline) = deadline {
        endpoint = endpoint.timeout(deadline);
    }
    transport::connect(&endpoint, expected)
        .await
        .map_err(|e| archipel_proto::error_chain(&e))
}

/// What the satellite said about new objects when it last began one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UploadLimits {
    pub(crate) max_segment_size: u64,
    pub(crate) inline_threshold: u64,
}

#[derive(Clone)]
pub(crate) struct Metainfo {
    client: MetainfoClient<Channel>,
    api_key: String,
    address: String,
    /// Channels to the storage nodes that transfers reach.
    pub(crate) nodes: NodePool,
    upload_limits: Arc<Mutex<Option<UploadLimits>>>,
}

/// Whether a call failed before its request left this process: the
/// connection it was queued on closed (the satellite restarted, say), so
/// the satellite never saw it and sending it again is safe. A cancellation
/// the satellite sent has no local cause; one by the call's deadline may
/// have been processed, so neither is sent again.
fn never_sent(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Cancelled {
        return false;
    }
    let mut cause = std::error::Error::source(status);
    let mut local = false;
    while let Some(error) = cause {
        if error.is::<tonic::TimeoutExpired>() {
            return false;
        }
        local = true;
        cause = error.source();
    }
    local
}

/// Makes a call, sent once more on a fresh connection if the first attempt
/// never left (see [`never_sent`]).
macro_rules! call {
    ($self:ident, $method:ident, $request:expr, $subject:expr) => {{
        let request = $request;
        let mut client = $self.client.clone();
        let span = tracing::debug_span!("satellite call", method = stringify!($method));
        let answer = async {
            let answer = client.$method(request.clone()).await;
            match answer {
                Err(status) if never_sent(&status) => client.$method(request).await,
                answer => answer,
            }
        }
        .instrument(span)
        .await;
        answer
            .map(tonic::Response::into_inner)
            .map_err(|status| Error::from_status(status, &$self.address, $subject))
    }};
}

impl Metainfo {
    pub(crate) async fn connect(satellite: &NodeUrl, api_key: &str) -> Result<Metainfo, Error> {
        let address = &satellite.address;
        let channel = connect(address, satellite.id, Some(METAINFO_DEADLINE))
            .await
            .map_err(|reason| Error::SatelliteUnreachable {
                address: address.to_string(),
                reason,
            })?;
        Ok(Metainfo {
            client: MetainfoClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            api_key: api_key.to_string(),
            address: address.to_string(),
            nodes: NodePool::default(),
            upload_limits: Arc::default(),
        })
    }

    fn limits(&self) -> MutexGuard<'_, Option<UploadLimits>> {
        // Two numbers stay valid whatever panicked while they were locked.
        self.upload_limits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The satellite's upload limits as last heard, if they were.
    pub(crate) fn upload_limits(&self) -> Option<UploadLimits> {
        *self.limits()
    }

    pub(crate) fn remember_upload_limits(&self, limits: UploadLimits) {
        *self.limits() = Some(limits);
    }

    /// Forgets limits the satellite has shown to be out of date.
    pub(crate) fn forget_upload_limits(&self) {
        *self.limits() = None;
    }

    pub(crate) fn header(&self) -> Option<RequestHeader> {
        Some(RequestHeader {
            api_key: self.api_key.clone(),
        })
    }

    pub(crate) async fn project_info(&self) -> Result<ProjectInfoResponse, Error> {
        let request = ProjectInfoRequest {
            header: self.header(),
        };
        call!(self, get_project_info, request, Subject::Project)
    }

    /// Revokes `api_key` and every key restricted from it.
    pub(crate) async fn revoke_api_key(&self, api_key: &str) -> Result<(), Error> {
        let request = RevokeApiKeyRequest {
            header: self.header(),
            api_key: api_key.to_string(),
        };
        call!(self, revoke_api_key, request, Subject::Project).map(|_| ())
    }

    pub(crate) async fn create_bucket(
        &self,
        name: &str,
        plain_names: bool,
        object_lock: bool,
    ) -> Result<BucketResponse, Error> {
        let request = CreateBucketRequest {
            header: self.header(),
            name: name.to_string(),
            plain_names,
            object_lock,
        };
        call!(self, create_bucket, request, Subject::Bucket(name))
    }

    pub(crate) async fn get_bucket(&self, name: &str) -> Result<BucketResponse, Error> {
        let request = GetBucketRequest {
            header: self.header(),
            name: name.to_string(),
        };
        call!(self, get_bucket, request, Subject::Bucket(name))
    }

    pub(crate) async fn delete_bucket(&self, name: &str) -> Result<(), Error> {
        let request = DeleteBucketRequest {
            header: self.header(),
            name: name.to_string(),
        };
        call!(self, delete_bucket, request, Subject::Bucket(name)).map(|_| ())
    }

    pub(crate) async fn set_bucket_versioning(
        &self,
        name: &str,
        versioning: BucketVersioning,
    ) -> Result<BucketResponse, Error> {
        let request = SetBucketVersioningRequest {
            header: self.header(),
            name: name.to_string(),
            versioning: versioning.into(),
        };
        call!(self, set_bucket_versioning, request, Subject::Bucket(name))
    }

    pub(crate) async fn set_bucket_object_lock(
        &self,
        name: &str,
        object_lock: BucketObjectLock,
    ) -> Result<BucketResponse, Error> {
        let request = SetBucketObjectLockRequest {
            header: self.header(),
            name: name.to_string(),
            object_lock: Some(object_lock),
        };
        call!(self, set_bucket_object_lock, request, Subject::Bucket(name))
    }

    pub(crate) async fn set_bucket_tags(
        &self,
        name: &str,
        request: SetBucketTagsRequest,
    ) -> Result<BucketResponse, Error> {
        call!(self, set_bucket_tags, request, Subject::Bucket(name))
    }

    pub(crate) async fn set_bucket_access(
        &self,
        name: &str,
        request: SetBucketAccessRequest,
    ) -> Result<BucketResponse, Error> {
        call!(self, set_bucket_access, request, Subject::Bucket(name))
    }

    pub(crate) async fn set_object_retention(
        &self,
        key: &str,
        request: SetObjectRetentionRequest,
    ) -> Result<SetObjectLockResponse, Error> {
        let bucket = request.bucket.clone();
        let subject = Subject::Object {
            bucket: &bucket,
            key,
        };
        call!(self, set_object_retention, request, subject)
    }

    pub(crate) async fn update_object_metadata(
        &self,
        key: &str,
        request: UpdateObjectMetadataRequest,
    ) -> Result<UpdateObjectMetadataResponse, Error> {
        let bucket = request.bucket.clone();
        let subject = Subject::Object {
            bucket: &bucket,
            key,
        };
        call!(self, update_object_metadata, request, subject)
    }

    pub(crate) async fn set_object_legal_hold(
        &self,
        key: &str,
        request: SetObjectLegalHoldRequest,
    ) -> Result<SetObjectLockResponse, Error> {
        let bucket = request.bucket.clone();
        let subject = Subject::Object {
            bucket: &bucket,
            key,
        };
        call!(self, set_object_legal_hold, request, subject)
    }

    /// Every bucket of the project, following the satellite's pages.
    pub(crate) async fn list_buckets(&self) -> Result<Vec<Bucket>, Error> {
        let mut buckets: Vec<Bucket> = Vec::new();
        loop {
            let request = ListBucketsRequest {
                header: self.header(),
                cursor: buckets.last().map(|b| b.name.clone()).unwrap_or_default(),
                limit: 0,
            };
            let page = call!(self, list_buckets, request, Subject::Project)?;
            let progressed = !page.buckets.is_empty();
            buckets.extend(page.buckets);
            if !page.more {
                return Ok(buckets);
            }
            if !progressed {
                return Err(Error::Protocol(
                    "a bucket listing page was empty but claimed more".into(),
                ));
            }
        }
    }

    pub(crate) async fn begin_object(
        &self,
        request: BeginObjectRequest,
        key: &str,
    ) -> Result<BeginObjectResponse, Error> {
        let bucket = request.bucket.clone();
        call!(
            self,
            begin_object,
            request,
            Subject::Object {
                bucket: &bucket,
                key
            }
        )
    }

    pub(crate) async fn begin_segment(
        &self,
        request: BeginSegmentRequest,
    ) -> Result<BeginSegmentResponse, Error> {
        call!(self, begin_segment, request, Subject::Project)
    }

    pub(crate) async fn commit_segment(&self, request: CommitSegmentRequest) -> Result<(), Error> {
        call!(self, commit_segment, request, Subject::Project).map(|_| ())
    }

    pub(crate) async fn make_inline_segment(
        &self,
        request: MakeInlineSegmentRequest,
    ) -> Result<(), Error> {
        call!(self, make_inline_segment, request, Subject::Project).map(|_| ())
    }

    pub(crate) async fn commit_object(
        &self,
        request: CommitObjectRequest,
    ) -> Result<CommitObjectResponse, Error> {
        call!(self, commit_object, request, Subject::Project)
    }

    pub(crate) async fn put_inline_object(
        &self,
        request: PutInlineObjectRequest,
        key: &str,
    ) -> Result<CommitObjectResponse, Error> {
        let bucket = request.bucket.clone();
        call!(
            self,
            put_inline_object,
            request,
            Subject::Object {
                bucket: &bucket,
                key
            }
        )
    }

    /// The object and its segments; with `download`, also the download of
    /// the segment holding that plaintext offset.
    pub(crate) async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        encrypted_key: &str,
        version: &Version,
        download: Option<u64>,
    ) -> Result<GetObjectResponse, Error> {
        let request = GetObjectRequest {
            header: self.header(),
            bucket: bucket.to_string(),
            encrypted_object_key: encrypted_key.as_bytes().to_vec(),
            download: download.is_some(),
            download_offset: download.map_or(0, |offset| i64::try_from(offset).unwrap_or(i64::MAX)),
            version: version.to_pb(),
        };
        call!(self, get_object, request, Subject::Object { bucket, key })
    }

    pub(crate) async fn download_segment(
        &self,
        stream_id: &[u8],
        position: u32,
        bucket: &str,
        key: &str,
    ) -> Result<DownloadSegmentResponse, Error> {
        let request = DownloadSegmentRequest {
            header: self.header(),
            stream_id: stream_id.to_vec(),
            position,
        };
        call!(
            self,
            download_segment,
            request,
            Subject::Object { bucket, key }
        )
    }

    /// Tells the satellite which pieces of a segment proved bad.
    pub(crate) async fn report_bad_pieces(
        &self,
        stream_id: Vec<u8>,
        position: u32,
        pieces: Vec<BadPiece>,
    ) -> Result<ReportBadPiecesResponse, Error> {
        let request = ReportBadPiecesRequest {
            header: self.header(),
            stream_id,
            position,
            pieces,
        };
        call!(self, report_bad_pieces, request, Subject::Project)
    }

    pub(crate) async fn list_objects(
        &self,
        request: ListObjectsRequest,
    ) -> Result<ListObjectsResponse, Error> {
        let bucket = request.bucket.clone();
        call!(self, list_objects, request, Subject::Bucket(&bucket))
    }

    pub(crate) async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        encrypted_key: &str,
        options: &DeleteOptions,
    ) -> Result<DeleteObjectResponse, Error> {
        let request = DeleteObjectRequest {
            header: self.header(),
            bucket: bucket.to_string(),
            encrypted_object_key: encrypted_key.as_bytes().to_vec(),
            version: options.version.to_pb(),
            precondition: options.precondition.as_ref().map(Precondition::to_pb),
            bypass_governance: options.bypass_governance,
        };
        call!(
            self,
            delete_object,
            request,
            Subject::Object { bucket, key }
        )
    }

    pub(crate) async fn begin_copy_object(
        &self,
        bucket: &str,
        key: &str,
        encrypted_key: &str,
        version: &Version,
    ) -> Result<BeginCopyObjectResponse, Error> {
        let request = BeginCopyObjectRequest {
            header: self.header(),
            bucket: bucket.to_string(),
            encrypted_object_key: encrypted_key.as_bytes().to_vec(),
            version: version.to_pb(),
        };
        call!(
            self,
            begin_copy_object,
            request,
            Subject::Object { bucket, key }
        )
    }

    /// Commits a copy into `request.bucket`; "not found" is that bucket or
    /// the source object (`source`), gone since the copy began.
    pub(crate) async fn finish_copy_object(
        &self,
        request: FinishCopyObjectRequest,
        source: (&str, &str),
    ) -> Result<FinishCopyObjectResponse, Error> {
        let bucket = request.bucket.clone();
        call!(
            self,
            finish_copy_object,
            request,
            Subject::Object {
                bucket: &bucket,
                key: source.1
            }
        )
        .map_err(|e| match e {
            Error::ObjectNotFound { .. } => Error::ObjectNotFound {
                bucket: source.0.to_string(),
                key: source.1.to_string(),
                delete_marker: None,
            },
            e => e,
        })
    }

    pub(crate) async fn abort_object(
        &self,
        stream_id: Vec<u8>,
        bucket: &str,
        key: &str,
    ) -> Result<(), Error> {
        let request = AbortObjectRequest {
            header: self.header(),
            stream_id,
        };
        call!(self, abort_object, request, Subject::Upload { bucket, key }).map(|_| ())
    }

    pub(crate) async fn commit_part(
        &self,
        request: CommitPartRequest,
        bucket: &str,
        key: &str,
    ) -> Result<(), Error> {
        call!(self, commit_part, request, Subject::Upload { bucket, key }).map(|_| ())
    }

    pub(crate) async fn list_parts(
        &self,
        stream_id: Vec<u8>,
        after: u32,
        bucket: &str,
        key: &str,
    ) -> Result<ListPartsResponse, Error> {
        let request = ListPartsRequest {
            header: self.header(),
            stream_id,
            after,
            limit: 0,
        };
        call!(self, list_parts, request, Subject::Upload { bucket, key })
    }

    pub(crate) async fn list_pending_objects(
        &self,
        bucket: &str,
        cursor: Vec<u8>,
    ) -> Result<ListPendingObjectsResponse, Error> {
        let request = ListPendingObjectsRequest {
            header: self.header(),
            bucket: bucket.to_string(),
            cursor,
            limit: 0,
        };
        call!(self, list_pending_objects, request, Subject::Bucket(bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_that_never_left_are_sent_again() {
        let mut dropped = tonic::Status::cancelled("operation was canceled: connection closed");
        dropped.set_source(Arc::new(std::io::Error::other("connection closed")));
        assert!(never_sent(&dropped));
        // The satellite's own cancellation, and a deadline, are not retried.
        assert!(!never_sent(&tonic::Status::cancelled(
            "the satellite gave up"
        )));
        let expired = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(expired.code(), tonic::Code::Cancelled);
        assert!(!never_sent(&expired));
        let mut refused = tonic::Status::unavailable("connection refused");
        refused.set_source(Arc::new(std::io::Error::other("refused")));
        assert!(!never_sent(&refused));
    }
}
