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
//! ListObjectVersions reads every version below the prefix (the satellite
//! keeps them as rows of their own, see [`Project::list_versions`]) and cuts
//! its page after the key and version markers.

use std::collections::BTreeMap;
use std::sync::Arc;

use archipel_client::{ListEntry, ListedVersion, Project};
use base64::Engine;
use s3s::dto::{
    CommonPrefix, DeleteMarkerEntry, EncodingType, ListObjectVersionsInput,
    ListObjectVersionsOutput, ListObjectsInput, ListObjectsOutput, ListObjectsV2Input,
    ListObjectsV2Output, Object, ObjectStorageClass, ObjectVersion, ObjectVersionStorageClass,
    Owner,
};
use s3s::{s3_error, S3Result};

use crate::errors::s3_error;
use crate::snapshots::Scope;
use crate::versions::NULL_VERSION;

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
        match rolled_up(&entry, prefix, delimiter) {
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

/// The common prefix `entry` rolls up into at `delimiter`, if any.
fn rolled_up(entry: &ListEntry, prefix: &str, delimiter: Option<&str>) -> Option<String> {
    if entry.is_prefix {
        return Some(entry.key.clone());
    }
    let d = delimiter?;
    let rest = entry.key.get(prefix.len()..)?;
    rest.find(d)
        .map(|i| format!("{prefix}{}", &rest[..i + d.len()]))
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
    // As S3: `max-keys=0` is an empty page, not a truncated one.
    if max_keys == 0 {
        return page;
    }
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
    let max_keys = page_size(max_keys)?;
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

/// A request's `max-keys`: S3's default and limit is 1000.
fn page_size(requested: Option<i32>) -> S3Result<usize> {
    match requested {
        None => Ok(MAX_KEYS),
        Some(n) => Ok(usize::try_from(n)
            .map_err(|_| s3_error!(InvalidArgument, "max-keys must not be negative"))?
            .min(MAX_KEYS)),
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
        contents: Some(objects(
            &page.objects,
            &encode,
            (input.fetch_owner == Some(true)).then_some(lister.access_key),
        )),
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
        contents: Some(objects(&page.objects, &encode, Some(lister.access_key))),
        common_prefixes: Some(common_prefixes(&page.prefixes, &encode)),
        encoding_type: input.encoding_type,
        ..Default::default()
    })
}

/// Every version below the prefix, rolled up at the delimiter: a page of
/// versions and common prefixes after the key marker (and within its key,
/// after the version-id marker).
pub(crate) async fn list_versions(
    lister: &Lister<'_>,
    input: ListObjectVersionsInput,
) -> S3Result<ListObjectVersionsOutput> {
    let prefix = input.prefix.clone().unwrap_or_default();
    let max_keys = page_size(input.max_keys)?;
    let delimiter = delimiter(&input.delimiter);
    if input.version_id_marker.is_some() && input.key_marker.is_none() {
        return Err(s3_error!(
            InvalidArgument,
            "A version-id marker cannot be specified without a key marker."
        ));
    }
    let entries = lister
        .project
        .list_versions(&input.bucket, &prefix, delimiter != Some("/"))
        .await
        .map_err(s3_error)?;
    let listing = merge_versions(entries, &prefix, delimiter);
    let start = versions_start(
        &listing,
        input.key_marker.as_deref(),
        input.version_id_marker.as_deref(),
    );
    let rest = &listing[start..];
    let page = &rest[..rest.len().min(max_keys)];
    // As S3: `max-keys=0` is an empty page, not a truncated one.
    let truncated = max_keys > 0 && rest.len() > page.len();
    let encode = Encoder::new(input.encoding_type.as_ref());
    let (next_key_marker, next_version_id_marker) = match page.last().filter(|_| truncated) {
        Some((name, entry)) => (
            Some(encode.text(name)),
            entry
                .as_ref()
                .and_then(|e| e.version.as_ref())
                .map(listed_version_id),
        ),
        None => (None, None),
    };
    let (mut versions, mut markers, mut prefixes) = (Vec::new(), Vec::new(), Vec::new());
    for (name, entry) in page {
        match entry
            .as_ref()
            .and_then(|e| e.version.as_ref().map(|v| (e, v)))
        {
            Some((entry, version)) if version.delete_marker => markers.push(DeleteMarkerEntry {
                key: Some(encode.text(&entry.key)),
                version_id: Some(listed_version_id(version)),
                is_latest: Some(version.latest),
                last_modified: entry.created.and_then(crate::metadata::timestamp),
                ..Default::default()
            }),
            Some((entry, version)) => versions.push(ObjectVersion {
                key: Some(encode.text(&entry.key)),
                version_id: Some(listed_version_id(version)),
                is_latest: Some(version.latest),
                size: Some(i64::try_from(entry.size).unwrap_or(i64::MAX)),
                last_modified: entry.created.and_then(crate::metadata::timestamp),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                ..Default::default()
            }),
            None => prefixes.push(name.clone()),
        }
    }
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
        is_truncated: Some(truncated),
        next_key_marker,
        next_version_id_marker,
        versions: Some(versions),
        delete_markers: Some(markers),
        common_prefixes: Some(common_prefixes(&prefixes, &encode)),
        encoding_type: input.encoding_type,
        ..Default::default()
    })
}

