//! Public links, served on the gateway's second listener: registration of
//! access grants and the pages and bytes of the objects they reach.
//!
//! - `POST /api/v1/access` with `{"access_grant": "...", "public": true}`
//!   stores the grant in the registry and answers a fresh S3 key pair and the
//!   links' base URL. Anyone may register: it only stores a grant the caller
//!   already holds.
//! - `/s/<access key id>/<bucket>/<key>`: a page about the object (name,
//!   size, type, a download link, a preview for video, audio and images);
//!   with `?download` the bytes as an attachment. `/raw/<access key
//!   id>/<bucket>/<key>`: the bytes inline, for `<video src>` and the like.
//!   Bytes come with HTTP ranges (one range per request: a multi-range
//!   request is answered with its first satisfiable range), `ETag`,
//!   `Last-Modified` and the conditional headers, streamed from the network:
//!   a range reads only the stripes it needs, nothing is held whole.
//! - `/s/<access key id>/<bucket>/<prefix>/` (or the bucket alone): a listing
//!   of that level, in pages of [`PAGE`] entries with a "more" link;
//!   `/s/<access key id>/` lists the buckets.
//!
//! Only registrations made public are served; any other access key id is
//! answered 404 exactly like an unknown one. A grant its satellite refuses
//! (revoked, expired) is 403. No answer carries a grant: failures are logged
//! and answered with a sentence of our own.

use std::sync::Arc;
use std::time::SystemTime;

use archipel_client::{ByteRange, Error as ClientError, ObjectDownload, ObjectInfo, Project};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::TryStreamExt;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

use crate::grants::Grants;
use crate::metadata::{self, ObjectHeaders};
use crate::metrics::LinkCounters;
use crate::objects::DownloadStream;
use crate::Error;

/// Entries a listing page shows; more are behind its "more" link.
const PAGE: usize = 200;

/// What the routes share.
struct Links {
    grants: Arc<Grants>,
    /// The links' base URL, without a trailing `/`.
    base_url: String,
    counters: Arc<LinkCounters>,
}

type Shared = State<Arc<Links>>;

/// The routes of the linksharing listener.
pub(crate) fn router(grants: Arc<Grants>, base_url: String, counters: Arc<LinkCounters>) -> Router {
    let links = Arc::new(Links {
        grants,
        base_url: base_url.trim_end_matches('/').to_string(),
        counters,
    });
    Router::new()
        .route("/api/v1/access", post(register))
        .route("/s/{id}", get(buckets))
        .route("/s/{id}/", get(buckets))
        .route("/s/{id}/{*path}", get(shared))
        .route("/raw/{id}/{*path}", get(raw))
        .fallback(|| async { page(StatusCode::NOT_FOUND, "Not found", NOT_FOUND_TEXT) })
        .with_state(links)
}

const NOT_FOUND_TEXT: &str = "<p>There is nothing here: the link is wrong, or what it \
    pointed to was deleted or is no longer shared.</p>";

// ---- Registration ------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    access_grant: String,
    /// Whether links may serve the grant; a private registration is an S3
    /// key pair only.
    #[serde(default)]
    public: bool,
}

#[derive(Serialize)]
struct RegisterResponse {
    access_key_id: String,
    secret_access_key: String,
    endpoint: String,
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn register(State(links): Shared, body: Bytes) -> Response {
    let request: RegisterRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the body must be JSON {{\"access_grant\": \"...\", \"public\": true}}: {e}"
                ),
            )
        }
    };
    let Some(registry) = links.grants.registry() else {
        return json_error(StatusCode::NOT_FOUND, "this gateway has no registry");
    };
    match registry
        .register(&request.access_grant, request.public)
        .await
    {
        Ok(registered) => {
            let answer = RegisterResponse {
                access_key_id: registered.access_key_id,
                secret_access_key: registered.secret_access_key,
                endpoint: links.base_url.clone(),
            };
            match serde_json::to_string(&answer) {
                Ok(body) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response(),
                Err(_) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode"),
            }
        }
        // The client library's sentence says what is wrong, never the grant.
        Err(Error::InvalidAccess(e)) => json_error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e) => {
            tracing::warn!("cannot register an access grant: {e}");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the gateway cannot store the registration",
            )
        }
    }
}

