//! ListObjects (v1), ListObjectsV2 and ListObjectVersions: prefix, delimiter,
//! max-keys, markers and continuation tokens, common prefixes, lexicographic
//! (UTF-8 byte) order.
//!
//! With the delimiter `/` the satellite lists one level; with no delimiter it
//! lists recursively; any other delimiter is applied to a recursive listing.
//! In a bucket with unencrypted names (and the delimiter `/` or none) the
//! satellite keeps keys in order, so a page reads only itself, resuming after
//! the last key. With encrypted names the satellite's order is not the
//! names' order: a page can only be cut from the whole sorted listing below
//! the prefix. The first page of a walk lists it; the next pages are cut from
//! it, kept as a snapshot (`snapshots`), so a walk lists once, not once per page.
//!
//! Buckets are not versioned: ListObjectVersions answers each object as its
//! one version, `null`, the latest.

use std::collections::BTreeMap;
use std::sync::Arc;

use archipel_client::{ListEntry, Project};
use base64::Engine;
use s3s::dto::{
    CommonPrefix, EncodingType, ListObjectVersionsInput, ListObjectVersionsOutput,
    ListObjectsInput, ListObjectsOutput, ListObjectsV2Input, ListObjectsV2Output, Object,
    ObjectStorageClass, ObjectVersion, ObjectVersionStorageClass,
};
use s3s::{s3_error, S3Result};

use crate::errors::s3_error;
use crate::snapshots::Scope;

/// The snapshots of the walks over encrypted listings in progress.
pub(crate) type Snapshots = crate::snapshots::Snapshots<Listing>;

/// Who lists: a project, the access key it acts for, and the gateway's snapshots.
pub(crate) struct Lister<'a> {
    pub(crate) project: &'a Project,
    pub(crate) access_key: &'a str,
    pub(crate) snapshots: &'a Snapshots,
}

/// A whole listing below a prefix, rolled up at the delimiter, in S3's order:
/// each name with its object, or `None` for a common prefix.
pub(crate) struct Listing(Vec<(String, Option<ListEntry>)>);

/// The version id of every object: buckets are not versioned.
const NULL_VERSION: &str = "null";

/// S3's default and largest page.
const MAX_KEYS: usize = 1000;

/// One page of a listing.
#[derive(Debug, PartialEq)]
struct Page {
    objects: Vec<ListEntry>,
    prefixes: Vec<String>,
    truncated: bool,
    /// The last key or prefix on the page: where the next page starts after.
    last: Option<String>,
}

/// Cuts one page from `entries` (the listing below `prefix`, or the part of
/// it from `after` on): see [`merge`] and [`cut`].
fn paginate(
    entries: Vec<ListEntry>,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max_keys: usize,
) -> Page {
    cut(&merge(entries, prefix, delimiter), after, max_keys)
}

/// Rolls keys up to common prefixes at `delimiter` and sorts keys and prefixes together.
fn merge(entries: Vec<ListEntry>, prefix: &str, delimiter: Option<&str>) -> Listing {
    // Keyed by name so that keys and prefixes interleave in S3's order; a
    // `None` value is a common prefix.
    let mut merged: BTreeMap<String, Option<ListEntry>> = BTreeMap::new();
    for entry in entries {
        let rolled_up = if entry.is_prefix {
            Some(entry.key.clone())
        } else {
            delimiter.and_then(|d| {
                let rest = entry.key.get(prefix.len()..)?;
                rest.find(d)
                    .map(|i| format!("{prefix}{}", &rest[..i + d.len()]))
            })
        };
        match rolled_up {
            Some(common) => {
                merged.insert(common, None);
            }
            None => {
                merged.insert(entry.key.clone(), Some(entry));
            }
        }
    }
    Listing(merged.into_iter().collect())
}

/// Keeps at most `max_keys` keys and prefixes of `listing` that sort after `after`.
fn cut(listing: &Listing, after: Option<&str>, max_keys: usize) -> Page {
    let start = after.map_or(0, |after| {
        listing
            .0
            .partition_point(|(name, _)| name.as_str() <= after)
    });
    let mut page = Page {
        objects: Vec::new(),
        prefixes: Vec::new(),
        truncated: false,
        last: None,
    };
    for (taken, (name, entry)) in listing.0[start..].iter().enumerate() {
        if taken == max_keys {
            page.truncated = true;
            break;
        }
        page.last = Some(name.clone());
        match entry {
            Some(object) => page.objects.push(object.clone()),
            None => page.prefixes.push(name.clone()),
        }
    }
    page
}

