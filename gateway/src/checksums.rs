//! S3's additional checksums (`x-amz-checksum-crc32`, `-crc32c`,
//! `-crc64nvme`, `-sha1`, `-sha256`) on uploads: which one a request asks
//! for and where its expected value comes from (a header, known up front, or
//! an aws-chunked trailer, which s3s verifies and hands over only once the
//! body has been read), a reader that computes it over the body and fails
//! the read at the end of the data when it differs, so the upload aborts
//! instead of committing, and the value on responses.
//!
//! The digests are s3s's own (`s3s::crypto`, the code its signature and
//! checksum checks use), so the gateway pulls in no second implementation.

use std::io;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::dto::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompleteMultipartUploadOutput, CopyPartResult,
    GetObjectOutput, HeadObjectOutput, Part, PutObjectInput, PutObjectOutput, UploadPartInput,
    UploadPartOutput,
};
use s3s::{s3_error, S3ErrorCode, S3Result, TrailingHeaders};

use crate::errors::BodyRefused;
use crate::objects::{BodyCheck, CheckedBody};

/// The checksum algorithms S3 offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algorithm {
    const ALL: [Algorithm; 5] = [
        Algorithm::Crc32,
        Algorithm::Crc32c,
        Algorithm::Crc64Nvme,
        Algorithm::Sha1,
        Algorithm::Sha256,
    ];

    /// The name S3 uses in `x-amz-checksum-algorithm`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => ChecksumAlgorithm::CRC32,
            Algorithm::Crc32c => ChecksumAlgorithm::CRC32C,
            Algorithm::Crc64Nvme => ChecksumAlgorithm::CRC64NVME,
            Algorithm::Sha1 => ChecksumAlgorithm::SHA1,
            Algorithm::Sha256 => ChecksumAlgorithm::SHA256,
        }
    }

    /// The header (or trailer) that carries the value.
    pub(crate) fn header(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    fn digest_len(self) -> usize {
        match self {
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Crc64Nvme => 8,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }

    /// The digest of `data`.
    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut hasher = self.hasher();
        hasher.update(data);
        hasher.finish()
    }

    fn hasher(self) -> Hasher {
        match self {
            Algorithm::Crc32 => Hasher::Crc32(Crc32::new()),
            Algorithm::Crc32c => Hasher::Crc32c(Crc32c::new()),
            Algorithm::Crc64Nvme => Hasher::Crc64Nvme(Crc64Nvme::new()),
            Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }

    /// The digest in `value` (base64, as S3 headers carry it), if it is one
    /// of this algorithm.
    pub(crate) fn decode(self, value: &str) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .filter(|digest| digest.len() == self.digest_len())
    }
}