// ---- Routing of shared paths -------------------------------------------

async fn buckets(State(links): Shared, Path(id): Path<String>) -> Response {
    let project = match links.project(&id).await {
        Ok(project) => project,
        Err(response) => return *response,
    };
    match project.list_buckets().await {
        Ok(buckets) => {
            let mut rows = String::new();
            for bucket in &buckets {
                let href = format!("{}/{}/", links.share_url(&id), encode_path(&bucket.name));
                rows.push_str(&format!(
                    "<tr><td><a href=\"{}\">{}/</a></td><td></td></tr>\n",
                    escape(&href),
                    escape(&bucket.name)
                ));
            }
            listing_page("Buckets", &rows, None)
        }
        Err(e) => failure(&e),
    }
}

async fn shared(
    State(links): Shared,
    Path((id, path)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (bucket, key) = split_path(&path);
    let query = uri.query().unwrap_or("");
    if key.is_empty() || key.ends_with('/') {
        let after = query_value(query, "after");
        return links.listing(&id, bucket, key, after.as_deref()).await;
    }
    if query_flag(query, "download") {
        return links
            .bytes(&id, bucket, key, &method, &headers, Disposition::Attachment)
            .await;
    }
    links.object_page(&id, bucket, key).await
}

async fn raw(
    State(links): Shared,
    Path((id, path)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let (bucket, key) = split_path(&path);
    if key.is_empty() {
        return page(StatusCode::NOT_FOUND, "Not found", NOT_FOUND_TEXT);
    }
    links
        .bytes(&id, bucket, key, &method, &headers, Disposition::Inline)
        .await
}

/// `bucket/key...` → (bucket, key); the key may be empty.
fn split_path(path: &str) -> (&str, &str) {
    path.split_once('/').unwrap_or((path, ""))
}

/// Whether the query has `name` (`?download`, `?download=1`).
fn query_flag(query: &str, name: &str) -> bool {
    query
        .split('&')
        .any(|pair| pair.split('=').next() == Some(name))
}

/// The percent-decoded value of `name` in the query.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix(name)?.strip_prefix('=')?;
        percent_decode_str(value)
            .decode_utf8()
            .ok()
            .map(|v| v.into_owned())
    })
}

enum Disposition {
    /// As the object says (embedded in a page: `<video src>`).
    Inline,
    /// Saved as a file named after the key.
    Attachment,
}

impl Links {
    fn share_url(&self, id: &str) -> String {
        format!("{}/s/{}", self.base_url, encode_path(id))
    }

    fn raw_url(&self, id: &str, bucket: &str, key: &str) -> String {
        format!(
            "{}/raw/{}/{}/{}",
            self.base_url,
            encode_path(id),
            encode_path(bucket),
            encode_path(key)
        )
    }

