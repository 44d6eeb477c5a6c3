//! ACLs, public access and CORS end to end against the in-process gateway,
//! on both metabase backends: canned ACLs on buckets and objects stored and
//! returned as grants, the public access block, unsigned requests answered
//! as S3 answers them (what public ACLs allow, 403 or 404 otherwise), and
//! bucket CORS rules answering browsers' preflights and adding their
//! headers to answers.

use std::time::Duration;

use crate::common::admin::{fetch, Answer};
use crate::common::{code, status, Fixture};
use archipel_tests::{on_both_backends, Backend};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    AccessControlPolicy, BucketCannedAcl, BucketVersioningStatus, CorsConfiguration, CorsRule,
    Grant, Grantee, ObjectCannedAcl, Owner, Permission, PublicAccessBlockConfiguration, Type,
    VersioningConfiguration,
};
use aws_sdk_s3::Client;
use bytes::Bytes;

on_both_backends!(
    canned_acls_are_stored_and_returned,
    public_access_blocks_override_acls,
    unsigned_requests_get_what_acls_allow,
    cors_rules_answer_browsers
);

const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

/// (grantee: the owner's id or a group's URI, permission) of each grant.
fn described(grants: &[Grant]) -> Vec<(String, String)> {
    grants
        .iter()
        .map(|grant| {
            let grantee = grant.grantee().unwrap();
            let who = match grantee.r#type() {
                Type::Group => grantee.uri().unwrap().to_string(),
                _ => format!("owner:{}", grantee.id().unwrap()),
            };
            (who, grant.permission().unwrap().as_str().to_string())
        })
        .collect()
}

async fn bucket_grants(s3: &Client, bucket: &str) -> Vec<(String, String)> {
    let acl = s3.get_bucket_acl().bucket(bucket).send().await.unwrap();
    described(acl.grants())
}

async fn object_grants(s3: &Client, bucket: &str, key: &str) -> Vec<(String, String)> {
    let acl = s3
        .get_object_acl()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    described(acl.grants())
}

fn grants_of(owner: &str, groups: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut grants = vec![(format!("owner:{owner}"), "FULL_CONTROL".to_string())];
    grants.extend(groups.iter().map(|(g, p)| (g.to_string(), p.to_string())));
    grants
}

async fn put(
    s3: &Client,
    bucket: &str,
    key: &str,
    body: &'static [u8],
    acl: Option<ObjectCannedAcl>,
) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .set_acl(acl)
        .body(ByteStream::from_static(body))
        .send()
        .await
        .unwrap();
}

