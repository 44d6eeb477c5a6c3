//! Reading snapshots without restoring them: `ls` (entries below a path)
//! and `diff` (what changed between two snapshots; subtrees with the same id
//! are equal and skipped without being read).

use std::path::{Path, PathBuf};

use crate::blob::BlobId;
use crate::tree::{decode_name, Node, NodeKind, Trees};
use crate::Error;

/// One entry of a snapshot with its path in it (`/home/me/file`).
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub node: Node,
}

/// Every entry of the tree `root` at or below `path` (`/` for all), depth
/// first in name order, handed to `visit`.
pub async fn list(
    trees: &Trees,
    root: BlobId,
    path: &Path,
    mut visit: impl FnMut(Entry) -> Result<(), Error>,
) -> Result<(), Error> {
    // Descend to `path` first.
    let mut tree_id = root;
    let mut at = PathBuf::from("/");
    let components: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(name) => Some(name.to_os_string()),
            _ => None,
        })
        .collect();
    for (i, name) in components.iter().enumerate() {
        let tree = trees.load(tree_id).await?;
        let node = tree
            .nodes
            .into_iter()
            .find(|n| decode_name(&n.name).is_ok_and(|n| &n == name))
            .ok_or_else(|| Error::Invalid(format!("{} is not in the snapshot", path.display())))?;
        at.push(name);
        match node.subtree {
            Some(subtree) if node.kind == NodeKind::Dir => tree_id = subtree,
            _ if i + 1 == components.len() => {
                return visit(Entry { path: at, node });
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "{} is not a directory",
                    at.display()
                )))
            }
        }
    }
    let mut stack = vec![(tree_id, at)];
    while let Some((id, dir)) = stack.pop() {
        let tree = trees.load(id).await?;
        let mut below = Vec::new();
        for node in tree.nodes {
            let path = dir.join(node.os_name()?);
            if let (NodeKind::Dir, Some(subtree)) = (node.kind, node.subtree) {
                below.push((subtree, path.clone()));
            }
            visit(Entry { path, node })?;
        }
        // Visited in name order: the first subdirectory is popped first.
        stack.extend(below.into_iter().rev());
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// `+`
    Added,
    /// `-`
    Removed,
    /// `M`: the content differs.
    Modified,
    /// `U`: the same content, other metadata (mode, owner, time).
    Metadata,
    /// `T`: the type differs (a file became a directory, say).
    Type,
}

impl ChangeKind {
    pub fn symbol(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'U',
            ChangeKind::Type => 'T',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub path: PathBuf,
}

/// What changed from tree `a` to tree `b`, in path order. A directory added
/// or removed is one change (not one per entry below it).
pub async fn diff(trees: &Trees, a: BlobId, b: BlobId) -> Result<Vec<Change>, Error> {
    let mut changes = Vec::new();
    let mut stack = vec![(a, b, PathBuf::from("/"))];
    while let Some((a, b, dir)) = stack.pop() {
        if a == b {
            continue;
        }
        let (old, new) = (trees.load(a).await?, trees.load(b).await?);
        let mut below = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < old.nodes.len() || j < new.nodes.len() {
            let order = match (old.nodes.get(i), new.nodes.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let node = &old.nodes[i];
                    changes.push(Change {
                        kind: ChangeKind::Removed,
                        path: dir.join(node.os_name()?),
                    });
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let node = &new.nodes[j];
                    changes.push(Change {
                        kind: ChangeKind::Added,
                        path: dir.join(node.os_name()?),
                    });
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (x, y) = (&old.nodes[i], &new.nodes[j]);
                    let path = dir.join(y.os_name()?);
                    if let Some(kind) = node_change(x, y) {
                        changes.push(Change {
                            kind,
                            path: path.clone(),
                        });
                    }
                    if let (NodeKind::Dir, NodeKind::Dir, Some(sa), Some(sb)) =
                        (x.kind, y.kind, x.subtree, y.subtree)
                    {
                        below.push((sa, sb, path));
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        stack.extend(below.into_iter().rev());
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(changes)
}

/// How one entry present in both snapshots changed (directories: only
/// their own metadata; their entries are compared one by one).
fn node_change(a: &Node, b: &Node) -> Option<ChangeKind> {
    if a.kind != b.kind {
        return Some(ChangeKind::Type);
    }
    let content_differs = match a.kind {
        NodeKind::Dir => false,
        NodeKind::Symlink => a.target != b.target,
        _ => a.content != b.content || a.size != b.size || a.rdev != b.rdev,
    };
    if content_differs {
        return Some(ChangeKind::Modified);
    }
    let metadata_differs = a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || (a.kind != NodeKind::Dir && (a.mtime, a.mtime_nsec) != (b.mtime, b.mtime_nsec));
    metadata_differs.then_some(ChangeKind::Metadata)
}