/// The page of `bucket` below `prefix` after `after`. `continues` says that
/// `after` is where an earlier page ended (a continuation token, a marker):
/// that page's snapshot, if still kept, serves this one.
async fn list_page(
    lister: &Lister<'_>,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    continues: bool,
    max_keys: Option<i32>,
) -> S3Result<Page> {
    let max_keys = match max_keys {
        None => MAX_KEYS,
        Some(n) => usize::try_from(n)
            .map_err(|_| s3_error!(InvalidArgument, "max-keys must not be negative"))?
            .min(MAX_KEYS),
    };
    let scope = Scope {
        access_key: lister.access_key.to_string(),
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        delimiter: delimiter.map(str::to_string),
    };
    if let Some(after) = after.filter(|_| continues) {
        if let Some(listing) = lister.snapshots.find(&scope, after) {
            let page = cut(&listing, Some(after), max_keys);
            keep(lister, scope, &listing, &page);
            return Ok(page);
        }
    }
    let project = lister.project;
    let recursive = delimiter != Some("/");
    if matches!(delimiter, None | Some("/"))
        && project.lists_in_order(bucket).await.map_err(s3_error)?
    {
        let entries = project
            .list_after(bucket, prefix, recursive, after, max_keys.saturating_add(1))
            .await
            .map_err(s3_error)?;
        return Ok(paginate(entries, prefix, delimiter, after, max_keys));
    }
    let entries = project
        .list(bucket, prefix, recursive)
        .await
        .map_err(s3_error)?;
    let listing = Arc::new(merge(entries, prefix, delimiter));
    let page = cut(&listing, after, max_keys);
    keep(lister, scope, &listing, &page);
    Ok(page)
}

/// Keeps `listing` for the page after `page`, if there is one.
fn keep(lister: &Lister<'_>, scope: Scope, listing: &Arc<Listing>, page: &Page) {
    if let (true, Some(last)) = (page.truncated, &page.last) {
        lister.snapshots.keep(scope, listing, listing.0.len(), last);
    }
}

/// An empty delimiter means none.
fn delimiter(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|d| !d.is_empty())
}

pub(crate) async fn list_v2(
    lister: &Lister<'_>,
    input: ListObjectsV2Input,
) -> S3Result<ListObjectsV2Output> {
    let prefix = input.prefix.clone().unwrap_or_default();
    let token_key = match &input.continuation_token {
        Some(token) => Some(decode_token(token)?),
        None => None,
    };
    let after = token_key.as_deref().or(input.start_after.as_deref());
    let page = list_page(
        lister,
        &input.bucket,
        &prefix,
        delimiter(&input.delimiter),
        after,
        token_key.is_some(),
        input.max_keys,
    )
    .await?;
    let encode = Encoder::new(input.encoding_type.as_ref());
    let key_count = page.objects.len() + page.prefixes.len();
    Ok(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(encode.text(&prefix)),
        delimiter: input.delimiter.as_deref().map(|d| encode.text(d)),
        start_after: input.start_after.as_deref().map(|s| encode.text(s)),
        max_keys: Some(input.max_keys.unwrap_or(MAX_KEYS as i32)),
        key_count: Some(i32::try_from(key_count).unwrap_or(i32::MAX)),
        continuation_token: input.continuation_token,
        next_continuation_token: page
            .truncated
            .then(|| page.last.as_deref().map(encode_token))
            .flatten(),
        is_truncated: Some(page.truncated),
        contents: Some(objects(&page.objects, &encode)),
        common_prefixes: Some(common_prefixes(&page.prefixes, &encode)),
        encoding_type: input.encoding_type,
        ..Default::default()
    })
}

