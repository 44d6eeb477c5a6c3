//! Checksums of multipart uploads, formed as S3 forms them: the algorithm
//! and type an upload is created with (sealed in its metadata, see
//! `metadata::upload_checksum`), each part's checksum (sealed with the
//! part's ETag in its tag, see [`PartTag`]), and the object's checksum made
//! from its parts' at completion: COMPOSITE, the digest of the parts'
//! digests followed by `-` and the number of parts, or FULL_OBJECT, the
//! parts' CRCs combined into the CRC of the whole object's bytes.

use std::collections::HashMap;

use s3s::dto::{ChecksumAlgorithm, ChecksumType};
use s3s::{s3_error, S3Result};

use crate::checksums::{Algorithm, Checksum, Checksummer};

/// How the parts' checksums make the object's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Combination {
    Composite,
    FullObject,
}

/// The checksum a multipart upload was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UploadChecksum {
    pub algorithm: Algorithm,
    pub combination: Combination,
}

impl UploadChecksum {
    /// What CreateMultipartUpload's `x-amz-checksum-algorithm` and
    /// `x-amz-checksum-type` ask for, with S3's defaults (COMPOSITE, except
    /// CRC64NVME, which is always FULL_OBJECT) and its rules: the SHA
    /// algorithms cannot be combined into a full-object checksum.
    pub(crate) fn from_create(
        algorithm: Option<&ChecksumAlgorithm>,
        kind: Option<&ChecksumType>,
    ) -> S3Result<Option<UploadChecksum>> {
        let Some(name) = algorithm else {
            if kind.is_some() {
                return Err(s3_error!(
                    InvalidRequest,
                    "x-amz-checksum-type needs x-amz-checksum-algorithm"
                ));
            }
            return Ok(None);
        };
        let algorithm = Algorithm::parse(name.as_str()).ok_or_else(|| {
            s3_error!(
                InvalidRequest,
                "unknown checksum algorithm {:?}",
                name.as_str()
            )
        })?;
        let combination = match kind.map(ChecksumType::as_str) {
            None if algorithm == Algorithm::Crc64Nvme => Combination::FullObject,
            None => Combination::Composite,
            Some(kind) => Combination::parse(kind)
                .ok_or_else(|| s3_error!(InvalidRequest, "unknown checksum type {kind:?}"))?,
        };
        let allowed = match combination {
            Combination::Composite => algorithm != Algorithm::Crc64Nvme,
            Combination::FullObject => crc(algorithm).is_some(),
        };
        if !allowed {
            return Err(s3_error!(
                InvalidRequest,
                "the {} checksum type is not supported for {}",
                combination.name(),
                algorithm.name()
            ));
        }
        Ok(Some(UploadChecksum {
            algorithm,
            combination,
        }))
    }

    /// As sealed in the upload's metadata: `ALGORITHM TYPE`.
    pub(crate) fn to_text(self) -> String {
        format!("{} {}", self.algorithm.name(), self.combination.name())
    }

    pub(crate) fn parse(text: &str) -> Option<UploadChecksum> {
        let (algorithm, combination) = text.split_once(' ')?;
        Some(UploadChecksum {
            algorithm: Algorithm::parse(algorithm)?,
            combination: Combination::parse(combination)?,
        })
    }

    pub(crate) fn algorithm_name(self) -> ChecksumAlgorithm {
        ChecksumAlgorithm::from_static(self.algorithm.name())
    }

    pub(crate) fn type_name(self) -> ChecksumType {
        ChecksumType::from_static(self.combination.name())
    }

    /// The checksum a part of this upload is stored with: the request's, if
    /// it is of the upload's algorithm (another algorithm is refused, as S3
    /// does), else one the gateway computes over the part's bytes.
    pub(crate) fn for_part(
        upload: Option<UploadChecksum>,
        given: Option<Checksummer>,
    ) -> S3Result<Option<Checksummer>> {
        match (upload, given) {
            (Some(upload), Some(given)) if given.algorithm() != upload.algorithm => {
                Err(s3_error!(
                    InvalidRequest,
                    "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                    upload.algorithm.name().to_ascii_lowercase(),
                    given.algorithm().name().to_ascii_lowercase()
                ))
            }
            (Some(upload), None) => Ok(Some(Checksummer::computed(upload.algorithm))),
            (_, given) => Ok(given),
        }
    }

