//! Which manifest files a configured path stands for, and which parts of it
//! could not be listed: the file source keeps the last good objects of
//! those parts instead of dropping them.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The outcome of listing one configured path.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// The `*.yaml` and `*.yml` files found, sorted.
    pub files: Vec<PathBuf>,
    /// Paths (the configured path itself, or directories below it) that
    /// could not be listed, with why: files below them that were loaded
    /// before keep their objects.
    pub unlisted: Vec<(PathBuf, String)>,
}

impl Listing {
    /// Whether `file` lies in a part of the path that could not be listed.
    pub fn covers_unlisted(&self, file: &Path) -> bool {
        self.unlisted.iter().any(|(p, _)| file.starts_with(p))
    }
}

/// Whether `path` names a YAML manifest by its extension.
pub(crate) fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Lists the files `path` stands for: the path itself when it is a file, or
/// the YAML files below it when it is a directory (recursively, following
/// symlinks as Kubernetes ConfigMap mounts need, skipping hidden
/// directories, and entering each directory once so symlink loops end).
/// A directory that cannot be read is recorded in [`Listing::unlisted`]
/// and the rest is still listed.
pub(crate) fn list(path: &Path) -> Listing {
    let mut listing = Listing::default();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            listing.unlisted.push((path.to_owned(), e.to_string()));
            return listing;
        }
    };
    if !meta.is_dir() {
        listing.files.push(path.to_owned());
        return listing;
    }
    let mut entered = HashSet::new();
    entered.insert((meta.dev(), meta.ino()));
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                listing.unlisted.push((dir, e.to_string()));
                continue;
            }
        };
        for entry in entries {
            let p = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    listing.unlisted.push((dir.clone(), e.to_string()));
                    continue;
                }
            };
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => {
                    // Hidden directories such as ConfigMap `..data` staging
                    // dirs are skipped; a directory already entered (a
                    // symlink loop, or two links to one directory) too.
                    let hidden = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'));
                    if !hidden && entered.insert((m.dev(), m.ino())) {
                        stack.push(p);
                    }
                }
                Ok(_) if is_yaml(&p) => listing.files.push(p),
                // A dangling symlink or an entry that went away: nothing to read.
                _ => {}
            }
        }
    }
    listing.files.sort();
    listing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-file-list-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_missing_path_is_unlisted_not_empty() {
        let dir = scratch("missing");
        let l = list(&dir.join("nope"));
        assert!(l.files.is_empty());
        assert_eq!(l.unlisted.len(), 1);
        assert!(l.covers_unlisted(&dir.join("nope/a.yaml")));
        assert!(!l.covers_unlisted(&dir.join("other.yaml")));
    }

    #[test]
    fn symlink_loops_end_and_files_are_found_once() {
        let dir = scratch("loop");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.yaml"), "").unwrap();
        std::os::unix::fs::symlink(&dir, dir.join("sub/up")).unwrap();
        let l = list(&dir);
        assert_eq!(l.files, vec![dir.join("sub/a.yaml")]);
        assert!(l.unlisted.is_empty(), "{:?}", l.unlisted);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_subdirectory_does_not_hide_the_rest() {
        // Root reads any directory whatever its mode; only a non-root run
        // can make one unreadable.
        if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            let dir = scratch("unreadable-root");
            std::fs::write(dir.join("a.yaml"), "").unwrap();
            assert_eq!(list(&dir).files, vec![dir.join("a.yaml")]);
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("unreadable");
        std::fs::create_dir_all(dir.join("locked")).unwrap();
        std::fs::write(dir.join("a.yaml"), "").unwrap();
        std::fs::set_permissions(dir.join("locked"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        let l = list(&dir);
        assert_eq!(l.files, vec![dir.join("a.yaml")]);
        assert!(l.covers_unlisted(&dir.join("locked/b.yaml")));
        std::fs::set_permissions(dir.join("locked"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
