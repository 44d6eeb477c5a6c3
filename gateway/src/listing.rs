//! ListObjects (v1) and ListObjectsV2: prefix, delimiter, max-keys, markers
//! and continuation tokens, common prefixes, lexicographic (UTF-8 byte) order.
//!
//! With the delimiter `/` the satellite lists one level; with no delimiter it
//! lists recursively; any other delimiter is applied to a recursive listing.
//! The client library lists everything below the prefix at once, so each
//! page is cut from a full listing (see the report on paged listing).

use std::collections::BTreeMap;

use archipel_client::{ListEntry, Project};
use base64::Engine;
use s3s::dto::{
    CommonPrefix, EncodingType, ListObjectsInput, ListObjectsOutput, ListObjectsV2Input,
    ListObjectsV2Output, Object, ObjectStorageClass,
};
use s3s::{s3_error, S3Result};

use crate::errors::s3_error;

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

/// Cuts one page from `entries` (all of the listing below `prefix`): rolls
/// keys up to common prefixes at `delimiter`, and keeps at most `max_keys`
/// keys and prefixes that sort after `after`.
fn paginate(
    entries: Vec<ListEntry>,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max_keys: usize,
) -> Page {
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
    let mut page = Page {
        objects: Vec::new(),
        prefixes: Vec::new(),
        truncated: false,
        last: None,
    };
    let mut taken = 0;
    for (name, entry) in merged {
        if after.is_some_and(|after| name.as_str() <= after) {
            continue;
        }
        if taken == max_keys {
            page.truncated = true;
            break;
        }
        taken += 1;
        page.last = Some(name.clone());
        match entry {
            Some(object) => page.objects.push(object),
            None => page.prefixes.push(name),
        }
    }
    page
}

async fn list_page(
    project: &Project,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max_keys: Option<i32>,
) -> S3Result<Page> {
    let max_keys = match max_keys {
        None => MAX_KEYS,
        Some(n) => usize::try_from(n)
            .map_err(|_| s3_error!(InvalidArgument, "max-keys must not be negative"))?
            .min(MAX_KEYS),
    };
    let entries = project
        .list(bucket, prefix, delimiter != Some("/"))
        .await
        .map_err(s3_error)?;
    Ok(paginate(entries, prefix, delimiter, after, max_keys))
}

/// An empty delimiter means none.
fn delimiter(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|d| !d.is_empty())
}

pub(crate) async fn list_v2(
    project: &Project,
    input: ListObjectsV2Input,
) -> S3Result<ListObjectsV2Output> {
    let prefix = input.prefix.clone().unwrap_or_default();
    let token_key = match &input.continuation_token {
        Some(token) => Some(decode_token(token)?),
        None => None,
    };
    let after = token_key.as_deref().or(input.start_after.as_deref());
    let page = list_page(
        project,
        &input.bucket,
        &prefix,
        delimiter(&input.delimiter),
        after,
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
    project: &Project,
    input: ListObjectsInput,
) -> S3Result<ListObjectsOutput> {
    let prefix = input.prefix.clone().unwrap_or_default();
    let page = list_page(
        project,
        &input.bucket,
        &prefix,
        delimiter(&input.delimiter),
        input.marker.as_deref(),
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
}