    /// The object's checksum from its parts' checksums (each of this
    /// upload's algorithm, checked by the caller) and sizes, in order.
    pub(crate) fn object_checksum(self, parts: &[(&Checksum, u64)]) -> Option<Checksum> {
        let digests = parts
            .iter()
            .map(|(checksum, _)| {
                (checksum.algorithm == self.algorithm)
                    .then(|| self.algorithm.decode(&checksum.value))
                    .flatten()
            })
            .collect::<Option<Vec<Vec<u8>>>>()?;
        match self.combination {
            Combination::Composite => {
                let digest = self.algorithm.digest(&digests.concat());
                let mut checksum = Checksum::of_digest(self.algorithm, &digest);
                checksum.value.push_str(&format!("-{}", parts.len()));
                Some(checksum)
            }
            Combination::FullObject => {
                let crc = crc(self.algorithm)?;
                let mut combiner = CrcCombiner::new(crc);
                let mut whole: Option<u64> = None;
                for (digest, (_, size)) in digests.iter().zip(parts) {
                    let part = Crc::value_of(digest);
                    whole = Some(match whole {
                        None => part,
                        Some(before) => combiner.combine(before, part, *size),
                    });
                }
                Some(Checksum::of_digest(self.algorithm, &crc.to_digest(whole?)))
            }
        }
    }
}

impl Combination {
    fn name(self) -> &'static str {
        match self {
            Combination::Composite => ChecksumType::COMPOSITE,
            Combination::FullObject => ChecksumType::FULL_OBJECT,
        }
    }

    fn parse(name: &str) -> Option<Combination> {
        [Combination::Composite, Combination::FullObject]
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }
}

/// The CRC `algorithm` is, if it is one.
fn crc(algorithm: Algorithm) -> Option<Crc> {
    let (poly, width) = match algorithm {
        Algorithm::Crc32 => (0xEDB8_8320, 32),
        Algorithm::Crc32c => (0x82F6_3B78, 32),
        Algorithm::Crc64Nvme => (0x9A6C_9329_AC4B_C9B5, 64),
        Algorithm::Sha1 | Algorithm::Sha256 => return None,
    };
    Some(Crc { poly, width })
}

/// A reflected CRC with an all-ones initial value and final xor (CRC32,
/// CRC32C and CRC64NVME all are), as far as combining needs it.
#[derive(Clone, Copy, Debug)]
struct Crc {
    /// The reversed polynomial.
    poly: u64,
    /// Bits, 32 or 64.
    width: u32,
}

impl Crc {
    /// The CRC value of a big-endian digest as S3 encodes it.
    fn value_of(digest: &[u8]) -> u64 {
        digest
            .iter()
            .fold(0, |value, &byte| value << 8 | u64::from(byte))
    }

    fn to_digest(self, value: u64) -> Vec<u8> {
        value.to_be_bytes()[(8 - self.width as usize / 8)..].to_vec()
    }
}

/// Combines CRCs of consecutive pieces into the CRC of their
/// concatenation without their bytes (zlib's `crc32_combine`, for any width):
/// appending `n` zero bytes to a CRC register is a linear map over GF(2),
/// built once per distinct piece length (parts mostly share one size).
struct CrcCombiner {
    crc: Crc,
    /// The zero-appending map for each length seen, as matrix columns.
    operators: HashMap<u64, Vec<u64>>,
}

impl CrcCombiner {
    fn new(crc: Crc) -> CrcCombiner {
        CrcCombiner {
            crc,
            operators: HashMap::new(),
        }
    }

    /// The CRC of `a ‖ b` from `crc(a)`, `crc(b)` and `b`'s length.
    fn combine(&mut self, crc_a: u64, crc_b: u64, len_b: u64) -> u64 {
        let crc = self.crc;
        let operator = self
            .operators
            .entry(len_b)
            .or_insert_with(|| zeros_operator(crc, len_b));
        apply(operator, crc_a) ^ crc_b
    }
}

