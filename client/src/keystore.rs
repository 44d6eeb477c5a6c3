//! The encryption keys an access grant holds, and how object names map to
//! what the satellite stores. A full grant holds the project's root key, from
//! which every bucket's and name's keys derive (see [`crate::crypto`]); a
//! shared grant holds only the path keys of the prefixes it opens, each with
//! the prefix's stored (encrypted) form. With those it can name and read
//! everything below its prefixes and read the names on the way down to them
//! (which it was given), and nothing else: the keys of other names do not
//! derive from the keys it holds.

use crate::crypto::{self, Key, ObjectPath};
use crate::Error;

/// What a grant can decrypt.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum KeyStore {
    /// The project's root key: everything.
    Root(Key),
    /// The keys of some prefixes.
    Prefixes(Vec<PrefixKey>),
}

/// The key of one prefix a shared grant opens.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PrefixKey {
    pub(crate) bucket: String,
    /// Its path components from the top of the bucket (none: the whole bucket).
    pub(crate) path: Vec<String>,
    /// The same components as the satellite stores them.
    pub(crate) stored: Vec<String>,
    /// The path key below the last component.
    pub(crate) key: Key,
}

/// Where some path components are on the satellite.
pub(crate) struct Located {
    /// The components as stored.
    pub(crate) stored: Vec<String>,
    /// The path key below them, when the grant holds it (not for a path on
    /// the way to a shared prefix).
    pub(crate) key: Option<Key>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only; keys never print.
        match self {
            KeyStore::Root(_) => f.write_str("Root(..)"),
            KeyStore::Prefixes(prefixes) => f
                .debug_list()
                .entries(
                    prefixes
                        .iter()
                        .map(|p| format!("{}/{}", p.bucket, p.path.join("/"))),
                )
                .finish(),
        }
    }
}

impl KeyStore {
    /// Where `components` of `bucket` are stored, if the grant can name them.
    pub(crate) fn locate(
        &self,
        bucket: &str,
        components: &[&str],
        plain_names: bool,
    ) -> Option<Located> {
        let prefixes = match self {
            KeyStore::Root(root) => {
                let (stored, key) = crypto::descend(
                    &crypto::bucket_path_key(root, bucket),
                    components.iter().copied(),
                    plain_names,
                );
                return Some(Located {
                    stored,
                    key: Some(key),
                });
            }
            KeyStore::Prefixes(prefixes) => prefixes,
        };
        let in_bucket = || prefixes.iter().filter(|p| p.bucket == bucket);
        // The deepest shared prefix the components are in.
        if let Some(prefix) = in_bucket()
            .filter(|p| starts_with(components, &p.path))
            .max_by_key(|p| p.path.len())
        {
            let rest = &components[prefix.path.len()..];
            let (below, key) = crypto::descend(&prefix.key, rest.iter().copied(), plain_names);
            let mut stored = prefix.stored.clone();
            stored.extend(below);
            return Some(Located {
                stored,
                key: Some(key),
            });
        }
        // On the way down to a shared prefix.
        in_bucket()
            .find(|p| starts_with(&p.path, components))
            .map(|p| Located {
                stored: p.stored[..components.len()].to_vec(),
                key: None,
            })
    }

    /// Where the object `name` of `bucket` is stored, with its path key; an
    /// error if the grant holds no key for it.
    pub(crate) fn object_path(
        &self,
        bucket: &str,
        name: &str,
        plain_names: bool,
    ) -> Result<ObjectPath, Error> {
        let components: Vec<&str> = name.split('/').collect();
        match self.locate(bucket, &components, plain_names) {
            Some(Located {
                stored,
                key: Some(key),
            }) => Ok(ObjectPath {
                stored: stored.join("/"),
                key,
            }),
            _ => Err(no_key(bucket, name)),
        }
    }

    /// The plain components of the name stored as `stored` (the whole key
    /// below the bucket, `/`-separated), if the grant can read it.
    pub(crate) fn reveal(
        &self,
        bucket: &str,
        stored: &[u8],
        plain_names: bool,
    ) -> Option<Vec<String>> {
        if plain_names {
            let name = std::str::from_utf8(stored).ok()?;
            return Some(name.split('/').map(str::to_string).collect());
        }
        let prefixes = match self {
            KeyStore::Root(root) => {
                let top = crypto::bucket_path_key(root, bucket);
                let name = crypto::decrypt_relative_path(&top, stored).ok()?;
                return Some(name.split('/').map(str::to_string).collect());
            }
            KeyStore::Prefixes(prefixes) => prefixes,
        };
        let parts: Vec<&[u8]> = stored.split(|&b| b == b'/').collect();
        let stored_of = |p: &PrefixKey| -> Vec<Vec<u8>> {
            p.stored.iter().map(|s| s.as_bytes().to_vec()).collect()
        };
        for prefix in prefixes.iter().filter(|p| p.bucket == bucket) {
            let prefix_parts = stored_of(prefix);
            if parts.len() >= prefix_parts.len()
                && parts
                    .iter()
                    .zip(&prefix_parts)
                    .all(|(a, b)| *a == b.as_slice())
            {
                let mut plain = prefix.path.clone();
                let rest = &parts[prefix_parts.len()..];
                if !rest.is_empty() {
                    let below =
                        crypto::decrypt_relative_path(&prefix.key, &rest.join(&b'/')).ok()?;
                    plain.extend(below.split('/').map(str::to_string));
                }
                return Some(plain);
            }
            if parts.len() < prefix_parts.len()
                && parts
                    .iter()
                    .zip(&prefix_parts)
                    .all(|(a, b)| *a == b.as_slice())
            {
                return Some(prefix.path[..parts.len()].to_vec());
            }
        }
        None
    }