async fn canned_acls_are_stored_and_returned(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let s3 = &fx.client;
    let owner = fx.config.credentials[0].access_key_id.clone();
    s3.create_bucket()
        .bucket("acls")
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    assert_eq!(
        bucket_grants(s3, "acls").await,
        grants_of(&owner, &[(ALL_USERS, "READ")])
    );
    let acl = s3.get_bucket_acl().bucket("acls").send().await.unwrap();
    assert_eq!(acl.owner().unwrap().id(), Some(owner.as_str()));
    for (canned, groups) in [
        (BucketCannedAcl::Private, vec![]),
        (
            BucketCannedAcl::PublicReadWrite,
            vec![(ALL_USERS, "READ"), (ALL_USERS, "WRITE")],
        ),
        (
            BucketCannedAcl::AuthenticatedRead,
            vec![(AUTHENTICATED_USERS, "READ")],
        ),
    ] {
        s3.put_bucket_acl()
            .bucket("acls")
            .acl(canned)
            .send()
            .await
            .unwrap();
        assert_eq!(bucket_grants(s3, "acls").await, grants_of(&owner, &groups));
    }
    // An ACL body that a canned ACL describes is taken as that canned ACL;
    // grants to particular accounts are not supported.
    let policy = |grantee: Grantee, permission: Permission| {
        AccessControlPolicy::builder()
            .owner(Owner::builder().id(&owner).build())
            .grants(
                Grant::builder()
                    .grantee(
                        Grantee::builder()
                            .r#type(Type::CanonicalUser)
                            .id(&owner)
                            .build()
                            .unwrap(),
                    )
                    .permission(Permission::FullControl)
                    .build(),
            )
            .grants(
                Grant::builder()
                    .grantee(grantee)
                    .permission(permission)
                    .build(),
            )
            .build()
    };
    let all_users = Grantee::builder()
        .r#type(Type::Group)
        .uri(ALL_USERS)
        .build()
        .unwrap();
    s3.put_bucket_acl()
        .bucket("acls")
        .access_control_policy(policy(all_users, Permission::Read))
        .send()
        .await
        .unwrap();
    assert_eq!(
        bucket_grants(s3, "acls").await,
        grants_of(&owner, &[(ALL_USERS, "READ")])
    );
    let someone = Grantee::builder()
        .r#type(Type::CanonicalUser)
        .id("SOMEONEELSE")
        .build()
        .unwrap();
    let e = s3
        .put_bucket_acl()
        .bucket("acls")
        .access_control_policy(policy(someone, Permission::Read))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotImplemented");
    let e = s3
        .put_bucket_acl()
        .bucket("acls")
        .grant_read("id=SOMEONEELSE")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotImplemented");
    assert_eq!(
        bucket_grants(s3, "acls").await,
        grants_of(&owner, &[(ALL_USERS, "READ")])
    );

    // Objects: x-amz-acl on PUT and multipart uploads, ?acl in place, and
    // copies that take the request's ACL, never the source's.
    put(
        s3,
        "acls",
        "open",
        b"for all",
        Some(ObjectCannedAcl::PublicRead),
    )
    .await;
    put(s3, "acls", "closed", b"for me", None).await;
    assert_eq!(
        object_grants(s3, "acls", "open").await,
        grants_of(&owner, &[(ALL_USERS, "READ")])
    );
    assert_eq!(
        object_grants(s3, "acls", "closed").await,
        grants_of(&owner, &[])
    );
    s3.put_object_acl()
        .bucket("acls")
        .key("closed")
        .acl(ObjectCannedAcl::AuthenticatedRead)
        .send()
        .await
        .unwrap();
    assert_eq!(
        object_grants(s3, "acls", "closed").await,
        grants_of(&owner, &[(AUTHENTICATED_USERS, "READ")])
    );
    s3.copy_object()
        .copy_source("acls/open")
        .bucket("acls")
        .key("copy")
        .send()
        .await
        .unwrap();
    assert_eq!(
        object_grants(s3, "acls", "copy").await,
        grants_of(&owner, &[])
    );
    s3.copy_object()
        .copy_source("acls/closed")
        .bucket("acls")
        .key("copy")
        .acl(ObjectCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    assert_eq!(
        object_grants(s3, "acls", "copy").await,
        grants_of(&owner, &[(ALL_USERS, "READ")])
    );
    let upload = s3
        .create_multipart_upload()
        .bucket("acls")
        .key("parts")
        .acl(ObjectCannedAcl::PublicReadWrite)
        .send()
        .await
        .unwrap();
    let part = s3
        .upload_part()
        .bucket("acls")
        .key("parts")
        .upload_id(upload.upload_id().unwrap())
        .part_number(1)
        .body(ByteStream::from_static(b"one part"))
        .send()
        .await
        .unwrap();
    s3.complete_multipart_upload()
        .bucket("acls")
        .key("parts")
        .upload_id(upload.upload_id().unwrap())
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .parts(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(1)
                        .e_tag(part.e_tag().unwrap())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        object_grants(s3, "acls", "parts").await,
        grants_of(&owner, &[(ALL_USERS, "READ"), (ALL_USERS, "WRITE")])
    );
    let e = s3
        .put_object()
        .bucket("acls")
        .key("granted")
        .grant_read("id=SOMEONEELSE")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotImplemented");
    let e = s3
        .get_object_acl()
        .bucket("acls")
        .key("granted")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");
    let e = s3
        .get_bucket_acl()
        .bucket("nothere")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchBucket");
    fx.shutdown().await;
}

async fn public_access_blocks_override_acls(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("blocked").send().await.unwrap();
    let e = s3
        .get_public_access_block()
        .bucket("blocked")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchPublicAccessBlockConfiguration");
    assert_eq!(status(&e), 404);
    s3.put_public_access_block()
        .bucket("blocked")
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let block = s3
        .get_public_access_block()
        .bucket("blocked")
        .send()
        .await
        .unwrap();
    let block = block.public_access_block_configuration().unwrap();
    assert_eq!(block.block_public_acls(), Some(true));
    assert_eq!(block.ignore_public_acls(), Some(false));
    assert_eq!(block.block_public_policy(), Some(false));
    assert_eq!(block.restrict_public_buckets(), Some(true));

    // Public ACLs are refused, and the refused upload stores nothing;
    // private ones still go through.
    let e = s3
        .put_bucket_acl()
        .bucket("blocked")
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = s3
        .put_object()
        .bucket("blocked")
        .key("k")
        .acl(ObjectCannedAcl::PublicRead)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = s3
        .head_object()
        .bucket("blocked")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 404);
    put(s3, "blocked", "k", b"x", Some(ObjectCannedAcl::Private)).await;
    let e = s3
        .put_object_acl()
        .bucket("blocked")
        .key("k")
        .acl(ObjectCannedAcl::PublicRead)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");

    // Deleted, the block no longer refuses anything.
    s3.delete_public_access_block()
        .bucket("blocked")
        .send()
        .await
        .unwrap();
    let e = s3
        .get_public_access_block()
        .bucket("blocked")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchPublicAccessBlockConfiguration");
    s3.put_bucket_acl()
        .bucket("blocked")
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    fx.shutdown().await;
}