/// A version's id in a listing: as S3 lists them, `null` for null
/// versions even in a bucket whose versioning was never enabled.
fn listed_version_id(version: &ListedVersion) -> String {
    if version.null {
        NULL_VERSION.to_string()
    } else {
        version.id.to_string()
    }
}

/// Versions (by key, newest first within a key, as listed) and common
/// prefixes (once each) in S3's order.
fn merge_versions(
    entries: Vec<ListEntry>,
    prefix: &str,
    delimiter: Option<&str>,
) -> Vec<(String, Option<ListEntry>)> {
    let mut merged: Vec<(String, Option<ListEntry>)> = Vec::new();
    let mut prefixes = std::collections::BTreeSet::new();
    for entry in entries {
        match rolled_up(&entry, prefix, delimiter) {
            Some(common) => {
                if prefixes.insert(common.clone()) {
                    merged.push((common, None));
                }
            }
            None => merged.push((entry.key.clone(), Some(entry))),
        }
    }
    // Stable: a key's versions keep their newest-first order.
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    merged
}

/// Where a page of `listing` starts: after every version of `key_marker`,
/// or with `version_marker`, after that version of it.
fn versions_start(
    listing: &[(String, Option<ListEntry>)],
    key_marker: Option<&str>,
    version_marker: Option<&str>,
) -> usize {
    let Some(key) = key_marker else {
        return 0;
    };
    let after_key = listing.partition_point(|(name, _)| name.as_str() <= key);
    let Some(marker) = version_marker.filter(|m| !m.is_empty()) else {
        return after_key;
    };
    let is_marker = |entry: &Option<ListEntry>| {
        entry
            .as_ref()
            .and_then(|e| e.version.as_ref())
            .is_some_and(|v| listed_version_id(v) == marker)
    };
    listing
        .iter()
        .position(|(name, entry)| name == key && is_marker(entry))
        .map_or(after_key, |at| at + 1)
}

/// The objects of a page; each names `owner` when given (ListObjects v1
/// always, v2 with `fetch-owner`).
fn objects(entries: &[ListEntry], encode: &Encoder, owner: Option<&str>) -> Vec<Object> {
    entries
        .iter()
        .map(|entry| Object {
            key: Some(encode.text(&entry.key)),
            size: Some(i64::try_from(entry.size).unwrap_or(i64::MAX)),
            last_modified: entry.created.and_then(crate::metadata::timestamp),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            owner: owner.map(|id| Owner {
                display_name: Some(id.to_string()),
                id: Some(id.to_string()),
            }),
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
            version: None,
        }
    }

    fn prefix(key: &str) -> ListEntry {
        ListEntry {
            key: key.into(),
            is_prefix: true,
            size: 0,
            created: None,
            version: None,
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
        assert!(!empty.truncated && empty.objects.is_empty() && empty.last.is_none());
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