    /// The project a public registration acts with; unknown and private
    /// ids alike are 404, so a link does not tell which ids exist.
    async fn project(&self, id: &str) -> Result<Project, Box<Response>> {
        match self.grants.public_project(id).await {
            Ok(Some(project)) => Ok(project),
            Ok(None) => Err(Box::new(page(
                StatusCode::NOT_FOUND,
                "Not found",
                NOT_FOUND_TEXT,
            ))),
            Err(Error::Access { source, .. }) => Err(Box::new(failure(&source))),
            Err(e) => {
                tracing::warn!("cannot look up a link's access key id: {e}");
                Err(Box::new(page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Unavailable",
                    "<p>The gateway cannot read its registry of links.</p>",
                )))
            }
        }
    }

    async fn object_page(&self, id: &str, bucket: &str, key: &str) -> Response {
        let project = match self.project(id).await {
            Ok(project) => project,
            Err(response) => return *response,
        };
        let info = match project.stat(bucket, key).await {
            Ok(info) => info,
            Err(e) => return failure(&e),
        };
        let content_type = content_type(&info);
        let raw = self.raw_url(id, bucket, key);
        let download = format!(
            "{}/{}/{}?download",
            self.share_url(id),
            encode_path(bucket),
            encode_path(key)
        );
        let name = key.rsplit('/').next().unwrap_or(key);
        let preview = match content_type.split('/').next() {
            Some("video") => format!(
                "<video controls preload=\"metadata\" src=\"{}\"></video>",
                escape(&raw)
            ),
            Some("audio") => format!(
                "<audio controls preload=\"metadata\" src=\"{}\"></audio>",
                escape(&raw)
            ),
            Some("image") => format!("<img src=\"{}\" alt=\"{}\">", escape(&raw), escape(name)),
            _ => String::new(),
        };
        let folder = key.rfind('/').map_or("", |i| &key[..=i]);
        let up = format!(
            "{}/{}/{}",
            self.share_url(id),
            encode_path(bucket),
            encode_path(folder)
        );
        let body = format!(
            "<p class=\"path\"><a href=\"{up}\">{bucket}/{folder}</a></p>\n\
             <h1>{name}</h1>\n{preview}\n<dl>\n\
             <dt>Size</dt><dd data-size=\"{size}\">{human}</dd>\n\
             <dt>Type</dt><dd>{content_type}</dd>\n\
             <dt>Modified</dt><dd>{modified}</dd>\n</dl>\n\
             <p><a class=\"download\" href=\"{download}\">Download</a></p>\n",
            up = escape(&up),
            bucket = escape(bucket),
            folder = escape(folder),
            name = escape(name),
            size = info.size,
            human = human_size(info.size),
            content_type = escape(&content_type),
            modified = httpdate::fmt_http_date(info.created),
            download = escape(&download),
        );
        page(StatusCode::OK, name, &body)
    }

    async fn listing(&self, id: &str, bucket: &str, prefix: &str, after: Option<&str>) -> Response {
        let project = match self.project(id).await {
            Ok(project) => project,
            Err(response) => return *response,
        };
        let mut entries = match project
            .list_after(bucket, prefix, false, after, PAGE + 1)
            .await
        {
            Ok(entries) => entries,
            Err(e) => return failure(&e),
        };
        if entries.is_empty() && !prefix.is_empty() && after.is_none() {
            return page(StatusCode::NOT_FOUND, "Not found", NOT_FOUND_TEXT);
        }
        let more = entries.len() > PAGE;
        entries.truncate(PAGE);
        let level = format!(
            "{}/{}/{}",
            self.share_url(id),
            encode_path(bucket),
            encode_path(prefix)
        );
        let mut rows = String::new();
        if !prefix.is_empty() {
            let parent = prefix[..prefix.len() - 1]
                .rfind('/')
                .map_or("", |i| &prefix[..=i]);
            let href = format!(
                "{}/{}/{}",
                self.share_url(id),
                encode_path(bucket),
                encode_path(parent)
            );
            rows.push_str(&format!(
                "<tr><td><a href=\"{}\">../</a></td><td></td></tr>\n",
                escape(&href)
            ));
        }
        for entry in &entries {
            let name = &entry.key[prefix.len().min(entry.key.len())..];
            let href = format!(
                "{}/{}/{}",
                self.share_url(id),
                encode_path(bucket),
                encode_path(&entry.key)
            );
            let size = if entry.is_prefix {
                String::new()
            } else {
                human_size(entry.size)
            };
            rows.push_str(&format!(
                "<tr><td><a href=\"{}\">{}</a></td><td>{}</td></tr>\n",
                escape(&href),
                escape(name),
                size
            ));
        }
        let more = more
            .then(|| entries.last())
            .flatten()
            .map(|last| format!("{level}?after={}", encode_path(&last.key)));
        listing_page(&format!("{bucket}/{prefix}"), &rows, more.as_deref())
    }

    /// The object's bytes (or a range of them) as a streamed response.
    async fn bytes(
        &self,
        id: &str,
        bucket: &str,
        key: &str,
        method: &Method,
        headers: &HeaderMap,
        disposition: Disposition,
    ) -> Response {
        let project = match self.project(id).await {
            Ok(project) => project,
            Err(response) => return *response,
        };
        let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
        // The segment a `bytes=N-` range starts in comes with the object.
        let hint = range_header.and_then(first_offset).unwrap_or(0);
        let object = match project.open_object(bucket, key, hint).await {
            Ok(object) => object,
            // A range starting past the end: open at the start to answer 416.
            Err(ClientError::InvalidRange { .. }) if hint > 0 => {
                match project.open_object(bucket, key, 0).await {
                    Ok(object) => object,
                    Err(e) => return failure(&e),
                }
            }
            Err(e) => return failure(&e),
        };
        let info = object.info();
        let size = info.size;
        let etag = etag(info);
        let modified = httpdate::fmt_http_date(info.created);
        let mut response = Response::new(Body::empty());
        {
            let out = response.headers_mut();
            insert(out, header::ETAG, &etag);
            insert(out, header::LAST_MODIFIED, &modified);
            insert(out, header::ACCEPT_RANGES, "bytes");
        }
        if not_modified(headers, &etag, info.created) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        let range = match range_header {
            Some(range) if if_range_holds(headers, &etag, &modified) => parse_range(range, size),
            _ => RangeRequest::Full,
        };
        let (offset, length) = match range {
            RangeRequest::Full => (0, size),
            RangeRequest::Partial { first, last } => {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                insert(
                    response.headers_mut(),
                    header::CONTENT_RANGE,
                    &format!("bytes {first}-{last}/{size}"),
                );
                (first, last - first + 1)
            }
            RangeRequest::Unsatisfiable => {
                *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                insert(
                    response.headers_mut(),
                    header::CONTENT_RANGE,
                    &format!("bytes */{size}"),
                );
                return response;
            }
        };
        let stored = ObjectHeaders::from_object(info);
        {
            let out = response.headers_mut();
            insert(out, header::CONTENT_TYPE, &content_type(info));
            insert(out, header::CONTENT_LENGTH, &length.to_string());
            // The object is someone's content on the links' origin: never
            // sniffed into something else, never run as a page.
            insert(out, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
            insert(out, header::CONTENT_SECURITY_POLICY, "sandbox");
            if let Some(encoding) = &stored.content_encoding {
                insert(out, header::CONTENT_ENCODING, encoding);
            }
            if let Some(cache) = &stored.cache_control {
                insert(out, header::CACHE_CONTROL, cache);
            }
            match disposition {
                Disposition::Attachment => {
                    let name = key.rsplit('/').next().unwrap_or(key);
                    insert(
                        out,
                        header::CONTENT_DISPOSITION,
                        &format!(
                            "attachment; filename*=UTF-8''{}",
                            utf8_percent_encode(name, FILENAME)
                        ),
                    );
                }
                Disposition::Inline => {
                    if let Some(stored) = &stored.content_disposition {
                        insert(out, header::CONTENT_DISPOSITION, stored);
                    }
                }
            }
        }
        if *method != Method::HEAD && length > 0 {
            *response.body_mut() = self.stream(object, offset, length);
        }
        response
    }

    fn stream(&self, object: ObjectDownload, offset: u64, length: u64) -> Body {
        let counters = self.counters.clone();
        let range = ByteRange {
            offset,
            length: Some(length),
        };
        Body::from_stream(
            DownloadStream::start(object, Some(range))
                .inspect_ok(move |frame| counters.sent(frame.len() as u64)),
        )
    }
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    // Values are ours or were stored as HTTP headers; one that is not a
    // valid header value is left out rather than failing the response.
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn content_type(info: &ObjectInfo) -> String {
    info.content_type
        .clone()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "application/octet-stream".into())
}

