//! Bucket CORS, as S3 does it: a bucket's rules (kept by the satellite with
//! the bucket) say which web origins may call it from a browser, with which
//! methods and request headers. `?cors` reads, replaces and deletes them;
//! a browser's preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) is answered from them before any
//! signature is asked for; and any request with an `Origin` that a rule
//! matches gets the `Access-Control-*` headers in its answer.

use std::sync::{Arc, OnceLock};

use archipel_client::{BucketAccessUpdate, BucketInfo, CorsRule, Project};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use s3s::dto::{
    CORSConfiguration, CORSRule, DeleteBucketCorsInput, DeleteBucketCorsOutput, GetBucketCorsInput,
    GetBucketCorsOutput, PutBucketCorsInput, PutBucketCorsOutput,
};
use s3s::{s3_error, S3Result};

use crate::errors::s3_error;
use crate::public::Public;
use crate::server::{xml_error, HttpResponse};

/// The methods a CORS rule may allow.
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];
/// S3's bound on the rules of one configuration.
const MAX_RULES: usize = 100;

/// The `Origin` of a request from a browser.
pub(crate) fn origin(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Whether `text` matches `pattern`, which may hold one `*` standing for
/// any run of characters.
fn matches(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let eq = |a: &str, b: &str| {
        if ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    match pattern.split_once('*') {
        None => eq(pattern, text),
        Some((head, tail)) => {
            text.len() >= head.len() + tail.len()
                && text.is_char_boundary(head.len())
                && text.is_char_boundary(text.len() - tail.len())
                && eq(head, &text[..head.len()])
                && eq(tail, &text[text.len() - tail.len()..])
        }
    }
}

/// The first rule allowing `origin` to use `method` with every one of
/// `request_headers`, as S3 picks it.
fn matching<'a>(
    rules: &'a [CorsRule],
    origin: &str,
    method: &str,
    request_headers: &[&str],
) -> Option<&'a CorsRule> {
    rules.iter().find(|rule| {
        rule.allowed_origins
            .iter()
            .any(|o| matches(o, origin, false))
            && rule.allowed_methods.iter().any(|m| m == method)
            && request_headers.iter().all(|requested| {
                rule.allowed_headers
                    .iter()
                    .any(|allowed| matches(allowed, requested, true))
            })
    })
}

/// The `Access-Control-*` headers answering `origin` under `rule`.
fn allow_headers(rule: &CorsRule, origin: &str) -> Vec<(HeaderName, String)> {
    let any_origin = rule.allowed_origins.iter().any(|o| o == "*");
    let mut headers = vec![
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            if any_origin {
                "*".into()
            } else {
                origin.into()
            },
        ),
        (
            header::ACCESS_CONTROL_ALLOW_METHODS,
            rule.allowed_methods.join(", "),
        ),
        (
            header::VARY,
            "Origin, Access-Control-Request-Headers, Access-Control-Request-Method".into(),
        ),
    ];
    if !any_origin {
        headers.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true".into()));
    }
    if !rule.expose_headers.is_empty() {
        headers.push((
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            rule.expose_headers.join(", "),
        ));
    }
    if let Some(max_age) = rule.max_age_seconds {
        headers.push((header::ACCESS_CONTROL_MAX_AGE, max_age.to_string()));
    }
    headers
}

fn insert_all(target: &mut HeaderMap, headers: Vec<(HeaderName, String)>) {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            target.insert(name, value);
        }
    }
}

/// Where the access check leaves the CORS headers of a request's answer;
/// the server's request wrapper puts one in requests with an `Origin`.
#[derive(Clone, Default)]
pub(crate) struct ResponseHeaders(Arc<OnceLock<Vec<(HeaderName, String)>>>);

impl ResponseHeaders {
    /// Adds the headers found for the request to its answer.
    pub(crate) fn apply(&self, response: &mut HttpResponse) {
        if let Some(headers) = self.0.get() {
            insert_all(response.headers_mut(), headers.clone());
        }
    }
}

