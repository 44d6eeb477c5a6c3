//! Virtual-hosted-style addressing: with `domain_names = ["s3.example"]`,
//! `Host: photos.s3.example[:port]` names the bucket `photos`, and
//! `Host: s3.example` is the service itself. Any other host (an IP address,
//! `localhost`, a name not configured) is path-style, so path-style requests
//! keep working whatever name the client uses.
//!
//! s3s's own `MultiDomain` is not used: it keeps the port in the name it
//! matches (`photos.s3.example:7480` is no subdomain of `s3.example`) and
//! takes any unknown host for a bucket name (CNAME style), which would turn
//! `localhost:7480/photos/key` into bucket `localhost:7480`.

use s3s::host::{S3Host, VirtualHost};
use s3s::S3Result;

use crate::Error;

/// The base domains buckets are subdomains of, longest first so that the
/// most specific one wins when they nest.
#[derive(Clone)]
pub(crate) struct VirtualHosts {
    domains: Vec<String>,
}

impl VirtualHosts {
    pub(crate) fn new(domains: &[String]) -> Result<VirtualHosts, Error> {
        let mut checked = Vec::new();
        for domain in domains {
            let valid = !domain.is_empty()
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                return Err(Error::InvalidDomainName(domain.clone()));
            }
            checked.push(domain.to_ascii_lowercase());
        }
        checked.sort_by_key(|d| std::cmp::Reverse(d.len()));
        checked.dedup();
        Ok(VirtualHosts { domains: checked })
    }
}

/// `host` without a trailing `:port`.
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

impl S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = without_port(host);
        for domain in &self.domains {
            if name.eq_ignore_ascii_case(domain) {
                return Ok(VirtualHost::new(domain.as_str()));
            }
            // Host names are case-insensitive; bucket names are lowercase.
            let bucket = name
                .len()
                .checked_sub(domain.len() + 1)
                .filter(|&dot| {
                    name.is_char_boundary(dot)
                        && name[dot..].starts_with('.')
                        && name[dot + 1..].eq_ignore_ascii_case(domain)
                })
                .map(|dot| &name[..dot]);
            if let Some(bucket) = bucket.filter(|b| !b.is_empty()) {
                return Ok(
                    VirtualHost::new(domain.as_str()).with_bucket(bucket.to_ascii_lowercase())
                );
            }
        }
        Ok(VirtualHost::new(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipel_proto::hostile;
    use proptest::prelude::*;

    #[test]
    fn buckets_come_from_configured_domains_only() {
        let hosts = VirtualHosts::new(&["s3.localhost".into(), "Storage.Example".into()]).unwrap();
        let parse = |host: &str| {
            let vh = hosts.parse_host_header(host).unwrap();
            vh.bucket().map(str::to_string)
        };
        assert_eq!(parse("photos.s3.localhost:7480").as_deref(), Some("photos"));
        assert_eq!(parse("Photos.S3.localhost").as_deref(), Some("photos"));
        assert_eq!(parse("a.b.s3.localhost").as_deref(), Some("a.b"));
        assert_eq!(parse("x.storage.example").as_deref(), Some("x"));
        assert_eq!(parse("s3.localhost:7480"), None);
        assert_eq!(parse("localhost:7480"), None);
        assert_eq!(parse("evils3.localhost"), None);
        assert_eq!(parse(".s3.localhost"), None);
        assert_eq!(parse("other.example"), None);

        // Nested domains: the most specific one names the bucket.
        let nested = VirtualHosts::new(&["localhost".into(), "s3.localhost".into()]).unwrap();
        let vh = nested.parse_host_header("b.s3.localhost").unwrap();
        assert_eq!(vh.bucket(), Some("b"));

        for bad in [
            "",
            "s3.localhost:7480",
            "a..b",
            "http://s3.localhost",
            ".s3",
        ] {
            assert!(VirtualHosts::new(&[bad.to_string()]).is_err(), "{bad:?}");
        }
    }

    /// A Host header against configured domains (refused at start-up unless
    /// domain names): always answered, and a bucket only when the host, less
    /// its port, is that bucket under a configured domain.
    fn host_is_checked((domains, host): (Vec<String>, String)) -> Result<(), TestCaseError> {
        let Ok(hosts) = VirtualHosts::new(&domains) else {
            return Ok(());
        };
        let Ok(parsed) = hosts.parse_host_header(&host) else {
            return Err(TestCaseError::fail("the Host header was refused"));
        };
        if let Some(bucket) = parsed.bucket() {
            prop_assert!(!bucket.is_empty());
            prop_assert!(hosts.domains.iter().any(|d| d == parsed.domain()));
            let name = without_port(&host).to_ascii_lowercase();
            prop_assert_eq!(name, format!("{bucket}.{}", parsed.domain()));
        }
        Ok(())
    }

    archipel_proto::hostile_tests! {
        hostile_host_headers_name_a_bucket_only_under_a_configured_domain: (
            prop::collection::vec(
                prop_oneof![
                    Just("s3.localhost".to_string()),
                    Just("Storage.Example".to_string()),
                    "[a-z0-9-]{1,6}(\\.[a-zA-Z0-9-]{1,6}){0,2}",
                    hostile::text(),
                ],
                0..3,
            ),
            prop_oneof![
                hostile::text_or_mutated("photos.s3.localhost:7480".into()),
                hostile::text_or_mutated("Photos.Storage.Example".into()),
                "[a-z.]{0,12}\\.(s3\\.localhost|storage\\.example)(:[0-9]{1,6})?",
            ],
        ) => host_is_checked;
    }
}