/// The ETag the S3 gateway stored (the content's MD5), else a weak one from
/// what identifies this version (key, size, creation time): objects stored
/// by other tools have none.
fn etag(info: &ObjectInfo) -> String {
    if let Some(stored) = metadata::etag(info) {
        return format!("\"{}\"", stored.value());
    }
    let created = info
        .created
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut hasher = blake3::Hasher::new();
    hasher.update(info.key.as_bytes());
    hasher.update(&info.size.to_be_bytes());
    hasher.update(&created.to_be_bytes());
    format!("W/\"{}\"", &hasher.finalize().to_hex()[..32])
}

/// Whether the conditional headers of a GET say the client's copy is
/// current: If-None-Match (weak comparison), else If-Modified-Since.
fn not_modified(headers: &HeaderMap, etag: &str, created: SystemTime) -> bool {
    if let Some(wanted) = headers.get(header::IF_NONE_MATCH) {
        let Ok(wanted) = wanted.to_str() else {
            return false;
        };
        let ours = etag.trim_start_matches("W/");
        return wanted
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours);
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|since| {
            let seconds = |t: SystemTime| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            };
            seconds(created) <= seconds(since)
        })
}

/// Whether a Range applies under If-Range: without one it does; with one,
/// only if it names this version (a strong ETag, or the exact date).
fn if_range_holds(headers: &HeaderMap, etag: &str, modified: &str) -> bool {
    match headers.get(header::IF_RANGE).map(|v| v.to_str()) {
        None => true,
        Some(Ok(value)) => {
            let value = value.trim();
            (value == etag && !etag.starts_with("W/")) || value == modified
        }
        Some(Err(_)) => false,
    }
}