enum Hasher {
    Crc32(Crc32),
    Crc32c(Crc32c),
    Crc64Nvme(Crc64Nvme),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Hasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc32(h) => h.update(data),
            Hasher::Crc32c(h) => h.update(data),
            Hasher::Crc64Nvme(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Crc32(h) => h.finalize().to_vec(),
            Hasher::Crc32c(h) => h.finalize().to_vec(),
            Hasher::Crc64Nvme(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// A checksum of an object or of a part: its algorithm and the base64 of its
/// digest (for a multipart object's composite checksum, followed by `-N`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checksum {
    pub algorithm: Algorithm,
    pub value: String,
}

impl Checksum {
    /// A checksum of `digest`.
    pub(crate) fn of_digest(algorithm: Algorithm, digest: &[u8]) -> Checksum {
        Checksum {
            algorithm,
            value: base64::engine::general_purpose::STANDARD.encode(digest),
        }
    }

    /// Whether `other` is the same digest (base64 may be written in more
    /// than one way).
    pub(crate) fn same_digest(&self, other: &Checksum) -> bool {
        let digest = self.algorithm.decode(&self.value);
        self.algorithm == other.algorithm
            && digest.is_some()
            && digest == other.algorithm.decode(&other.value)
    }

    /// Whether a client's `text` names this checksum: the same digest, and
    /// for a composite checksum the same number of parts if it gives one.
    pub(crate) fn matches_text(&self, text: &str) -> bool {
        let (digest, parts) = match self.value.split_once('-') {
            Some((digest, parts)) => (digest, Some(parts)),
            None => (self.value.as_str(), None),
        };
        let (given_digest, given_parts) = match text.trim().split_once('-') {
            Some((digest, parts)) => (digest, Some(parts)),
            None => (text.trim(), None),
        };
        let decoded = self.algorithm.decode(given_digest);
        decoded.is_some()
            && decoded == self.algorithm.decode(digest)
            && (given_parts.is_none() || given_parts == parts)
    }

    /// S3's checksum type: a multipart object's composite checksum (a
    /// checksum of its parts' checksums) ends in `-` and the number of
    /// parts, which base64 never contains; every other checksum is of the
    /// whole object's bytes.
    pub(crate) fn kind(&self) -> ChecksumType {
        ChecksumType::from_static(if self.value.contains('-') {
            ChecksumType::COMPOSITE
        } else {
            ChecksumType::FULL_OBJECT
        })
    }

    /// Sets the response's checksum headers to this one.
    pub(crate) fn set_on(&self, output: &mut impl ChecksumOutput) {
        output.set_checksum(self);
    }

    /// The stored checksum for a GET or HEAD answer: only if the request asked
    /// for it with `x-amz-checksum-mode: ENABLED`, and only for the whole
    /// object (it would not match a range's bytes).
    pub(crate) fn for_read(
        stored: Option<Checksum>,
        mode: Option<&ChecksumMode>,
        whole_object: bool,
    ) -> Option<Checksum> {
        let enabled = mode.is_some_and(|m| m.as_str().eq_ignore_ascii_case(ChecksumMode::ENABLED));
        stored.filter(|_| enabled && whole_object)
    }
}

/// Responses that carry checksum headers.
pub(crate) trait ChecksumOutput {
    fn set_checksum(&mut self, checksum: &Checksum);
}

macro_rules! checksum_outputs {
    (@values $output:ident, $checksum:ident) => {{
        let value = Some($checksum.value.clone());
        match $checksum.algorithm {
            Algorithm::Crc32 => $output.checksum_crc32 = value,
            Algorithm::Crc32c => $output.checksum_crc32c = value,
            Algorithm::Crc64Nvme => $output.checksum_crc64nvme = value,
            Algorithm::Sha1 => $output.checksum_sha1 = value,
            Algorithm::Sha256 => $output.checksum_sha256 = value,
        }
    }};
    (objects: $($output:ty),*; parts: $($part:ty),*) => {
        $(impl ChecksumOutput for $output {
            fn set_checksum(&mut self, checksum: &Checksum) {
                checksum_outputs!(@values self, checksum);
                self.checksum_type = Some(checksum.kind());
            }
        })*
        $(impl ChecksumOutput for $part {
            fn set_checksum(&mut self, checksum: &Checksum) {
                checksum_outputs!(@values self, checksum);
            }
        })*
    };
}

checksum_outputs!(
    objects: PutObjectOutput, GetObjectOutput, HeadObjectOutput, CompleteMultipartUploadOutput,
        s3s::dto::Checksum;
    parts: UploadPartOutput, CopyPartResult, Part, s3s::dto::ObjectPart
);

/// The checksum fields of an upload request as s3s parsed them (PutObject and
/// UploadPart carry the same ones). s3s fills `algorithm` from
/// `x-amz-checksum-algorithm`, or else from the checksum `x-amz-trailer`
/// announces.
#[derive(Default)]
pub(crate) struct ChecksumRequest<'a> {
    pub algorithm: Option<&'a ChecksumAlgorithm>,
    pub crc32: Option<&'a str>,
    pub crc32c: Option<&'a str>,
    pub crc64nvme: Option<&'a str>,
    pub sha1: Option<&'a str>,
    pub sha256: Option<&'a str>,
}

/// The [`ChecksumRequest`] of an upload input (PutObject, UploadPart), or
/// with `values only` of something that names no algorithm (a part in a
/// CompleteMultipartUpload request, that request's own headers).
macro_rules! checksum_request {
    ($input:expr) => {
        $crate::checksums::ChecksumRequest {
            algorithm: $input.checksum_algorithm.as_ref(),
            ..$crate::checksums::checksum_request!($input, values only)
        }
    };
    ($input:expr, values only) => {
        $crate::checksums::ChecksumRequest {
            algorithm: None,
            crc32: $input.checksum_crc32.as_deref(),
            crc32c: $input.checksum_crc32c.as_deref(),
            crc64nvme: $input.checksum_crc64nvme.as_deref(),
            sha1: $input.checksum_sha1.as_deref(),
            sha256: $input.checksum_sha256.as_deref(),
        }
    };
}
pub(crate) use checksum_request;

impl<'a> ChecksumRequest<'a> {
    /// The one checksum value given, as given; several values are an
    /// invalid request.
    pub(crate) fn given(&self) -> S3Result<Option<(Algorithm, &'a str)>> {
        let values = [
            (Algorithm::Crc32, self.crc32),
            (Algorithm::Crc32c, self.crc32c),
            (Algorithm::Crc64Nvme, self.crc64nvme),
            (Algorithm::Sha1, self.sha1),
            (Algorithm::Sha256, self.sha256),
        ];
        let mut given = values
            .into_iter()
            .filter_map(|(algorithm, value)| value.map(|v| (algorithm, v)));
        let first = given.next();
        if given.next().is_some() {
            return Err(s3_error!(
                InvalidRequest,
                "expecting a single x-amz-checksum- header"
            ));
        }
        Ok(first)
    }