/// The map that appends `bytes` zero bytes to a CRC register.
fn zeros_operator(crc: Crc, bytes: u64) -> Vec<u64> {
    let width = crc.width as usize;
    // One zero bit: the register shifts right, and the bit that falls out
    // feeds the polynomial back in.
    let mut power: Vec<u64> = (0..width)
        .map(|bit| if bit == 0 { crc.poly } else { 1 << (bit - 1) })
        .collect();
    // Squared three times: one zero byte.
    for _ in 0..3 {
        power = compose(&power, &power);
    }
    let mut operator: Vec<u64> = (0..width).map(|bit| 1 << bit).collect();
    let mut remaining = bytes;
    while remaining != 0 {
        if remaining & 1 == 1 {
            operator = compose(&power, &operator);
        }
        remaining >>= 1;
        if remaining != 0 {
            power = compose(&power, &power);
        }
    }
    operator
}

/// The matrix (columns as words) times the vector.
fn apply(matrix: &[u64], vector: u64) -> u64 {
    matrix
        .iter()
        .enumerate()
        .filter(|(bit, _)| vector >> bit & 1 == 1)
        .fold(0, |sum, (_, column)| sum ^ column)
}

/// `a` after `b`.
fn compose(a: &[u64], b: &[u64]) -> Vec<u64> {
    b.iter().map(|&column| apply(a, column)).collect()
}

/// What a part's sealed tag holds: its ETag (hex MD5) and, when it was
/// uploaded with one, its checksum, as `ETAG` or `ETAG ALGORITHM VALUE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartTag {
    pub etag: String,
    pub checksum: Option<Checksum>,
}

impl PartTag {
    pub(crate) fn to_text(&self) -> String {
        match &self.checksum {
            Some(c) => format!("{} {} {}", self.etag, c.algorithm.name(), c.value),
            None => self.etag.clone(),
        }
    }