// ---- Ranges ---------------------------------------------------------------

/// What a `Range` header asks of an object of a given size.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// No usable range (absent, another unit, malformed): the whole object.
    Full,
    /// Bytes `first..=last`, within the object.
    Partial { first: u64, last: u64 },
    /// No range of the set lies within the object: 416.
    Unsatisfiable,
}

/// Reads a `Range` header (RFC 9110 §14.1): `bytes=a-b`, `bytes=a-` and
/// `bytes=-n`. A set of several ranges is answered with its first
/// satisfiable one (a 206 with one `Content-Range`, which clients accept);
/// a header that does not parse is ignored, as the RFC allows.
fn parse_range(header: &str, size: u64) -> RangeRequest {
    let Some((unit, set)) = header.split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Full;
    }
    let mut specs = Vec::new();
    for spec in set.split(',') {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return RangeRequest::Full;
        };
        let number = |text: &str| -> Option<u64> {
            let text = text.trim();
            (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse().ok())
                .flatten()
        };
        let parsed = match (first.trim().is_empty(), last.trim().is_empty()) {
            // `-n`: the last n bytes.
            (true, false) => number(last).map(|n| (None, Some(n))),
            // `a-`: from a to the end.
            (false, true) => number(first).map(|a| (Some(a), None)),
            (false, false) => match (number(first), number(last)) {
                (Some(a), Some(b)) if a <= b => Some((Some(a), Some(b))),
                _ => None,
            },
            (true, true) => None,
        };
        match parsed {
            Some(spec) => specs.push(spec),
            None => return RangeRequest::Full,
        }
    }
    if specs.is_empty() {
        return RangeRequest::Full;
    }
    for spec in specs {
        let satisfiable = match spec {
            (Some(first), last) if first < size => {
                Some((first, last.map_or(size - 1, |last| last.min(size - 1))))
            }
            (None, Some(suffix)) if suffix > 0 && size > 0 => {
                Some((size.saturating_sub(suffix), size - 1))
            }
            _ => None,
        };
        if let Some((first, last)) = satisfiable {
            return RangeRequest::Partial { first, last };
        }
    }
    RangeRequest::Unsatisfiable
}