/// An unsigned request to the gateway.
async fn anonymous(fx: &Fixture, method: &str, path: &str, body: &'static [u8]) -> Answer {
    let url = format!("{}{path}", fx.endpoint);
    fetch(method, &url, &[], Bytes::from_static(body)).await
}

/// The S3 error code in an answer's XML body.
fn error_code(answer: &Answer) -> String {
    let text = answer.text();
    let start = text.find("<Code>").map_or(0, |i| i + "<Code>".len());
    let end = text.find("</Code>").unwrap_or(start);
    text[start..end].to_string()
}

async fn unsigned_requests_get_what_acls_allow(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("shared").send().await.unwrap();
    put(
        s3,
        "shared",
        "open",
        b"for all",
        Some(ObjectCannedAcl::PublicRead),
    )
    .await;
    put(s3, "shared", "closed", b"for me", None).await;

    // A private bucket: its public object reads, nothing else does.
    let open = anonymous(&fx, "GET", "/shared/open", b"").await;
    assert_eq!((open.status, open.body.as_slice()), (200, &b"for all"[..]));
    let head = anonymous(&fx, "HEAD", "/shared/open", b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("7"));
    for path in [
        "/shared/closed",
        "/shared/missing",
        "/shared",
        "/shared?list-type=2",
    ] {
        let refused = anonymous(&fx, "GET", path, b"").await;
        assert_eq!(
            (refused.status, error_code(&refused)),
            (403, "AccessDenied".into()),
            "{path}"
        );
    }
    let missing = anonymous(&fx, "GET", "/nobucket/open", b"").await;
    assert_eq!(
        (missing.status, error_code(&missing)),
        (404, "NoSuchBucket".into())
    );
    let service = anonymous(&fx, "GET", "/", b"").await;
    assert_eq!(service.status, 403);

    // public-read: anyone lists, a missing key says so, writes are refused,
    // and so is every operation on the bucket's settings.
    s3.put_bucket_acl()
        .bucket("shared")
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    let listing = anonymous(&fx, "GET", "/shared?list-type=2", b"").await;
    assert_eq!(listing.status, 200);
    assert!(listing.text().contains("<Key>open</Key>"));
    assert!(listing.text().contains("<Key>closed</Key>"));
    let missing = anonymous(&fx, "GET", "/shared/missing", b"").await;
    assert_eq!(
        (missing.status, error_code(&missing)),
        (404, "NoSuchKey".into())
    );
    let closed = anonymous(&fx, "GET", "/shared/closed", b"").await;
    assert_eq!(closed.status, 403);
    let write = anonymous(&fx, "PUT", "/shared/new", b"from anyone").await;
    assert_eq!(
        (write.status, error_code(&write)),
        (403, "AccessDenied".into())
    );
    for (method, path) in [
        ("GET", "/shared?acl"),
        ("PUT", "/shared?acl"),
        ("DELETE", "/shared"),
    ] {
        let refused = anonymous(&fx, method, path, b"").await;
        assert_eq!(refused.status, 403, "{method} {path}");
    }

    // public-read-write: anyone writes and deletes too.
    s3.put_bucket_acl()
        .bucket("shared")
        .acl(BucketCannedAcl::PublicReadWrite)
        .send()
        .await
        .unwrap();
    let write = anonymous(&fx, "PUT", "/shared/new", b"from anyone").await;
    assert_eq!(write.status, 200);
    assert_eq!(
        crate::common::get_bytes(s3, "shared", "new").await,
        b"from anyone"
    );
    let delete = anonymous(&fx, "DELETE", "/shared/new", b"").await;
    assert_eq!(delete.status, 204);
    let e = s3
        .head_object()
        .bucket("shared")
        .key("new")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 404);

    // Each version has its own ACL.
    s3.create_bucket().bucket("history").send().await.unwrap();
    s3.put_bucket_versioning()
        .bucket("history")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let published = s3
        .put_object()
        .bucket("history")
        .key("doc")
        .acl(ObjectCannedAcl::PublicRead)
        .body(ByteStream::from_static(b"published"))
        .send()
        .await
        .unwrap();
    put(s3, "history", "doc", b"draft", None).await;
    let current = anonymous(&fx, "GET", "/history/doc", b"").await;
    assert_eq!(current.status, 403);
    let path = format!("/history/doc?versionId={}", published.version_id().unwrap());
    let old = anonymous(&fx, "GET", &path, b"").await;
    assert_eq!((old.status, old.body.as_slice()), (200, &b"published"[..]));

    // IgnorePublicAcls makes every public ACL private again.
    s3.put_public_access_block()
        .bucket("shared")
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .ignore_public_acls(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    for path in ["/shared/open", "/shared?list-type=2"] {
        let refused = anonymous(&fx, "GET", path, b"").await;
        assert_eq!(refused.status, 403, "{path}");
    }
    let write = anonymous(&fx, "PUT", "/shared/new", b"from anyone").await;
    assert_eq!(write.status, 403);
    fx.shutdown().await;
}