    /// A tag as [`PartTag::to_text`] wrote it; tags of other writers are
    /// their ETag whole.
    pub(crate) fn parse(text: &str) -> PartTag {
        let mut words = text.split(' ');
        if let (Some(etag), Some(algorithm), Some(value), None) =
            (words.next(), words.next(), words.next(), words.next())
        {
            if let Some(algorithm) = Algorithm::parse(algorithm) {
                return PartTag {
                    etag: etag.to_string(),
                    checksum: Some(Checksum {
                        algorithm,
                        value: value.to_string(),
                    }),
                };
            }
        }
        PartTag {
            etag: text.to_string(),
            checksum: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipel_proto::hostile;
    use proptest::prelude::*;

    fn upload(algorithm: Algorithm, combination: Combination) -> UploadChecksum {
        UploadChecksum {
            algorithm,
            combination,
        }
    }

    fn checksum_of(algorithm: Algorithm, data: &[u8]) -> Checksum {
        Checksum::of_digest(algorithm, &algorithm.digest(data))
    }

    const CRCS: [Algorithm; 3] = [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme];

    proptest! {
        #[test]
        fn combined_crcs_are_the_crcs_of_the_whole(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6)
        ) {
            let whole = parts.concat();
            for algorithm in CRCS {
                let checksums: Vec<Checksum> =
                    parts.iter().map(|p| checksum_of(algorithm, p)).collect();
                let sized: Vec<(&Checksum, u64)> = checksums
                    .iter()
                    .zip(&parts)
                    .map(|(c, p)| (c, p.len() as u64))
                    .collect();
                let combined = upload(algorithm, Combination::FullObject)
                    .object_checksum(&sized)
                    .unwrap();
                prop_assert_eq!(combined, checksum_of(algorithm, &whole));
            }
        }
    }

    #[test]
    fn combining_handles_parts_of_many_mebibytes() {
        // Lengths with high bits set exercise the repeated squaring.
        let a = vec![7u8; 5 << 20];
        let b = vec![9u8; (5 << 20) + 12345];
        for algorithm in CRCS {
            let (ca, cb) = (checksum_of(algorithm, &a), checksum_of(algorithm, &b));
            let combined = upload(algorithm, Combination::FullObject)
                .object_checksum(&[(&ca, a.len() as u64), (&cb, b.len() as u64)])
                .unwrap();
            assert_eq!(
                combined,
                checksum_of(algorithm, &[a.clone(), b.clone()].concat())
            );
        }
    }

    #[test]
    fn composite_checksums_are_digests_of_the_part_digests() {
        let parts = [b"hello ".as_slice(), b"world".as_slice()];
        for algorithm in [Algorithm::Sha256, Algorithm::Crc32] {
            let checksums: Vec<Checksum> =
                parts.iter().map(|p| checksum_of(algorithm, p)).collect();
            let mut digests = algorithm.digest(parts[0]);
            digests.extend(algorithm.digest(parts[1]));
            let expected = format!("{}-2", checksum_of(algorithm, &digests).value);
            let composite = upload(algorithm, Combination::Composite)
                .object_checksum(&[(&checksums[0], 6), (&checksums[1], 5)])
                .unwrap();
            assert_eq!(composite.value, expected);
            assert_eq!(composite.kind().as_str(), ChecksumType::COMPOSITE);
        }
        // A part with another algorithm's checksum makes none.
        let crc = checksum_of(Algorithm::Crc32, b"x");
        let sha = checksum_of(Algorithm::Sha1, b"y");
        assert_eq!(
            upload(Algorithm::Crc32, Combination::Composite)
                .object_checksum(&[(&crc, 1), (&sha, 1)]),
            None
        );
    }

    #[test]
    fn create_requests_follow_s3s_rules() {
        let create = |algorithm: Option<&'static str>, kind: Option<&'static str>| {
            UploadChecksum::from_create(
                algorithm.map(ChecksumAlgorithm::from_static).as_ref(),
                kind.map(ChecksumType::from_static).as_ref(),
            )
        };
        assert_eq!(create(None, None).unwrap(), None);
        assert_eq!(
            create(Some("CRC32"), None).unwrap(),
            Some(upload(Algorithm::Crc32, Combination::Composite))
        );
        assert_eq!(
            create(Some("CRC64NVME"), None).unwrap(),
            Some(upload(Algorithm::Crc64Nvme, Combination::FullObject))
        );
        assert_eq!(
            create(Some("CRC32C"), Some("FULL_OBJECT")).unwrap(),
            Some(upload(Algorithm::Crc32c, Combination::FullObject))
        );
        for (algorithm, kind) in [
            (None, Some("COMPOSITE")),
            (Some("SHA256"), Some("FULL_OBJECT")),
            (Some("CRC64NVME"), Some("COMPOSITE")),
            (Some("CRC32"), Some("WHOLE")),
            (Some("MD5"), None),
        ] {
            let error = create(algorithm, kind).unwrap_err();
            assert_eq!(
                error.code().as_str(),
                "InvalidRequest",
                "{algorithm:?} {kind:?}"
            );
        }
        let sealed = upload(Algorithm::Sha1, Combination::Composite);
        assert_eq!(UploadChecksum::parse(&sealed.to_text()), Some(sealed));
    }

    #[test]
    fn parts_of_an_upload_use_its_algorithm() {
        let crc32 = Some(upload(Algorithm::Crc32, Combination::Composite));
        let sha1 = Checksummer::computed(Algorithm::Sha1);
        let error = UploadChecksum::for_part(crc32, Some(sha1.clone())).unwrap_err();
        assert_eq!(error.code().as_str(), "InvalidRequest");
        let computed = UploadChecksum::for_part(crc32, None).unwrap().unwrap();
        assert_eq!(computed.algorithm(), Algorithm::Crc32);
        // Without an upload algorithm, a part keeps whatever it was sent with.
        let kept = UploadChecksum::for_part(None, Some(sha1)).unwrap().unwrap();
        assert_eq!(kept.algorithm(), Algorithm::Sha1);
        assert!(UploadChecksum::for_part(None, None).unwrap().is_none());
    }

    #[test]
    fn part_tags_round_trip() {
        let with = PartTag {
            etag: "5d41402abc4b2a76b9719d911017c592".into(),
            checksum: Some(checksum_of(Algorithm::Crc32c, b"hello")),
        };
        assert_eq!(PartTag::parse(&with.to_text()), with);
        let without = PartTag {
            etag: "5d41402abc4b2a76b9719d911017c592".into(),
            checksum: None,
        };
        assert_eq!(PartTag::parse(&without.to_text()), without);
        assert_eq!(PartTag::parse("some other tool's tag").checksum, None);
    }

    const ALGORITHMS: [Algorithm; 5] = [
        Algorithm::Crc32,
        Algorithm::Crc32c,
        Algorithm::Crc64Nvme,
        Algorithm::Sha1,
        Algorithm::Sha256,
    ];

    fn uploads() -> impl Strategy<Value = UploadChecksum> {
        (
            prop::sample::select(ALGORITHMS.to_vec()),
            prop::sample::select(vec![Combination::Composite, Combination::FullObject]),
        )
            .prop_map(|(algorithm, combination)| upload(algorithm, combination))
    }

    /// A part's tag as stored with it: its ETag and a checksum of some bytes.
    fn part_tags() -> impl Strategy<Value = PartTag> {
        (
            prop::sample::select(ALGORITHMS.to_vec()),
            hostile::bytes(40),
        )
            .prop_map(|(algorithm, data)| PartTag {
                etag: hex::encode(<md5::Md5 as md5::Digest>::digest(&data)),
                checksum: Some(checksum_of(algorithm, &data)),
            })
    }

    /// Texts sealed in an upload's metadata and in its parts' tags, damaged
    /// (other tools may write them, and the satellite returns them): what
    /// parses prints back as itself, and a tag that is not ours is its ETag.
    fn sealed_texts_are_checked(
        (upload_text, combination, tag_text): (String, String, String),
    ) -> Result<(), TestCaseError> {
        if let Some(upload) = UploadChecksum::parse(&upload_text) {
            prop_assert_eq!(UploadChecksum::parse(&upload.to_text()), Some(upload));
        }
        if let Some(parsed) = Combination::parse(&combination) {
            prop_assert!(parsed.name().eq_ignore_ascii_case(&combination));
        }
        let tag = PartTag::parse(&tag_text);
        prop_assert_eq!(PartTag::parse(&tag.to_text()), tag.clone());
        if tag.checksum.is_none() {
            prop_assert_eq!(tag.etag, tag_text);
        }
        Ok(())
    }

    /// An object's checksum from its parts' sealed checksums, damaged: none,
    /// or one of the upload's algorithm whose digest decodes.
    fn object_checksum_is_checked(
        (upload, parts): (UploadChecksum, Vec<(String, u64)>),
    ) -> Result<(), TestCaseError> {
        let tags: Vec<(PartTag, u64)> = parts
            .iter()
            .map(|(text, size)| (PartTag::parse(text), *size))
            .collect();
        let checksums: Vec<(&Checksum, u64)> = tags
            .iter()
            .filter_map(|(tag, size)| Some((tag.checksum.as_ref()?, *size)))
            .collect();
        if let Some(checksum) = upload.object_checksum(&checksums) {
            prop_assert_eq!(checksum.algorithm, upload.algorithm);
            let digest = checksum.value.split('-').next().unwrap_or_default();
            prop_assert!(upload.algorithm.decode(digest).is_some());
        }
        Ok(())
    }

    archipel_proto::hostile_tests! {
        hostile_sealed_checksum_texts_are_refused_or_round_trip: (
            uploads().prop_flat_map(|upload| hostile::text_or_mutated(upload.to_text())),
            prop::sample::select(vec![ChecksumType::COMPOSITE, ChecksumType::FULL_OBJECT])
                .prop_flat_map(|name| hostile::text_or_mutated(name.to_string())),
            part_tags().prop_flat_map(|tag| hostile::text_or_mutated(tag.to_text())),
        ) => sealed_texts_are_checked;
        hostile_part_checksums_make_no_object_checksum_or_a_valid_one: (
            uploads(),
            prop::collection::vec(
                (
                    part_tags().prop_flat_map(|tag| hostile::text_or_mutated(tag.to_text())),
                    0u64..1 << 12,
                ),
                1..4,
            ),
        ) => object_checksum_is_checked;
    }
}