/// The offset a range header starts at when it is a plain `bytes=a-...`, to
/// open the object at the segment holding it.
fn first_offset(header: &str) -> Option<u64> {
    let set = header.trim().strip_prefix("bytes=")?;
    let first = set.split(',').next()?.split_once('-')?.0.trim();
    first.parse().ok()
}

// ---- Errors and HTML ------------------------------------------------------

/// A client-library failure as a page: missing is 404, refused (a revoked
/// or expired grant, or a place its restrictions do not reach) 403, the
/// network unable 503. The
/// detail goes to the log only.
fn failure(error: &ClientError) -> Response {
    match error {
        ClientError::ObjectNotFound { .. } | ClientError::BucketNotFound(_) => {
            page(StatusCode::NOT_FOUND, "Not found", NOT_FOUND_TEXT)
        }
        ClientError::Unauthenticated => page(
            StatusCode::FORBIDDEN,
            "Access refused",
            "<p>The network refuses this link's access: it was revoked or has expired.</p>",
        ),
        // Decided from the grant's own restrictions (or by the satellite):
        // it tells nothing about what exists there.
        ClientError::PermissionDenied(_) => page(
            StatusCode::FORBIDDEN,
            "Access refused",
            "<p>This link's access does not reach this.</p>",
        ),
        _ => {
            tracing::warn!("a link could not be served: {error}");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "<p>The network cannot serve this right now; try again later.</p>",
            )
        }
    }
}

fn listing_page(title: &str, rows: &str, more: Option<&str>) -> Response {
    let more = more.map_or(String::new(), |href| {
        format!(
            "<p><a class=\"more\" href=\"{}\">more</a></p>\n",
            escape(href)
        )
    });
    page(
        StatusCode::OK,
        title,
        &format!(
            "<h1>{}</h1>\n<table>\n<tr><th>Name</th><th>Size</th></tr>\n{rows}</table>\n{more}",
            escape(title)
        ),
    )
}

/// A whole HTML page around `body` (already escaped HTML).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · Archipel</title>\n<style>\n\
         body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }}\n\
         video, img, audio {{ max-width: 100%; }}\n\
         td {{ padding: 0.2rem 1rem 0.2rem 0; }}\n\
         dt {{ font-weight: bold; }}\n</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The pages have no script; nothing else may run on them either.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src *; media-src *",
            ),
        ],
        html,
    )
        .into_response()
}

/// `text` safe in HTML text and in quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What stays as it is in a path: unreserved characters and `/`.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// What stays as it is in an RFC 8187 `filename*`: unreserved characters.
const FILENAME: &AsciiSet = &PATH.add(b'/');