    /// The key of the prefix `components` of `bucket`, to hand to a shared
    /// grant; an error if this grant holds none for it.
    pub(crate) fn share(
        &self,
        bucket: &str,
        components: &[&str],
        plain_names: bool,
    ) -> Result<PrefixKey, Error> {
        match self.locate(bucket, components, plain_names) {
            Some(Located {
                stored,
                key: Some(key),
            }) => Ok(PrefixKey {
                bucket: bucket.to_string(),
                path: components.iter().map(|c| c.to_string()).collect(),
                stored,
                key,
            }),
            _ => Err(no_key(bucket, &components.join("/"))),
        }
    }
}

/// Whether `components` begin with all of `prefix`.
fn starts_with(components: &[impl AsRef<str>], prefix: &[impl AsRef<str>]) -> bool {
    components.len() >= prefix.len()
        && components
            .iter()
            .zip(prefix)
            .all(|(a, b)| a.as_ref() == b.as_ref())
}

fn no_key(bucket: &str, name: &str) -> Error {
    Error::PermissionDenied(format!(
        "the access grant holds no key for {bucket}/{name} (it was shared for other prefixes)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> KeyStore {
        KeyStore::Root(Key([3; 32]))
    }

    fn shared(root: &KeyStore, bucket: &str, path: &[&str], plain: bool) -> KeyStore {
        KeyStore::Prefixes(vec![root.share(bucket, path, plain).unwrap()])
    }

    #[test]
    fn a_shared_prefix_names_what_is_below_it_as_the_root_does() {
        let full = root();
        for plain in [false, true] {
            let photos = shared(&full, "b", &["photos"], plain);
            for name in ["photos/cat.jpg", "photos/2024/dog.jpg", "photos", "photos/"] {
                let from_root = full.object_path("b", name, plain).unwrap();
                let from_share = photos.object_path("b", name, plain).unwrap();
                assert_eq!(from_root.stored, from_share.stored, "{name}");
                assert_eq!(from_root.key, from_share.key, "{name}");
                let back = photos
                    .reveal("b", from_share.stored.as_bytes(), plain)
                    .unwrap();
                assert_eq!(back.join("/"), name);
            }
            for outside in ["docs/a", "photosynthesis/x", "photo"] {
                assert!(matches!(
                    photos.object_path("b", outside, plain),
                    Err(Error::PermissionDenied(_))
                ));
            }
            assert!(photos.object_path("c", "photos/cat.jpg", plain).is_err());
        }
    }

    #[test]
    fn a_shared_grant_reads_only_the_way_to_its_prefixes() {
        let full = root();
        let deep = shared(&full, "b", &["a", "b"], false);
        // On the way down: the stored form is known, the key is not.
        let way = deep.locate("b", &["a"], false).unwrap();
        assert!(way.key.is_none());
        let stored_a = full.locate("b", &["a"], false).unwrap().stored;
        assert_eq!(way.stored, stored_a);
        assert_eq!(
            deep.reveal("b", stored_a[0].as_bytes(), false).unwrap(),
            ["a"]
        );
        // A sibling of the way is unreadable.
        let sibling = full.object_path("b", "a/c", false).unwrap().stored;
        assert!(deep.reveal("b", sibling.as_bytes(), false).is_none());
        let inside = full.object_path("b", "a/b/c/d", false).unwrap().stored;
        assert_eq!(
            deep.reveal("b", inside.as_bytes(), false).unwrap(),
            ["a", "b", "c", "d"]
        );
    }

    #[test]
    fn a_share_of_a_share_stays_inside_it() {
        let full = root();
        let photos = shared(&full, "b", &["photos"], false);
        let year = photos.share("b", &["photos", "2024"], false).unwrap();
        assert_eq!(
            year.key,
            full.share("b", &["photos", "2024"], false).unwrap().key
        );
        assert!(photos.share("b", &["docs"], false).is_err());
        assert!(photos.share("b", &[], false).is_err());
    }
}