pub(crate) async fn list_v1(
    lister: &Lister<'_>,
    input: ListObjectsInput,
) -> S3Result<ListObjectsOutput> {
    let prefix = input.prefix.clone().unwrap_or_default();
    let page = list_page(
        lister,
        &input.bucket,
        &prefix,
        delimiter(&input.delimiter),
        input.marker.as_deref(),
        input.marker.is_some(),
        input.max_keys,
    )
    .await?;
    let encode = Encoder::new(input.encoding_type.as_ref());
    Ok(ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(encode.text(&prefix)),
        delimiter: input.delimiter.as_deref().map(|d| encode.text(d)),
        marker: Some(
            input
                .marker
                .as_deref()
                .map(|m| encode.text(m))
                .unwrap_or_default(),
        ),
        max_keys: Some(input.max_keys.unwrap_or(MAX_KEYS as i32)),
        is_truncated: Some(page.truncated),
        next_marker: page
            .truncated
            .then(|| page.last.as_deref().map(|m| encode.text(m)))
            .flatten(),
        contents: Some(objects(&page.objects, &encode)),
        common_prefixes: Some(common_prefixes(&page.prefixes, &encode)),
        encoding_type: input.encoding_type,
        ..Default::default()
    })
}

/// Each object as its one version: every object has only the `null`
/// version, so a version-id marker adds nothing to the key marker.
pub(crate) async fn list_versions(
    lister: &Lister<'_>,
    input: ListObjectVersionsInput,
) -> S3Result<ListObjectVersionsOutput> {
    let prefix = input.prefix.clone().unwrap_or_default();
    let page = list_page(
        lister,
        &input.bucket,
        &prefix,
        delimiter(&input.delimiter),
        input.key_marker.as_deref(),
        input.key_marker.is_some(),
        input.max_keys,
    )
    .await?;
    let encode = Encoder::new(input.encoding_type.as_ref());
    let next_key_marker = page
        .truncated
        .then(|| page.last.as_deref().map(|m| encode.text(m)))
        .flatten();
    Ok(ListObjectVersionsOutput {
        name: Some(input.bucket),
        prefix: Some(encode.text(&prefix)),
        delimiter: input.delimiter.as_deref().map(|d| encode.text(d)),
        key_marker: Some(
            input
                .key_marker
                .as_deref()
                .map(|m| encode.text(m))
                .unwrap_or_default(),
        ),
        version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
        max_keys: Some(input.max_keys.unwrap_or(MAX_KEYS as i32)),
        is_truncated: Some(page.truncated),
        next_version_id_marker: next_key_marker.as_ref().map(|_| NULL_VERSION.to_string()),
        next_key_marker,
        versions: Some(versions(&page.objects, &encode)),
        common_prefixes: Some(common_prefixes(&page.prefixes, &encode)),
        encoding_type: input.encoding_type,
        ..Default::default()
    })
}

fn versions(entries: &[ListEntry], encode: &Encoder) -> Vec<ObjectVersion> {
    entries
        .iter()
        .map(|entry| ObjectVersion {
            key: Some(encode.text(&entry.key)),
            version_id: Some(NULL_VERSION.to_string()),
            is_latest: Some(true),
            size: Some(i64::try_from(entry.size).unwrap_or(i64::MAX)),
            last_modified: entry.created.and_then(crate::metadata::timestamp),
            storage_class: Some(ObjectVersionStorageClass::from_static(
                ObjectVersionStorageClass::STANDARD,
            )),
            ..Default::default()
        })
        .collect()
}

fn objects(entries: &[ListEntry], encode: &Encoder) -> Vec<Object> {
    entries
        .iter()
        .map(|entry| Object {
            key: Some(encode.text(&entry.key)),
            size: Some(i64::try_from(entry.size).unwrap_or(i64::MAX)),
            last_modified: entry.created.and_then(crate::metadata::timestamp),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            ..Default::default()
        })
        .collect()
}

fn common_prefixes(prefixes: &[String], encode: &Encoder) -> Vec<CommonPrefix> {
    prefixes
        .iter()
        .map(|prefix| CommonPrefix {
            prefix: Some(encode.text(prefix)),
        })
        .collect()
}

/// Continuation tokens are the last key of the page, opaque to clients.
fn encode_token(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)
}

fn decode_token(token: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is invalid"))
}

/// `encoding-type=url` asks for percent-encoded names (keys may hold
/// characters XML cannot carry).
struct Encoder {
    url: bool,
}

impl Encoder {
    fn new(encoding: Option<&EncodingType>) -> Encoder {
        Encoder {
            url: encoding.is_some_and(|e| e.as_str() == EncodingType::URL),
        }
    }