/// `path` percent-encoded for a URL path, its `/` kept.
fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH).to_string()
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipel_proto::hostile;
    use proptest::prelude::*;

    #[test]
    fn single_ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Partial { first: 0, last: 9 });
        assert_eq!(
            parse_range("bytes=10-", 100),
            Partial {
                first: 10,
                last: 99
            }
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            Partial {
                first: 90,
                last: 99
            }
        );
        assert_eq!(
            parse_range("bytes=-1000", 100),
            Partial { first: 0, last: 99 }
        );
        assert_eq!(
            parse_range("bytes=90-1000", 100),
            Partial {
                first: 90,
                last: 99
            }
        );
        assert_eq!(
            parse_range("BYTES = 5-5", 100),
            Partial { first: 5, last: 5 }
        );
        assert_eq!(
            parse_range("bytes=99-", 100),
            Partial {
                first: 99,
                last: 99
            }
        );
    }

    #[test]
    fn unsatisfiable_ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), Unsatisfiable);
    }

    #[test]
    fn malformed_ranges_are_ignored() {
        use RangeRequest::*;
        for header in [
            "bytes=9-0",
            "bytes=a-b",
            "bytes=-",
            "bytes=",
            "bytes=1",
            "items=0-1",
            "0-1",
            "bytes=+1-2",
            "bytes=0-1,x",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(parse_range(header, 100), Full, "{header}");
        }
    }

    #[test]
    fn a_range_set_answers_its_first_satisfiable_range() {
        use RangeRequest::*;
        assert_eq!(
            parse_range("bytes=0-1, 5-9", 100),
            Partial { first: 0, last: 1 }
        );
        assert_eq!(
            parse_range("bytes=200-300,-3", 100),
            Partial {
                first: 97,
                last: 99
            }
        );
        assert_eq!(parse_range("bytes=200-300,400-", 100), Unsatisfiable);
    }

    #[test]
    fn first_offsets_name_the_segment_to_open() {
        assert_eq!(first_offset("bytes=1048576-"), Some(1_048_576));
        assert_eq!(first_offset("bytes=5-9,20-30"), Some(5));
        assert_eq!(first_offset("bytes=-5"), None);
        assert_eq!(first_offset("items=5-"), None);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("plain/name.mp4"), "plain/name.mp4");
        assert_eq!(
            encode_path("a b/<c>?#%\"é"),
            "a%20b/%3Cc%3E%3F%23%25%22%C3%A9"
        );
    }

    #[test]
    fn query_flags_and_values() {
        assert!(query_flag("download", "download"));
        assert!(query_flag("x=1&download=1", "download"));
        assert!(!query_flag("downloads", "download"));
        assert_eq!(
            query_value("after=a%2Fb%20c", "after").as_deref(),
            Some("a/b c")
        );
        assert_eq!(query_value("afterx=1", "after"), None);
    }

    #[test]
    fn conditional_headers() {
        let created = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let with = |name: header::HeaderName, value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_str(value).unwrap());
            headers
        };
        let etag = "\"abc\"";
        assert!(not_modified(
            &with(header::IF_NONE_MATCH, "\"abc\""),
            etag,
            created
        ));
        assert!(not_modified(
            &with(header::IF_NONE_MATCH, "\"x\", W/\"abc\""),
            etag,
            created
        ));
        assert!(not_modified(
            &with(header::IF_NONE_MATCH, "*"),
            etag,
            created
        ));
        assert!(!not_modified(
            &with(header::IF_NONE_MATCH, "\"x\""),
            etag,
            created
        ));
        let date = httpdate::fmt_http_date(created);
        assert!(not_modified(
            &with(header::IF_MODIFIED_SINCE, &date),
            etag,
            created
        ));
        let before = httpdate::fmt_http_date(created - std::time::Duration::from_secs(1));
        assert!(!not_modified(
            &with(header::IF_MODIFIED_SINCE, &before),
            etag,
            created
        ));
        assert!(if_range_holds(&HeaderMap::new(), etag, &date));
        assert!(if_range_holds(&with(header::IF_RANGE, etag), etag, &date));
        assert!(if_range_holds(&with(header::IF_RANGE, &date), etag, &date));
        assert!(!if_range_holds(
            &with(header::IF_RANGE, "\"old\""),
            etag,
            &date
        ));
        assert!(!if_range_holds(
            &with(header::IF_RANGE, "W/\"abc\""),
            "W/\"abc\"",
            &date
        ));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(22 * 1024 * 1024), "22.0 MiB");
    }

    /// Any Range header, of any object size, parses without a panic into a
    /// range inside the object.
    fn ranges_stay_inside((header, size): (String, u64)) -> Result<(), TestCaseError> {
        if let RangeRequest::Partial { first, last } = parse_range(&header, size) {
            prop_assert!(first <= last && last < size);
        }
        let _ = first_offset(&header);
        Ok(())
    }

    archipel_proto::hostile_tests! {
        hostile_range_headers_parse_inside_the_object: (
            prop_oneof![
                hostile::text_or_mutated("bytes=0-99,-5,200-".into()),
                hostile::text(),
            ],
            prop_oneof![Just(0u64), Just(1), 0..1_000_000u64, Just(u64::MAX)],
        ) => ranges_stay_inside;
    }
}