    /// The one checksum value given, checked to be a digest of its
    /// algorithm.
    pub(crate) fn value(&self) -> S3Result<Option<Checksum>> {
        let Some((algorithm, value)) = self.given()? else {
            return Ok(None);
        };
        if algorithm.decode(value).is_none() {
            return Err(s3_error!(
                InvalidRequest,
                "the value of {} is not a base64 {} checksum",
                algorithm.header(),
                algorithm.name()
            ));
        }
        Ok(Some(Checksum {
            algorithm,
            value: value.trim().to_string(),
        }))
    }
}

/// Where the value a body must match comes from.
#[derive(Debug)]
enum Expected {
    /// A request header: known before the body.
    Header(String),
    /// An aws-chunked trailer, readable once the body has ended.
    Trailer(TrailingHeaders),
    /// Only the algorithm was named: the gateway computes the value.
    Computed,
}

/// One upload's checksum: what the request asked for, and the value once
/// verified. Clones share the outcome, so the value can be read after the
/// reader went into the client library.
#[derive(Clone, Debug)]
pub(crate) struct Checksummer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    algorithm: Algorithm,
    expected: Expected,
    verified: OnceLock<Checksum>,
}

impl Checksummer {
    /// The checksum `request` asks for; `None` when it names none. Requests
    /// that give several values, a value that is not a digest of its
    /// algorithm, or an algorithm that contradicts the value are invalid.
    pub(crate) fn new(
        request: ChecksumRequest<'_>,
        trailers: Option<&TrailingHeaders>,
    ) -> S3Result<Option<Checksummer>> {
        let header = request.value()?;
        let named = match request.algorithm {
            Some(name) => Some(Algorithm::parse(name.as_str()).ok_or_else(|| {
                s3_error!(
                    InvalidRequest,
                    "unknown checksum algorithm {:?}",
                    name.as_str()
                )
            })?),
            None => None,
        };
        let (algorithm, expected) = match (header, named) {
            (Some(Checksum { algorithm, value }), named) => {
                if named.is_some_and(|n| n != algorithm) {
                    return Err(s3_error!(
                        InvalidRequest,
                        "the checksum algorithm differs from the {} header",
                        algorithm.header()
                    ));
                }
                (algorithm, Expected::Header(value))
            }
            (None, Some(algorithm)) => match trailers {
                Some(trailers) => (algorithm, Expected::Trailer(trailers.clone())),
                None => (algorithm, Expected::Computed),
            },
            (None, None) => return Ok(None),
        };
        Ok(Some(Checksummer::expecting(algorithm, expected)))
    }

