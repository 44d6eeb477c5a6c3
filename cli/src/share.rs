//! `archipel share`: a restricted grant, printed alone on the first line;
//! with `--url` or `--register` also registered with a linksharing service
//! (the S3 gateway's links listener: `POST {base}/api/v1/access`), which
//! answers an access key id, its secret and the links' public base URL.
//! `--url` registers the grant as public and prints a link per shared
//! location; `--register` prints the S3 credentials for the gateway.

use std::time::{Duration, SystemTime};

use archipel_client::{Permissions, Project, Share};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::output::outln;
use crate::{location, CliError};

/// How long registration may take, connection included.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from a linksharing service.
const MAX_ANSWER: usize = 64 * 1024;

#[derive(clap::Args)]
pub(crate) struct ShareFlags {
    /// What to share: `ap://BUCKET` or `ap://BUCKET/PREFIX/` (whole path
    /// components; `ap://b/photos` opens the object `photos` and
    /// everything below `photos/`).
    #[arg(required = true)]
    locations: Vec<String>,
    /// Download and list (the default).
    #[arg(long, group = "permission")]
    readonly: bool,
    /// Upload and list; no reading, deleting or overwriting.
    #[arg(long, group = "permission")]
    writeonly: bool,
    /// Read, list, write and delete (but not bypass Object Lock governance).
    #[arg(long, group = "permission")]
    readwrite: bool,
    /// With --readwrite: may also shorten or remove Object Lock retentions
    /// in governance mode and delete the versions they hold. Leave it off
    /// for backup grants, so a stolen grant cannot destroy what is locked.
    #[arg(long, requires = "readwrite")]
    bypass_governance: bool,
    /// Not valid before this time: a date (2027-01-01), an RFC 3339 time,
    /// or a duration from now (+2h).
    #[arg(long, value_parser = crate::parse_time)]
    not_before: Option<SystemTime>,
    /// Not valid after this time (same forms as --not-before).
    #[arg(long, value_parser = crate::parse_time)]
    not_after: Option<SystemTime>,
    /// Register the grant as public with the linksharing service and print
    /// a link to each location, after the grant's line.
    #[arg(long)]
    url: bool,
    /// Register the grant (not public) with the linksharing service and
    /// print S3 credentials for the gateway after the grant's line.
    #[arg(long)]
    register: bool,
    /// The linksharing service's base URL (http://HOST:PORT; the devnet
    /// names it in devnet.json under gateway.linksharing).
    #[arg(long, env = "ARCHIPEL_LINKSHARING")]
    linksharing: Option<String>,
}

/// What a linksharing service answers to a registration.
#[derive(serde::Deserialize)]
struct Registration {
    access_key_id: String,
    secret_access_key: String,
    /// The public base URL of links.
    endpoint: String,
}

/// A linksharing service's answer to a refused registration.
#[derive(serde::Deserialize)]
struct Refusal {
    error: String,
}

/// `archipel share`.
pub(crate) async fn share(project: &Project, flags: ShareFlags) -> Result<(), CliError> {
    let permissions = if flags.writeonly {
        Permissions::WRITE_ONLY
    } else if flags.readwrite {
        Permissions {
            bypass_governance: flags.bypass_governance,
            ..Permissions::ALL
        }
    } else {
        Permissions::READ_ONLY
    };
    let prefixes: Vec<(String, String)> = flags
        .locations
        .iter()
        .map(|text| location(text).map(|loc| (loc.bucket, loc.key)))
        .collect::<Result<_, _>>()?;
    let linksharing = match (flags.url || flags.register, &flags.linksharing) {
        (false, _) => None,
        (true, Some(base)) => Some(base.trim_end_matches('/').to_string()),
        (true, None) => {
            return Err(CliError::Usage(
                "--url and --register need the linksharing service: pass --linksharing URL or set ARCHIPEL_LINKSHARING".into(),
            ))
        }
    };
    let shared = project
        .share(&Share {
            permissions,
            prefixes: prefixes.clone(),
            not_before: flags.not_before,
            not_after: flags.not_after,
        })
        .await?;
    let grant = shared.serialize();
    let Some(base) = linksharing else {
        return outln!("{grant}");
    };
    // Registered before anything is printed, so that a failure prints no
    // grant that looks like the whole answer.
    let registration = register(&base, &grant, flags.url).await?;
    outln!("{grant}")?;
    let endpoint = registration.endpoint.trim_end_matches('/');
    if flags.url {
        for (bucket, prefix) in &prefixes {
            outln!(
                "{endpoint}/s/{}/{}/{}",
                encode_path(&registration.access_key_id),
                encode_path(bucket),
                encode_path(prefix)
            )?;
        }
    }
    if flags.register {
        outln!("access key id: {}", registration.access_key_id)?;
        outln!("secret key:    {}", registration.secret_access_key)?;
        outln!("endpoint:      {endpoint}")?;
    }
    Ok(())
}

/// Registers `grant` with the linksharing service at `base`.
async fn register(base: &str, grant: &str, public: bool) -> Result<Registration, CliError> {
    let failed = |reason: String| CliError::Linksharing {
        url: base.to_string(),
        reason,
    };
    if !base.starts_with("http://") {
        return Err(failed(
            "is not an http:// URL (the CLI does not speak HTTPS to linksharing services yet)"
                .into(),
        ));
    }
    let uri: hyper::Uri = format!("{base}/api/v1/access")
        .parse()
        .map_err(|e| failed(format!("is not a valid URL: {e}")))?;
    let body = serde_json::json!({ "access_grant": grant, "public": public }).to_string();
    let request = hyper::Request::post(uri)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| failed(format!("cannot be sent a request: {e}")))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            failed(format!(
                "cannot be reached: {}",
                archipel_proto::error_chain(&e)
            ))
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| failed(format!("sent an unreadable answer: {e}")))?
            .to_bytes();
        Ok::<_, CliError>((status, body))
    };
    let (status, body) = tokio::time::timeout(REGISTER_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            failed(format!(
                "did not answer within {}s",
                REGISTER_TIMEOUT.as_secs()
            ))
        })??;
    if !status.is_success() {
        let reason = serde_json::from_slice::<Refusal>(&body)
            .map(|refusal| refusal.error)
            .unwrap_or_else(|_| format!("answered {status}"));
        return Err(failed(format!("refused the grant: {reason}")));
    }
    serde_json::from_slice(&body)
        .map_err(|e| failed(format!("sent an answer that is not a registration: {e}")))
}

/// Percent-encodes a URL path, keeping `/` and the unreserved characters.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_paths_are_percent_encoded_but_keep_their_slashes() {
        assert_eq!(encode_path("photos/2026/"), "photos/2026/");
        assert_eq!(
            encode_path("my photos/été#1"),
            "my%20photos/%C3%A9t%C3%A9%231"
        );
    }
}
