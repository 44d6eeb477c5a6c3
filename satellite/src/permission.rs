//! What a request may do under the caveats of its API key
//! (`archipel_proto::macaroon`): each metainfo call names the operation and
//! the scope it touches, and every caveat of the key must allow both. Paths
//! are compared as the satellite stores them (encrypted names stay
//! encrypted), whole components at a time.

use archipel_proto::macaroon::Op;

use crate::metabase::Credential;
use crate::{Error, Result};

/// What a request touches.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// The project as a whole (listing its buckets): only the operation and
    /// the time are checked.
    Project,
    /// A bucket's settings, or its name in a listing of buckets.
    Bucket(&'a str),
    /// The bucket itself, as creating or deleting it does.
    WholeBucket(&'a str),
    /// The object stored as this key.
    Object(&'a str, &'a [u8]),
    /// A listing below this stored prefix (empty, or ending in "/"): allowed
    /// inside an allowed path, and above one, where only the way to the
    /// allowed paths shows (see [`Credential::shows`]).
    Listing(&'a str, &'a [u8]),
}

impl Credential {
    /// `Ok` if every caveat lets `op` reach `scope` at `now`; else
    /// `PermissionDenied` saying which bound was hit.
    pub fn check(&self, op: Op, scope: Scope<'_>, now: i64) -> Result<()> {
        for caveat in &self.caveats {
            if caveat.not_after != 0 && now > caveat.not_after {
                return Err(denied(format!(
                    "it expired at {}",
                    crate::format_unix(caveat.not_after)
                )));
            }
            if caveat.not_before != 0 && now < caveat.not_before {
                return Err(denied(format!(
                    "it is not valid before {}",
                    crate::format_unix(caveat.not_before)
                )));
            }
            if !caveat.allows_op(op, now) {
                return Err(denied(format!("it does not allow {}", op_name(op))));
            }
            let reaches = match scope {
                Scope::Project => true,
                Scope::Bucket(bucket) => caveat.allows_bucket(bucket),
                Scope::WholeBucket(bucket) => caveat.allows_whole_bucket(bucket),
                Scope::Object(bucket, key) => caveat.allows_key(bucket, key),
                Scope::Listing(bucket, prefix) => {
                    let dir = prefix.strip_suffix(b"/").unwrap_or(prefix);
                    caveat.allows_key(bucket, dir) || caveat.leads_to(bucket, dir)
                }
            };
            if !reaches {
                return Err(denied(format!(
                    "it does not reach this {}",
                    match scope {
                        Scope::Project | Scope::Bucket(_) | Scope::WholeBucket(_) => "bucket",
                        Scope::Object(..) => "object",
                        Scope::Listing(..) => "prefix",
                    }
                )));
            }
        }
        Ok(())
    }

    /// Whether a listing shows the entry stored as `key` of `bucket` (`key`
    /// without the trailing "/" of a prefix entry): an entry inside the
    /// allowed paths, or a prefix on the way to one.
    pub fn shows(&self, bucket: &str, key: &[u8], is_prefix: bool) -> bool {
        self.caveats
            .iter()
            .all(|c| c.allows_key(bucket, key) || (is_prefix && c.leads_to(bucket, key)))
    }

    /// Whether a listing of buckets shows `bucket`.
    pub fn shows_bucket(&self, bucket: &str) -> bool {
        self.caveats.iter().all(|c| c.allows_bucket(bucket))
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Read => "reading",
        Op::Write => "writing",
        Op::List => "listing",
        Op::Delete => "deleting",
        Op::BypassGovernance => "bypassing governance retention",
    }
}

fn denied(why: String) -> Error {
    Error::PermissionDenied(why)
}

#[cfg(test)]
mod tests {
    use archipel_proto::pb;

    use super::*;
    use crate::metabase::Project;

    fn credential(caveats: Vec<pb::Caveat>) -> Credential {
        Credential {
            project: Project {
                id: vec![1; 16],
                name: "p".into(),
                salt: vec![],
                created_at: 0,
            },
            caveats,
            key: None,
        }
    }

    fn photos_read_only() -> pb::Caveat {
        pb::Caveat {
            disallow_writes: true,
            disallow_deletes: true,
            allowed_paths: vec![pb::CaveatPath {
                bucket: "b".into(),
                prefix: b"photos".to_vec(),
            }],
            not_after: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn every_caveat_must_allow() {
        let open = credential(vec![]);
        assert!(open.check(Op::Delete, Scope::WholeBucket("x"), 5).is_ok());

        let restricted = credential(vec![photos_read_only()]);
        let ok = |op, scope| restricted.check(op, scope, 10).is_ok();
        assert!(ok(Op::Read, Scope::Object("b", b"photos/cat")));
        assert!(!ok(Op::Write, Scope::Object("b", b"photos/cat")));
        assert!(!ok(Op::Read, Scope::Object("b", b"docs/x")));
        assert!(!ok(Op::Read, Scope::Object("c", b"photos/cat")));
        assert!(ok(Op::Read, Scope::Bucket("b")));
        assert!(!ok(Op::Read, Scope::WholeBucket("b")));
        assert!(ok(Op::List, Scope::Listing("b", b"")));
        assert!(ok(Op::List, Scope::Listing("b", b"photos/")));
        assert!(ok(Op::List, Scope::Listing("b", b"photos/2024/")));
        assert!(!ok(Op::List, Scope::Listing("b", b"docs/")));
        assert!(matches!(
            restricted.check(Op::Read, Scope::Object("b", b"photos/cat"), 1001),
            Err(Error::PermissionDenied(why)) if why.contains("expired")
        ));

        // A second caveat narrows the first further.
        let narrower = credential(vec![
            photos_read_only(),
            pb::Caveat {
                disallow_lists: true,
                ..Default::default()
            },
        ]);
        assert!(narrower
            .check(Op::Read, Scope::Object("b", b"photos/x"), 10)
            .is_ok());
        assert!(narrower
            .check(Op::List, Scope::Listing("b", b"photos/"), 10)
            .is_err());
    }

    #[test]
    fn listings_above_an_allowed_path_show_only_the_way() {
        let restricted = credential(vec![photos_read_only()]);
        assert!(restricted.shows("b", b"photos", true));
        assert!(restricted.shows("b", b"photos/cat", false));
        assert!(!restricted.shows("b", b"docs", true));
        // An object named like the allowed prefix is inside it.
        assert!(restricted.shows("b", b"photos", false));

        let deeper = credential(vec![pb::Caveat {
            allowed_paths: vec![pb::CaveatPath {
                bucket: "b".into(),
                prefix: b"photos/2024".to_vec(),
            }],
            ..Default::default()
        }]);
        assert!(deeper.shows("b", b"photos", true));
        assert!(deeper.shows("b", b"photos/2024", true));
        assert!(!deeper.shows("b", b"photos/2023", true));
        assert!(!deeper.shows("b", b"photos", false));
        assert!(restricted.shows_bucket("b"));
        assert!(!restricted.shows_bucket("c"));
    }
}