    fn expecting(algorithm: Algorithm, expected: Expected) -> Checksummer {
        Checksummer {
            shared: Arc::new(Shared {
                algorithm,
                expected,
                verified: OnceLock::new(),
            }),
        }
    }

    /// A checksum already stored with an object, for a copy of its bytes.
    pub(crate) fn stored(checksum: Checksum) -> Checksummer {
        Checksummer::expecting(checksum.algorithm, Expected::Header(checksum.value))
    }

    /// A checksum the gateway computes over the body (a part of an upload
    /// created with `algorithm` whose request gave none).
    pub(crate) fn computed(algorithm: Algorithm) -> Checksummer {
        Checksummer::expecting(algorithm, Expected::Computed)
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        self.shared.algorithm
    }

    pub(crate) fn from_put(
        input: &PutObjectInput,
        trailers: Option<&TrailingHeaders>,
    ) -> S3Result<Option<Checksummer>> {
        Checksummer::new(checksum_request!(input), trailers)
    }

    pub(crate) fn from_part(
        input: &UploadPartInput,
        trailers: Option<&TrailingHeaders>,
    ) -> S3Result<Option<Checksummer>> {
        Checksummer::new(checksum_request!(input), trailers)
    }

    /// Reads `inner` while computing the checksum; at the end of the data,
    /// fails the read unless it matches the expected value.
    pub(crate) fn reader<R>(&self, inner: R) -> ChecksumReader<R> {
        CheckedBody::new(
            inner,
            ChecksumCheck {
                hasher: Some(self.shared.algorithm.hasher()),
                shared: Arc::clone(&self.shared),
                refused: None,
            },
        )
    }

    /// The checksum to store and return: a header's value at once (the
    /// reader fails any body that differs, so nothing commits with it), a
    /// trailer's or a computed one once the reader verified the whole body.
    pub(crate) fn value(&self) -> Option<Checksum> {
        match &self.shared.expected {
            Expected::Header(value) => Some(Checksum {
                algorithm: self.shared.algorithm,
                value: value.clone(),
            }),
            Expected::Trailer(_) | Expected::Computed => self.shared.verified.get().cloned(),
        }
    }
}

/// See [`Checksummer::reader`].
pub(crate) type ChecksumReader<R> = CheckedBody<R, ChecksumCheck>;

/// Computes the checksum over the body and compares it at the end.
pub(crate) struct ChecksumCheck {
    /// Taken at the end of the data.
    hasher: Option<Hasher>,
    shared: Arc<Shared>,
    /// Why the body was refused, answered again to any further read.
    refused: Option<(S3ErrorCode, String)>,
}

impl ChecksumCheck {
    fn finish(&mut self) -> Result<(), (S3ErrorCode, String)> {
        let Some(hasher) = self.hasher.take() else {
            return match &self.refused {
                Some(refused) => Err(refused.clone()),
                None => Ok(()),
            };
        };
        let algorithm = self.shared.algorithm;
        let digest = hasher.finish();
        let outcome = match &self.shared.expected {
            Expected::Header(value) => check(algorithm, &digest, value),
            Expected::Trailer(trailers) => {
                let value = trailers
                    .read(|headers| {
                        headers
                            .get(algorithm.header())
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    })
                    .flatten();
                match value {
                    Some(value) => check(algorithm, &digest, &value),
                    None => Err((
                        S3ErrorCode::InvalidRequest,
                        format!("the body ended without its {} trailer", algorithm.header()),
                    )),
                }
            }
            Expected::Computed => Ok(()),
        };
        match outcome {
            Ok(()) => {
                // Only this reader sets it, once.
                let _ = self
                    .shared
                    .verified
                    .set(Checksum::of_digest(algorithm, &digest));
                Ok(())
            }
            Err(refused) => {
                self.refused = Some(refused.clone());
                Err(refused)
            }
        }
    }
}

