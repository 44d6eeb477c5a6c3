//! Trees: one blob per directory, listing its entries (name, type, mode,
//! owner, times, size, inode, content chunks or subtree, symlink target)
//! sorted by name, as JSON. An unchanged directory serializes to the same
//! bytes, so its tree blob deduplicates to nothing.
//!
//! Names are bytes on Unix and need not be UTF-8: a name that is not is
//! stored as a NUL followed by its bytes in hex (a NUL never occurs in a
//! file name, so this cannot be confused with a real name).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::blob::{open_blob, BlobId, BlobKind, PackId};
use crate::index::Index;
use crate::repo::Repository;
use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits, with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time: seconds and nanoseconds since the Unix epoch.
    pub mtime: i64,
    pub mtime_nsec: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inode: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device: u64,
    /// Hard links to the file (more than 1: restored as links once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub links: u64,
    /// A file's chunks, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    /// A directory's tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    /// A symlink's target (encoded as names are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A device's number.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
}

impl Node {
    pub fn os_name(&self) -> Result<OsString, Error> {
        let name = decode_name(&self.name)?;
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
            return Err(Error::corrupt(
                "a tree",
                format!("{:?} is not a file name", self.name),
            ));
        }
        Ok(name)
    }
}

pub fn encode_name(name: &OsStr) -> String {
    match name.to_str() {
        Some(text) => text.to_string(),
        None => format!("\0{}", hex::encode(name.as_bytes())),
    }
}

pub fn decode_name(name: &str) -> Result<OsString, Error> {
    match name.strip_prefix('\0') {
        Some(hex) => hex::decode(hex)
            .map(OsString::from_vec)
            .map_err(|e| Error::corrupt("a tree", format!("an encoded name: {e}"))),
        None => Ok(OsString::from(name)),
    }
}

/// A name for people: the text, with bytes that are not UTF-8 replaced.
pub fn display_name(name: &str) -> String {
    match decode_name(name) {
        Ok(os) => os.to_string_lossy().into_owned(),
        Err(_) => name.to_string(),
    }
}

/// One directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a tree of strings and numbers serializes")
    }

    pub fn find(&self, name: &str) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// Bytes of tree packs kept in memory.
const CACHE_BYTES: usize = 256 * 1024 * 1024;

/// Reads trees. Tree blobs live in packs of their own, which are small next
/// to data; the first tree read from a pack downloads the whole pack, and
/// later ones come from memory (up to [`CACHE_BYTES`], oldest packs dropped
/// first), so walking a snapshot costs a request per tree pack, not per
/// directory.
pub struct Trees {
    repo: Repository,
    index: Arc<Index>,
    cache: Mutex<TreeCache>,
}

#[derive(Default)]
struct TreeCache {
    packs: std::collections::HashMap<PackId, Arc<OnceCell<Arc<Vec<u8>>>>>,
    order: std::collections::VecDeque<(PackId, usize)>,
    bytes: usize,
}

impl Trees {
    pub fn new(repo: &Repository, index: Arc<Index>) -> Trees {
        Trees {
            repo: repo.clone(),
            index,
            cache: Mutex::default(),
        }
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    pub async fn load(&self, id: BlobId) -> Result<Tree, Error> {
        let location = self
            .index
            .get(&id)
            .filter(|l| l.kind == BlobKind::Tree)
            .ok_or_else(|| Error::corrupt(format!("tree {id:?}"), "no pack holds it"))?;
        let pack = self.index.pack_id(&location);
        let cell = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.packs.entry(pack).or_default().clone()
        };
        let bytes = cell
            .get_or_try_init(|| async {
                let bytes = Arc::new(self.repo.get(&Repository::pack_key(pack)).await?);
                self.remember(pack, bytes.len());
                Ok::<_, Error>(bytes)
            })
            .await?
            .clone();
        let start = location.offset as usize;
        let sealed = bytes
            .get(start..start + location.length as usize)
            .ok_or_else(|| {
                Error::corrupt(
                    format!("pack {pack:?}"),
                    "it is shorter than its index says",
                )
            })?;
        let plain = open_blob(
            self.repo.keys(),
            id,
            sealed,
            location.compressed,
            location.raw_length,
        )?;
        serde_json::from_slice(&plain).map_err(|e| Error::corrupt(format!("tree {id:?}"), e))
    }

    fn remember(&self, pack: PackId, size: usize) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.order.push_back((pack, size));
        cache.bytes += size;
        while cache.bytes > CACHE_BYTES && cache.order.len() > 1 {
            if let Some((old, size)) = cache.order.pop_front() {
                cache.packs.remove(&old);
                cache.bytes -= size;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_utf8_survive() {
        let odd = OsStr::from_bytes(b"caf\xe9");
        let encoded = encode_name(odd);
        assert_eq!(decode_name(&encoded).unwrap(), odd);
        assert_eq!(
            decode_name(&encode_name(OsStr::new("é 日本"))).unwrap(),
            "é 日本"
        );
    }

    #[test]
    fn names_that_escape_their_directory_are_refused() {
        for bad in ["", ".", "..", "a/b"] {
            let node = Node {
                name: bad.to_string(),
                kind: NodeKind::File,
                mode: 0,
                uid: 0,
                gid: 0,
                mtime: 0,
                mtime_nsec: 0,
                size: 0,
                inode: 0,
                device: 0,
                links: 0,
                content: vec![],
                subtree: None,
                target: None,
                rdev: 0,
            };
            assert!(node.os_name().is_err(), "{bad:?}");
        }
    }
}