/// Finds the rule of `bucket` that allows `origin` to use `method` and
/// leaves its headers for the answer.
pub(crate) fn remember_response_headers(
    extensions: &mut http::Extensions,
    bucket: &BucketInfo,
    origin: &str,
    method: &str,
) {
    let Some(slot) = extensions.get::<ResponseHeaders>() else {
        return;
    };
    if let Some(rule) = matching(&bucket.access.cors, origin, method, &[]) {
        let _ = slot.0.set(allow_headers(rule, origin));
    }
}

/// The bucket a request names: the host's subdomain when `hosts` says so,
/// else the path's first segment.
fn bucket_of<B>(
    request: &http::Request<B>,
    hosts: Option<&crate::vhost::VirtualHosts>,
) -> Option<String> {
    use s3s::host::S3Host;
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if let (Some(hosts), Some(host)) = (hosts, host) {
        if let Ok(virtual_host) = hosts.parse_host_header(host) {
            if let Some(bucket) = virtual_host.bucket() {
                return Some(bucket.to_string());
            }
        }
    }
    let first = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()?;
    let decoded = percent_encoding::percent_decode_str(first)
        .decode_utf8()
        .ok()?;
    (!decoded.is_empty()).then(|| decoded.into_owned())
}

/// S3's refusal of a preflight.
fn forbidden(message: &str) -> HttpResponse {
    xml_error(StatusCode::FORBIDDEN, "AccessForbidden", message, "")
}

/// Answers a browser's preflight (`OPTIONS`) from the rules of the bucket
/// it names.
pub(crate) async fn preflight<B>(
    public: &Public,
    hosts: Option<&crate::vhost::VirtualHosts>,
    request: &http::Request<B>,
) -> HttpResponse {
    let headers = request.headers();
    let Some(origin) = origin(headers) else {
        return xml_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Insufficient information. Origin request header needed.",
            "",
        );
    };
    let Some(method) = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
    else {
        return xml_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid Access-Control-Request-Method: null",
            "",
        );
    };
    let Some(bucket) = bucket_of(request, hosts) else {
        return forbidden("CORSResponse: Bucket not found");
    };
    let owner = match public.owner(&bucket).await {
        Ok(Some(owner)) => owner,
        Ok(None) => return forbidden("CORSResponse: Bucket not found"),
        Err(e) => {
            let status = e.status_code().unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return xml_error(status, "ServiceUnavailable", "cannot read the bucket", "");
        }
    };
    let rules = &owner.bucket.access.cors;
    if rules.is_empty() {
        return forbidden("CORSResponse: CORS is not enabled for this bucket.");
    }
    let requested: Vec<String> = headers
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    let requested_refs: Vec<&str> = requested.iter().map(String::as_str).collect();
    let Some(rule) = matching(rules, &origin, method, &requested_refs) else {
        return forbidden(
            "CORSResponse: This CORS request is not allowed. This is usually because the \
             evalution of Origin, request method / Access-Control-Request-Method or \
             Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        );
    };
    let mut answer = allow_headers(rule, &origin);
    if !requested.is_empty() {
        answer.push((header::ACCESS_CONTROL_ALLOW_HEADERS, requested.join(", ")));
    }
    let mut response = HttpResponse::new(s3s::Body::empty());
    insert_all(response.headers_mut(), answer);
    response
}

/// The rules of a `<CORSConfiguration>`, checked as S3 checks them.
fn from_configuration(configuration: CORSConfiguration) -> S3Result<Vec<CorsRule>> {
    let rules = configuration.cors_rules;
    if rules.is_empty() || rules.len() > MAX_RULES {
        return Err(s3_error!(
            MalformedXML,
            "a CORS configuration has 1 to {MAX_RULES} rules"
        ));
    }
    rules
        .into_iter()
        .map(|rule| {
            if let Some(method) = rule
                .allowed_methods
                .iter()
                .find(|m| !METHODS.contains(&m.as_str()))
            {
                return Err(s3_error!(
                    InvalidRequest,
                    "Found unsupported HTTP method in CORS config. Unsupported method is {method}"
                ));
            }
            let headers = rule.allowed_headers.unwrap_or_default();
            if let Some(pattern) = rule
                .allowed_origins
                .iter()
                .chain(&headers)
                .find(|p| p.matches('*').count() > 1)
            {
                return Err(s3_error!(
                    InvalidRequest,
                    "{pattern} can not have more than one wildcard."
                ));
            }
            Ok(CorsRule {
                id: rule.id,
                allowed_origins: rule.allowed_origins,
                allowed_methods: rule.allowed_methods,
                allowed_headers: headers,
                expose_headers: rule.expose_headers.unwrap_or_default(),
                max_age_seconds: rule.max_age_seconds.and_then(|s| u32::try_from(s).ok()),
            })
        })
        .collect()
}