fn check(algorithm: Algorithm, digest: &[u8], expected: &str) -> Result<(), (S3ErrorCode, String)> {
    match algorithm.decode(expected) {
        Some(wanted) if wanted == digest => Ok(()),
        Some(_) => Err((
            S3ErrorCode::BadDigest,
            format!(
                "the {} you specified did not match the calculated checksum",
                algorithm.name()
            ),
        )),
        None => Err((
            S3ErrorCode::InvalidRequest,
            format!(
                "the value of {} is not a base64 {} checksum",
                algorithm.header(),
                algorithm.name()
            ),
        )),
    }
}

impl BodyCheck for ChecksumCheck {
    fn update(&mut self, data: &[u8]) {
        if let Some(hasher) = &mut self.hasher {
            hasher.update(data);
        }
    }

    fn end(&mut self) -> io::Result<()> {
        self.finish()
            .map_err(|(code, message)| BodyRefused::into_io(code, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipel_proto::hostile;
    use proptest::prelude::*;
    use tokio::io::AsyncReadExt;

    fn request<'a>(algorithm: Algorithm, value: &'a str) -> ChecksumRequest<'a> {
        let mut request = ChecksumRequest::default();
        let field = match algorithm {
            Algorithm::Crc32 => &mut request.crc32,
            Algorithm::Crc32c => &mut request.crc32c,
            Algorithm::Crc64Nvme => &mut request.crc64nvme,
            Algorithm::Sha1 => &mut request.sha1,
            Algorithm::Sha256 => &mut request.sha256,
        };
        *field = Some(value);
        request
    }

    async fn read_all(checksummer: &Checksummer, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        checksummer.reader(data).read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn known_values_pass_and_others_fail_at_the_end() {
        // "hello world" under each algorithm, from independent references: a
        // bitwise CRC per polynomial (reproducing each catalogue check value)
        // and Python's hashlib.
        let known = [
            (Algorithm::Crc32, "DUoRhQ=="),
            (Algorithm::Crc32c, "yZRlqg=="),
            (Algorithm::Crc64Nvme, "jSnVw/bqjr4="),
            (Algorithm::Sha1, "Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
            (
                Algorithm::Sha256,
                "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=",
            ),
        ];
        for (algorithm, value) in known {
            let checksummer = Checksummer::new(request(algorithm, value), None)
                .unwrap()
                .unwrap();
            assert_eq!(
                read_all(&checksummer, b"hello world").await.unwrap(),
                b"hello world"
            );
            assert_eq!(
                checksummer.value(),
                Some(Checksum {
                    algorithm,
                    value: value.to_string()
                })
            );
            let error = read_all(&checksummer, b"hello wOrld").await.unwrap_err();
            let refused = error
                .get_ref()
                .unwrap()
                .downcast_ref::<BodyRefused>()
                .unwrap();
            assert_eq!(refused.code, S3ErrorCode::BadDigest, "{algorithm:?}");

            // Named without a value, the gateway computes the same one.
            let name = ChecksumAlgorithm::from_static(algorithm.name());
            let computed = Checksummer::new(
                ChecksumRequest {
                    algorithm: Some(&name),
                    ..ChecksumRequest::default()
                },
                None,
            )
            .unwrap()
            .unwrap();
            assert_eq!(computed.value(), None);
            read_all(&computed, b"hello world").await.unwrap();
            assert_eq!(computed.value().unwrap().value, value);
        }
    }

    #[test]
    fn invalid_requests_are_refused() {
        let code = |request, trailers| {
            Checksummer::new(request, trailers)
                .unwrap_err()
                .code()
                .as_str()
                .to_string()
        };
        assert!(Checksummer::new(ChecksumRequest::default(), None)
            .unwrap()
            .is_none());
        assert_eq!(
            code(request(Algorithm::Crc32, "not base64!"), None),
            "InvalidRequest"
        );
        // A SHA-256 is not a CRC32.
        assert_eq!(
            code(
                request(
                    Algorithm::Crc32,
                    "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="
                ),
                None
            ),
            "InvalidRequest"
        );
        let two = ChecksumRequest {
            crc32: Some("DUoRhQ=="),
            crc32c: Some("yZRlqg=="),
            ..ChecksumRequest::default()
        };
        assert_eq!(code(two, None), "InvalidRequest");
        let sha1 = ChecksumAlgorithm::from_static(ChecksumAlgorithm::SHA1);
        let contradicting = ChecksumRequest {
            algorithm: Some(&sha1),
            ..request(Algorithm::Crc32, "DUoRhQ==")
        };
        assert_eq!(code(contradicting, None), "InvalidRequest");
        let unknown = ChecksumAlgorithm::from_static("MD4");
        let unknown = ChecksumRequest {
            algorithm: Some(&unknown),
            ..ChecksumRequest::default()
        };
        assert_eq!(code(unknown, None), "InvalidRequest");
    }

    #[test]
    fn checksums_show_only_when_enabled_on_whole_objects() {
        let stored = Checksum {
            algorithm: Algorithm::Crc32,
            value: "DUoRhQ==".into(),
        };
        let enabled = ChecksumMode::from_static(ChecksumMode::ENABLED);
        let read = |mode, whole| Checksum::for_read(Some(stored.clone()), mode, whole);
        assert_eq!(read(None, true), None);
        assert_eq!(read(Some(&enabled), false), None);
        assert_eq!(read(Some(&enabled), true), Some(stored.clone()));
        let mut output = GetObjectOutput::default();
        stored.set_on(&mut output);
        assert_eq!(output.checksum_crc32.as_deref(), Some("DUoRhQ=="));
        assert_eq!(
            output.checksum_type.as_ref().map(ChecksumType::as_str),
            Some(ChecksumType::FULL_OBJECT)
        );
    }

    /// An algorithm's name, and its digest of some bytes as S3 headers carry
    /// it (base64), each damaged or replaced.
    fn names_and_values() -> impl Strategy<Value = (Algorithm, String, String, String)> {
        (
            prop::sample::select(Algorithm::ALL.to_vec()),
            hostile::bytes(40),
        )
            .prop_flat_map(|(algorithm, data)| {
                let value = Checksum::of_digest(algorithm, &algorithm.digest(&data)).value;
                (
                    Just(algorithm),
                    Just(value.clone()),
                    hostile::text_or_mutated(algorithm.name().to_string()),
                    hostile::text_or_mutated(value),
                )
            })
    }

    /// A name parses only to the algorithm it names; a value decodes only to
    /// a digest of its algorithm's length, and is refused in a request
    /// otherwise; an intact value is accepted and matches itself.
    fn name_and_value_are_checked(
        (algorithm, intact, name, value): (Algorithm, String, String, String),
    ) -> Result<(), TestCaseError> {
        if let Some(parsed) = Algorithm::parse(&name) {
            prop_assert!(parsed.name().eq_ignore_ascii_case(&name));
        }
        for each in Algorithm::ALL {
            if let Some(digest) = each.decode(&value) {
                prop_assert_eq!(digest.len(), each.digest_len());
            }
        }
        let given = request(algorithm, &value).value();
        match (&given, algorithm.decode(&value)) {
            (Ok(Some(checksum)), Some(_)) => prop_assert_eq!(checksum.algorithm, algorithm),
            (Err(_), None) => {}
            _ => prop_assert!(false, "{value:?} as {algorithm:?} gave {given:?}"),
        }
        let _ = Checksummer::new(request(algorithm, &value), None);
        // A stored checksum (from the object's metadata) against a client's text.
        let stored = Checksum {
            algorithm,
            value: value.clone(),
        };
        let _ = stored.kind();
        let _ = stored.matches_text(&intact);
        let intact = Checksum {
            algorithm,
            value: intact,
        };
        prop_assert!(intact.matches_text(&intact.value));
        prop_assert_eq!(
            intact.matches_text(&value),
            algorithm.decode(&value) == algorithm.decode(&intact.value)
        );
        prop_assert_eq!(stored.same_digest(&intact), intact.same_digest(&stored));
        Ok(())
    }

    archipel_proto::hostile_tests! {
        hostile_checksum_names_and_values_are_refused_or_decoded:
            names_and_values() => name_and_value_are_checked;
    }
}