fn cors_rule(origins: &[&str], methods: &[&str]) -> aws_sdk_s3::types::builders::CorsRuleBuilder {
    let mut rule = CorsRule::builder();
    for origin in origins {
        rule = rule.allowed_origins(*origin);
    }
    for method in methods {
        rule = rule.allowed_methods(*method);
    }
    rule
}

async fn preflight(fx: &Fixture, path: &str, headers: &[(&str, &str)]) -> Answer {
    let url = format!("{}{path}", fx.endpoint);
    fetch("OPTIONS", &url, headers, Bytes::new()).await
}

async fn cors_rules_answer_browsers(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("web").send().await.unwrap();
    put(s3, "web", "page", b"<p>hi</p>", None).await;
    let e = s3.get_bucket_cors().bucket("web").send().await.unwrap_err();
    assert_eq!(
        (code(&e).as_str(), status(&e)),
        ("NoSuchCORSConfiguration", 404)
    );
    let asking = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "PUT"),
    ];
    let off = preflight(&fx, "/web/page", &asking).await;
    assert_eq!(off.status, 403);
    assert!(off.text().contains("CORS is not enabled"));

    let configuration = CorsConfiguration::builder()
        .cors_rules(
            cors_rule(&["https://app.example"], &["GET", "PUT"])
                .allowed_headers("content-type")
                .allowed_headers("x-amz-*")
                .expose_headers("ETag")
                .max_age_seconds(600)
                .id("app")
                .build()
                .unwrap(),
        )
        .cors_rules(cors_rule(&["*"], &["GET"]).build().unwrap())
        .build()
        .unwrap();
    s3.put_bucket_cors()
        .bucket("web")
        .cors_configuration(configuration)
        .send()
        .await
        .unwrap();
    let rules = s3.get_bucket_cors().bucket("web").send().await.unwrap();
    let rules = rules.cors_rules();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].id(), Some("app"));
    assert_eq!(rules[0].allowed_methods(), ["GET", "PUT"]);
    assert_eq!(rules[0].allowed_headers(), ["content-type", "x-amz-*"]);
    assert_eq!(rules[0].expose_headers(), ["ETag"]);
    assert_eq!(rules[0].max_age_seconds(), Some(600));
    assert_eq!(rules[1].allowed_origins(), ["*"]);

    // Preflights: the first rule that allows origin, method and headers.
    let mut asking_headers = asking.to_vec();
    asking_headers.push(("access-control-request-headers", "Content-Type, X-Amz-Date"));
    let allowed = preflight(&fx, "/web/page", &asking_headers).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        allowed.header("access-control-allow-methods"),
        Some("GET, PUT")
    );
    assert_eq!(
        allowed.header("access-control-allow-headers"),
        Some("Content-Type, X-Amz-Date")
    );
    assert_eq!(allowed.header("access-control-max-age"), Some("600"));
    assert_eq!(
        allowed.header("access-control-expose-headers"),
        Some("ETag")
    );
    let other = [
        ("origin", "https://other.example"),
        ("access-control-request-method", "GET"),
    ];
    let anyone = preflight(&fx, "/web/page", &other).await;
    assert_eq!(anyone.status, 200);
    assert_eq!(anyone.header("access-control-allow-origin"), Some("*"));
    let refused = preflight(
        &fx,
        "/web/page",
        &[
            ("origin", "https://other.example"),
            ("access-control-request-method", "PUT"),
        ],
    )
    .await;
    assert_eq!(
        (refused.status, error_code(&refused)),
        (403, "AccessForbidden".into())
    );
    let unlisted_header = preflight(
        &fx,
        "/web/page",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "authorization"),
        ],
    )
    .await;
    assert_eq!(unlisted_header.status, 403);
    let no_origin = preflight(
        &fx,
        "/web/page",
        &[("access-control-request-method", "GET")],
    )
    .await;
    assert_eq!(no_origin.status, 400);
    let no_bucket = preflight(&fx, "/elsewhere/page", &asking).await;
    assert_eq!(no_bucket.status, 403);

    // A signed request (a presigned GET) from a page gets the headers of
    // the rule that allows it; one without an Origin gets none.
    let presigned = s3
        .get_object()
        .bucket("web")
        .key("page")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let url = format!("{}{}", fx.endpoint, fx.path_of(&presigned));
    let from_page = fetch(
        "GET",
        &url,
        &[("origin", "https://app.example")],
        Bytes::new(),
    )
    .await;
    assert_eq!(from_page.status, 200);
    assert_eq!(
        from_page.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        from_page.header("access-control-expose-headers"),
        Some("ETag")
    );
    let plain = fetch("GET", &url, &[], Bytes::new()).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("access-control-allow-origin"), None);

    // Rules S3 refuses are refused whole; deleting turns CORS off.
    let bad = CorsConfiguration::builder()
        .cors_rules(cors_rule(&["*"], &["PATCH"]).build().unwrap())
        .build()
        .unwrap();
    let e = s3
        .put_bucket_cors()
        .bucket("web")
        .cors_configuration(bad)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRequest");
    let wildcards = CorsConfiguration::builder()
        .cors_rules(
            cors_rule(&["https://*.*.example"], &["GET"])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let e = s3
        .put_bucket_cors()
        .bucket("web")
        .cors_configuration(wildcards)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRequest");
    assert_eq!(
        s3.get_bucket_cors()
            .bucket("web")
            .send()
            .await
            .unwrap()
            .cors_rules()
            .len(),
        2
    );
    s3.delete_bucket_cors().bucket("web").send().await.unwrap();
    let e = s3.get_bucket_cors().bucket("web").send().await.unwrap_err();
    assert_eq!(code(&e), "NoSuchCORSConfiguration");
    let off = preflight(&fx, "/web/page", &asking).await;
    assert_eq!(off.status, 403);
    fx.shutdown().await;
}
