//! Include and exclude patterns, in restic's manner: a pattern that starts
//! with `/` is matched against the whole path from the root; any other is
//! matched against the end of the path (`*.tmp`, `cache/*`, `node_modules`
//! match at any depth). `*` and `?` stay within one path component, `**`
//! crosses any number, `[abc]` is a class. A pattern that matches a
//! directory matches everything below it.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::Error;

#[derive(Clone, Debug)]
pub struct Patterns {
    set: GlobSet,
}

impl Patterns {
    pub fn new(patterns: &[String]) -> Result<Patterns, Error> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let trimmed = pattern.trim_end_matches('/');
            if trimmed.is_empty() {
                return Err(Error::Pattern {
                    pattern: pattern.clone(),
                    detail: "it is empty".into(),
                });
            }
            let full = match trimmed.strip_prefix('/') {
                Some(anchored) => format!("/{anchored}"),
                None => format!("**/{trimmed}"),
            };
            let glob = GlobBuilder::new(&full)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Pattern {
                    pattern: pattern.clone(),
                    detail: e.kind().to_string(),
                })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| Error::Pattern {
            pattern: patterns.join(" "),
            detail: e.to_string(),
        })?;
        Ok(Patterns { set })
    }

    /// Patterns from a file: one a line; empty lines and lines starting with
    /// `#` are skipped.
    pub fn read_file(path: &Path) -> Result<Vec<String>, Error> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect())
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Whether `path` (absolute, from the root) itself matches.
    pub fn matches(&self, path: &Path) -> bool {
        !self.set.is_empty() && self.set.is_match(path)
    }

    /// Whether `path` or a directory above it matches.
    pub fn matches_or_below(&self, path: &Path) -> bool {
        !self.set.is_empty() && path.ancestors().any(|p| self.set.is_match(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(p: &[&str]) -> Patterns {
        Patterns::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn unanchored_patterns_match_at_any_depth_and_anchored_from_the_root() {
        let p = patterns(&["*.tmp", "/home/me/cache", "node_modules/"]);
        assert!(p.matches(Path::new("/a/b/x.tmp")));
        assert!(!p.matches(Path::new("/a/b/x.tmp/y")));
        assert!(p.matches_or_below(Path::new("/a/b/x.tmp/y")));
        assert!(p.matches(Path::new("/home/me/cache")));
        assert!(!p.matches(Path::new("/other/home/me/cache")));
        assert!(p.matches(Path::new("/src/node_modules")));
        assert!(!p.matches(Path::new("/src/my_node_modules")));
        assert!(!p.matches(Path::new("/a/b.tmpx")));
    }

    #[test]
    fn stars_stay_in_one_component_and_double_stars_cross() {
        let p = patterns(&["/data/*/logs", "/srv/**/core"]);
        assert!(p.matches(Path::new("/data/x/logs")));
        assert!(!p.matches(Path::new("/data/x/y/logs")));
        assert!(p.matches(Path::new("/srv/a/b/c/core")));
        assert!(p.matches(Path::new("/srv/core")));
    }

    #[test]
    fn no_patterns_match_nothing_and_bad_ones_are_refused() {
        assert!(!patterns(&[]).matches(Path::new("/x")));
        assert!(Patterns::new(&["[".to_string()]).is_err());
        assert!(Patterns::new(&["/".to_string()]).is_err());
    }
}