fn to_configuration(rules: Vec<CorsRule>) -> Vec<CORSRule> {
    rules
        .into_iter()
        .map(|rule| CORSRule {
            allowed_headers: Some(rule.allowed_headers).filter(|h| !h.is_empty()),
            allowed_methods: rule.allowed_methods,
            allowed_origins: rule.allowed_origins,
            expose_headers: Some(rule.expose_headers).filter(|h| !h.is_empty()),
            id: rule.id,
            max_age_seconds: rule.max_age_seconds.and_then(|s| i32::try_from(s).ok()),
        })
        .collect()
}

async fn replace(project: &Project, bucket: &str, rules: Vec<CorsRule>) -> S3Result<()> {
    let update = BucketAccessUpdate {
        cors: Some(rules),
        ..BucketAccessUpdate::default()
    };
    crate::acl::update_access(project, bucket, &update).await
}

pub(crate) async fn put(
    project: &Project,
    input: PutBucketCorsInput,
) -> S3Result<PutBucketCorsOutput> {
    let rules = from_configuration(input.cors_configuration)?;
    replace(project, &input.bucket, rules).await?;
    Ok(PutBucketCorsOutput::default())
}

pub(crate) async fn get(
    project: &Project,
    input: GetBucketCorsInput,
) -> S3Result<GetBucketCorsOutput> {
    let rules = project
        .bucket(&input.bucket)
        .await
        .map_err(s3_error)?
        .access
        .cors;
    if rules.is_empty() {
        return Err(s3_error!(
            NoSuchCORSConfiguration,
            "The CORS configuration does not exist"
        ));
    }
    Ok(GetBucketCorsOutput {
        cors_rules: Some(to_configuration(rules)),
    })
}

pub(crate) async fn delete(
    project: &Project,
    input: DeleteBucketCorsInput,
) -> S3Result<DeleteBucketCorsOutput> {
    replace(project, &input.bucket, Vec::new()).await?;
    Ok(DeleteBucketCorsOutput::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        CorsRule {
            allowed_origins: owned(origins),
            allowed_methods: owned(methods),
            allowed_headers: owned(headers),
            ..CorsRule::default()
        }
    }

    #[test]
    fn wildcards_stand_for_any_run_of_characters() {
        assert!(matches(
            "https://*.example.com",
            "https://app.example.com",
            false
        ));
        assert!(!matches(
            "https://*.example.com",
            "https://example.com",
            false
        ));
        assert!(matches("*", "null", false));
        assert!(matches("x-amz-*", "X-Amz-Date", true));
        assert!(!matches("x-amz-*", "X-Amz-Date", false));
        assert!(matches("a*a", "aa", false));
        assert!(!matches("ab*ba", "aba", false));
    }

    #[test]
    fn the_first_rule_allowing_origin_method_and_headers_wins() {
        let rules = [
            rule(&["https://a.example"], &["GET"], &[]),
            rule(&["*"], &["GET", "PUT"], &["content-type", "x-amz-*"]),
        ];
        let first = matching(&rules, "https://a.example", "GET", &[]).unwrap();
        assert_eq!(first, &rules[0]);
        let second = matching(&rules, "https://a.example", "GET", &["Content-Type"]).unwrap();
        assert_eq!(second, &rules[1]);
        assert!(matching(&rules, "https://b.example", "DELETE", &[]).is_none());
        assert!(matching(&rules, "https://b.example", "PUT", &["authorization"]).is_none());
        let headers = allow_headers(&rules[1], "https://b.example");
        assert!(headers.contains(&(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".into())));
        let headers = allow_headers(&rules[0], "https://a.example");
        assert!(headers.contains(&(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            "https://a.example".into()
        )));
    }
}