    fn text(&self, s: &str) -> String {
        if !self.url {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        for byte in s.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                    out.push(byte as char)
                }
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipel_proto::hostile;
    use proptest::prelude::*;

    fn object(key: &str) -> ListEntry {
        ListEntry {
            key: key.into(),
            is_prefix: false,
            size: 1,
            created: None,
        }
    }

    fn prefix(key: &str) -> ListEntry {
        ListEntry {
            key: key.into(),
            is_prefix: true,
            size: 0,
            created: None,
        }
    }

    fn names(page: &Page) -> (Vec<&str>, Vec<&str>) {
        (
            page.objects.iter().map(|o| o.key.as_str()).collect(),
            page.prefixes.iter().map(String::as_str).collect(),
        )
    }

    #[test]
    fn keys_and_prefixes_interleave_and_page() {
        let entries = vec![object("a"), prefix("b/"), object("c"), prefix("d/")];
        let page = paginate(entries.clone(), "", Some("/"), None, 3);
        assert_eq!(names(&page), (vec!["a", "c"], vec!["b/"]));
        assert!(page.truncated);
        assert_eq!(page.last.as_deref(), Some("c"));
        let next = paginate(entries.clone(), "", Some("/"), Some("c"), 3);
        assert_eq!(names(&next), (vec![], vec!["d/"]));
        assert!(!next.truncated);
        let empty = paginate(entries, "", Some("/"), None, 0);
        assert!(empty.truncated && empty.objects.is_empty() && empty.last.is_none());
    }

    #[test]
    fn pages_cut_from_one_listing_walk_it_whole() {
        let entries: Vec<ListEntry> = ["a/x", "b", "c/y", "c/z", "d", "e"]
            .into_iter()
            .map(object)
            .collect();
        let listing = merge(entries, "", Some("/"));
        let mut walked = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = cut(&listing, after.as_deref(), 2);
            let (objects, prefixes) = names(&page);
            walked.extend(objects.into_iter().chain(prefixes).map(String::from));
            if !page.truncated {
                break;
            }
            after = page.last.clone();
        }
        walked.sort();
        assert_eq!(walked, ["a/", "b", "c/", "d", "e"]);
    }

    #[test]
    fn other_delimiters_roll_up_recursive_listings() {
        let entries = vec![
            object("p/a-1"),
            object("p/a-2"),
            object("p/b"),
            object("p/c-x-y"),
        ];
        let page = paginate(entries, "p/", Some("-"), None, 10);
        assert_eq!(names(&page), (vec!["p/b"], vec!["p/a-", "p/c-"]));
    }

    #[test]
    fn order_is_by_utf8_bytes() {
        let entries = vec![object("é"), object("z"), object("A"), object("a b")];
        let page = paginate(entries, "", None, Some("A"), 10);
        assert_eq!(names(&page).0, vec!["a b", "z", "é"]);
    }

    #[test]
    fn url_encoding_and_tokens() {
        let url = Encoder::new(Some(&EncodingType::from_static(EncodingType::URL)));
        assert_eq!(url.text("a b/ü+&"), "a%20b/%C3%BC%2B%26");
        assert_eq!(Encoder::new(None).text("a b"), "a b");
        assert_eq!(decode_token(&encode_token("x/ü")).unwrap(), "x/ü");
        assert!(decode_token("!!").is_err());
    }

    /// A continuation token as a client sends it back: refused as an invalid
    /// argument, or decoded into a key whose token decodes to it again; the
    /// token of a page decodes to its last key.
    fn token_is_checked((last, token): (String, String)) -> Result<(), TestCaseError> {
        match decode_token(&token) {
            Ok(key) => prop_assert_eq!(decode_token(&encode_token(&key)).unwrap(), key),
            Err(error) => prop_assert_eq!(error.code().as_str(), "InvalidArgument"),
        }
        if token == encode_token(&last) {
            prop_assert_eq!(decode_token(&token).unwrap(), last);
        }
        Ok(())
    }

    archipel_proto::hostile_tests! {
        hostile_continuation_tokens_are_refused_or_round_trip:
            hostile::text().prop_flat_map(|last| {
                let token = hostile::text_or_mutated(encode_token(&last));
                (Just(last), token)
            })
            => token_is_checked;
    }
}
