//! Kubernetes objects from multi-document YAML files and directories, with a
//! per-file memory of the last good parse (a file that stops being YAML keeps
//! serving its previous objects) and a debounced file watcher.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use lb_compile::diag::Diagnostic;
use lb_compile::manifests::{ChunkCache, parse_chunked};
use lb_compile::model::Pretyped;
use lb_compile::raw::{RawObject, content_id};
use lb_compile::store::Store;

use super::Loaded;
use super::file_list::{self, is_yaml};
use crate::error::Error;

/// Reads objects from the configured files and directories.
#[derive(Debug, Default)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    /// Each file's text at its last successful parse, with what the parse
    /// gave: an unchanged file is not parsed again, and a file that stops
    /// parsing keeps these objects.
    parsed: BTreeMap<PathBuf, Parsed>,
    /// How many file parses ran (unchanged files are not parsed).
    parses: u64,
    /// The store last built from this source (see [`FileSource::remember`]).
    last_store: Store,
    /// How many objects the latest load kept from an earlier load because
    /// their file or directory could not be read, was empty or changed
    /// while being read.
    kept: usize,
}

/// A file's text (by hash and length) and what parsing it gave.
#[derive(Debug)]
struct Parsed {
    text: (u64, usize),
    /// The file's chunks, for the next parse of a changed text.
    chunks: ChunkCache,
    /// The objects, single-document chunks held as YAML text.
    objects: Vec<RawObject>,
    diagnostics: Vec<Diagnostic>,
}

/// The outcome of reading one file.
enum FileRead {
    /// Parsed: its objects, per-document diagnostics and the objects
    /// typed as they were parsed.
    Parsed(Vec<RawObject>, Vec<Diagnostic>, Pretyped),
    /// Unreadable or not YAML: one diagnostic, previous objects stay.
    Failed(Diagnostic),
}

impl FileSource {
    /// A source over `paths` (files, or directories searched recursively for
    /// `*.yaml` and `*.yml`).
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            parsed: BTreeMap::new(),
            parses: 0,
            last_store: Store::default(),
            kept: 0,
        }
    }

    /// A source over `paths` that starts from what `old` loaded last: files
    /// both know keep their last good objects, and objects that become
    /// invalid fall back to `old`'s store (SIGHUP with new `sources.files`).
    pub fn succeed(paths: Vec<PathBuf>, old: &mut FileSource) -> Self {
        Self {
            paths,
            parsed: std::mem::take(&mut old.parsed),
            parses: old.parses,
            last_store: old.take_last_store(),
            kept: 0,
        }
    }

    /// How many objects the latest load kept from an earlier load because
    /// their file or directory could not be read, was empty or was being
    /// written (`lb_source_files_kept_objects`).
    pub fn kept(&self) -> usize {
        self.kept
    }

    /// The store last built from this source: objects that become invalid
    /// fall back to their version in it.
    pub fn last_store(&self) -> &Store {
        &self.last_store
    }

    /// Takes the store of the latest load (leaving an empty one), to build
    /// the next from it.
    pub fn take_last_store(&mut self) -> Store {
        std::mem::take(&mut self.last_store)
    }

    /// Records the store built from the latest load.
    pub fn remember(&mut self, store: Store) {
        self.last_store = store;
    }

    /// How many file parses ran so far (a file whose text did not change
    /// since its last successful parse is not parsed again).
    pub fn parses(&self) -> u64 {
        self.parses
    }

    /// The configured paths.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Reads `file`, parsing it only when its text changed since its last
    /// successful parse. The file's entry goes into `cache`: the new parse,
    /// or on failure the last successful one (whose objects stay).
    fn read_cached(&mut self, file: &Path, cache: &mut BTreeMap<PathBuf, Parsed>) -> FileRead {
        let last = self.parsed.remove(file);
        let keep = |last: Option<Parsed>, cache: &mut BTreeMap<PathBuf, Parsed>, d: Diagnostic| {
            if let Some(last) = last {
                cache.insert(file.to_owned(), last);
            }
            FileRead::Failed(d.at(file, None))
        };
        let text = match read_settled(file) {
            Ok(t) => t,
            Err(why) => return keep(last, cache, Diagnostic::error(why)),
        };
        // An empty file that had objects is far more often a write caught
        // half-way (or a truncation) than a wish to remove them all: it
        // keeps them; deleting the file removes them.
        if text.trim().is_empty() && last.as_ref().is_some_and(|p| !p.objects.is_empty()) {
            return keep(
                last,
                cache,
                Diagnostic::error("file is empty (truncated, or written in place?)"),
            );
        }
        let text_id = (content_id(text.as_bytes()), text.len());
        let (parsed, read) = match last {
            Some(p) if p.text == text_id => {
                let read =
                    FileRead::Parsed(p.objects.clone(), p.diagnostics.clone(), Pretyped::new());
                (p, read)
            }
            last => {
                self.parses += 1;
                let empty = ChunkCache::new();
                let before = last.as_ref().map_or(&empty, |p| &p.chunks);
                match parse_chunked(&text, file, before) {
                    Ok(p) => {
                        let read =
                            FileRead::Parsed(p.objects.clone(), p.diagnostics.clone(), p.typed);
                        let parsed = Parsed {
                            text: text_id,
                            chunks: p.chunks,
                            objects: p.objects,
                            diagnostics: p.diagnostics,
                        };
                        (parsed, read)
                    }
                    Err(d) => {
                        if let Some(last) = last {
                            cache.insert(file.to_owned(), last);
                        }
                        return FileRead::Failed(*d);
                    }
                }
            }
        };
        cache.insert(file.to_owned(), parsed);
        read
    }

    /// Reads every file again. Files that cannot be read or parsed, are
    /// empty or change while being read keep the objects of their last
    /// successful load, and so do files below a configured path or
    /// directory that cannot be listed (gone, unreadable): a transient
    /// error never publishes fewer objects. A file deleted from a directory
    /// that still lists loses its objects.
    pub fn load(&mut self) -> Loaded {
        let mut diagnostics = Vec::new();
        let mut files = Vec::new();
        let mut seen = BTreeSet::new();
        let mut unlisted = Vec::new();
        for path in &self.paths {
            let listing = file_list::list(path);
            for f in &listing.files {
                if seen.insert(f.clone()) {
                    files.push(f.clone());
                }
            }
            // Files of the last load below what could not be listed now.
            let hidden: Vec<PathBuf> = self
                .parsed
                .keys()
                .filter(|f| listing.covers_unlisted(f) && !seen.contains(*f))
                .cloned()
                .collect();
            for (dir, why) in &listing.unlisted {
                let under = hidden.iter().filter(|f| f.starts_with(dir)).count();
                let msg = if under == 0 {
                    format!("cannot read manifest path: {why}")
                } else {
                    format!(
                        "cannot read manifest path: {why}; keeping the objects of {under} file(s) from their last good load"
                    )
                };
                diagnostics.push(Diagnostic::error(msg).at(dir, None));
            }
            for f in hidden {
                seen.insert(f.clone());
                unlisted.push(f);
            }
        }

        let mut parsed = BTreeMap::new();
        let mut objects = Vec::new();
        let mut typed = Pretyped::new();
        let mut kept = 0;
        for file in unlisted {
            if let Some(p) = self.parsed.remove(&file) {
                kept += p.objects.len();
                objects.extend(p.objects.iter().cloned());
                diagnostics.extend(p.diagnostics.iter().cloned());
                parsed.insert(file, p);
            }
        }
        for file in files {
            match self.read_cached(&file, &mut parsed) {
                FileRead::Parsed(objs, diags, pretyped) => {
                    diagnostics.extend(diags);
                    objects.extend(objs);
                    typed.extend(pretyped);
                }
                FileRead::Failed(d) => {
                    let previous: &[RawObject] =
                        parsed.get(&file).map_or(&[], |p| p.objects.as_slice());
                    let d = if previous.is_empty() {
                        d
                    } else {
                        Diagnostic {
                            message: format!(
                                "{}; keeping the {} object(s) from its last good load",
                                d.message,
                                previous.len()
                            ),
                            ..d
                        }
                    };
                    kept += previous.len();
                    diagnostics.push(d);
                    objects.extend(previous.iter().cloned());
                }
            }
        }
        self.parsed = parsed;
        self.kept = kept;
        Loaded {
            objects,
            diagnostics,
            typed,
        }
    }
}

/// Reads `file` as text, refusing a read the file changed during (its
/// size or modification time moved, or the text is not as long as the
/// file): a writer is still at it, and its close brings another reload.
fn read_settled(file: &Path) -> Result<String, String> {
    let stamp = |m: &std::fs::Metadata| (m.len(), m.modified().ok());
    let before = std::fs::metadata(file).map_err(|e| format!("cannot read: {e}"))?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
    let after = std::fs::metadata(file).map_err(|e| format!("cannot read: {e}"))?;
    if stamp(&before) != stamp(&after) || after.len() != text.len() as u64 {
        return Err("file changed while being read (still being written?)".into());
    }
    Ok(text)
}

/// Keeps the file watcher alive; dropping it stops watching and ends the
/// event stream.
pub struct WatchGuard {
    _watcher: Arc<Mutex<RecommendedWatcher>>,
    /// Events the watcher delivered, wanted or not.
    raw_events: Arc<std::sync::atomic::AtomicU64>,
}

impl WatchGuard {
    /// How many events the watcher has delivered so far, wanted or not
    /// (each one wakes the watcher's threads).
    pub fn raw_events(&self) -> u64 {
        self.raw_events.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchGuard")
    }
}

/// How long the watcher waits for a burst of changes to settle: a burst
/// ends after this much quiet (no relevant event)...
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// ...or at the latest this long after its first event, so that a steady
/// stream of changes still reloads at least this often instead of never.
/// With a compile in progress, bursts that end meanwhile wait and are merged
/// into one reload (see [`Change::merge`]).
pub const MAX_DELAY: Duration = Duration::from_millis(500);

/// One coalesced burst of file changes, as signalled by [`watch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// When the burst's first change event arrived from the kernel: the
    /// start of its event-to-traffic interval.
    pub first: Instant,
    /// How many relevant change events the burst held.
    pub events: u64,
}

impl Change {
    /// Folds a later burst into this one: the earliest first event, the
    /// events summed. Used to reload once for bursts that queued up while a
    /// compile ran.
    pub fn merge(&mut self, later: Change) {
        self.first = self.first.min(later.first);
        self.events = self.events.saturating_add(later.events);
    }
}

/// What a watch registration is interested in.
#[derive(Debug, Clone)]
enum Interest {
    /// Anything below this directory.
    Tree(PathBuf),
    /// This path only (a listed file, or a listed path that does not exist yet).
    Exact(PathBuf),
}

impl Interest {
    fn matches(&self, p: &Path) -> bool {
        match self {
            Interest::Tree(dir) => {
                p == dir || (p.starts_with(dir) && (is_yaml(p) || p.extension().is_none()))
            }
            Interest::Exact(f) => p == f,
        }
    }
}

fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// How often the listed directories are checked for being removed,
/// replaced or (re)created. A directory's own watch cannot see it come
/// back, and watching its parent instead would wake lb's watcher threads
/// for every write to every file beside it (a log file next to the
/// manifests cost a busy lb a quarter of its CPU).
pub const ROOT_POLL: Duration = Duration::from_secs(1);

/// Watches `paths` and signals one [`Change`] per burst of changes: after
/// [`DEBOUNCE`] of quiet, and never later than [`MAX_DELAY`] after the
/// burst's first event. Directories are watched recursively, and checked
/// every [`ROOT_POLL`] for being removed, replaced or (re)created (then
/// watched again); a listed file is watched through its parent directory,
/// so editors that replace files by rename are seen. The caller reloads
/// with [`FileSource::load`] on each signal.
pub fn watch(paths: &[PathBuf]) -> Result<(WatchGuard, mpsc::Receiver<Change>), Error> {
    let (raw_tx, raw_rx) = mpsc::channel::<(Instant, notify::Event)>();
    let poll_tx = raw_tx.clone();
    let raw_events = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = Arc::clone(&raw_events);
    // The listed directories (and paths that may become ones), each with a
    // flag the watcher sets when the directory itself went away.
    let roots: Arc<Vec<Root>> = Arc::new(
        paths
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .filter(|abs| !abs.is_file())
            .map(|abs| Root {
                identity: std::sync::Mutex::new(dir_identity(&abs)),
                path: abs,
                lost: std::sync::atomic::AtomicBool::new(false),
            })
            .collect(),
    );
    let seen_roots = Arc::clone(&roots);
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // A listed directory deleted or moved away takes its watch
                // with it (a new one at its path needs a new watch).
                if matches!(
                    ev.kind,
                    EventKind::Remove(_) | EventKind::Modify(notify::event::ModifyKind::Name(_))
                ) {
                    for root in seen_roots.iter().filter(|r| ev.paths.contains(&r.path)) {
                        root.lost.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                // Stamped on arrival, so a busy debounce thread does not
                // shorten the measured event-to-traffic time.
                let _ = raw_tx.send((Instant::now(), ev));
            }
            Err(e) => tracing::warn!("file watcher: {e}"),
        })
        .map_err(|source| Error::Watch {
            path: PathBuf::new(),
            source,
        })?;

    let mut interests = Vec::new();
    for path in paths {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        if abs.is_file() {
            // The parent, not recursively: the file itself changing, going
            // away or being replaced by a rename.
            let parent = abs
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            watcher
                .watch(&parent, RecursiveMode::NonRecursive)
                .map_err(|source| Error::Watch {
                    path: path.clone(),
                    source,
                })?;
            interests.push(Interest::Exact(abs));
            continue;
        }
        // A directory, or a path that does not exist yet (it may appear as
        // one): watched recursively now if it is a directory, and again
        // whenever it is replaced or (re)appears (see `poll_roots`).
        if abs.is_dir() {
            watcher
                .watch(&abs, RecursiveMode::Recursive)
                .map_err(|source| Error::Watch {
                    path: path.clone(),
                    source,
                })?;
        }
        interests.push(Interest::Tree(abs));
    }
    let watcher = Arc::new(Mutex::new(watcher));
    if !roots.is_empty() {
        let weak = Arc::downgrade(&watcher);
        std::thread::Builder::new()
            .name("lb-watch-roots".into())
            .spawn(move || poll_roots(&roots, &weak, &poll_tx))
            .map_err(|e| Error::Watch {
                path: PathBuf::new(),
                source: notify::Error::io(e),
            })?;
    }

    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("lb-watch-debounce".into())
        .spawn(move || debounce(raw_rx, tx, interests))
        .map_err(|e| Error::Watch {
            path: PathBuf::new(),
            source: notify::Error::io(e),
        })?;
    Ok((
        WatchGuard {
            _watcher: watcher,
            raw_events,
        },
        rx,
    ))
}

fn debounce(
    raw: mpsc::Receiver<(Instant, notify::Event)>,
    tx: mpsc::Sender<Change>,
    interests: Vec<Interest>,
) {
    let wanted = |ev: &notify::Event| {
        relevant(&ev.kind)
            && ev
                .paths
                .iter()
                .any(|p| interests.iter().any(|i| i.matches(p)))
    };
    coalesce(&raw, wanted, |c| tx.send(c).is_ok(), DEBOUNCE, MAX_DELAY);
}

/// A directory's identity (device and inode), `None` when `path` is not a
/// directory: a directory replaced by another (deleted and created again,
/// or another renamed into place) has a new one.
fn dir_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_dir)
        .map(|m| (m.dev(), m.ino()))
}

/// A listed directory, as [`poll_roots`] follows it.
struct Root {
    path: PathBuf,
    /// Its identity when last checked.
    identity: std::sync::Mutex<Option<(u64, u64)>>,
    /// Set by the watcher when the directory itself was removed or moved
    /// away: a directory created again in its place may reuse its inode.
    lost: std::sync::atomic::AtomicBool,
}

/// Every [`ROOT_POLL`], checks each listed directory; when it went away,
/// or its identity changed, watches the new directory (if there is one)
/// and reports the change as an event on the directory's path. Ends when
/// the watcher is dropped or the debounce thread has gone.
fn poll_roots(
    roots: &[Root],
    watcher: &std::sync::Weak<Mutex<RecommendedWatcher>>,
    tx: &mpsc::Sender<(Instant, notify::Event)>,
) {
    loop {
        std::thread::sleep(ROOT_POLL);
        let Some(watcher) = watcher.upgrade() else {
            return;
        };
        for r in roots {
            let root = &r.path;
            let now = dir_identity(root);
            let lost = r.lost.swap(false, std::sync::atomic::Ordering::Relaxed);
            let Ok(mut known) = r.identity.lock() else {
                continue;
            };
            if now == *known && !lost {
                continue;
            }
            *known = now;
            let kind = if now.is_some() {
                // Its recursive watch went with the old directory.
                if let Ok(mut w) = watcher.lock()
                    && let Err(e) = w.watch(root, RecursiveMode::Recursive)
                {
                    tracing::warn!(path = %root.display(), "cannot watch again: {e}");
                }
                EventKind::Create(notify::event::CreateKind::Folder)
            } else {
                EventKind::Remove(notify::event::RemoveKind::Folder)
            };
            let event = notify::Event::new(kind).add_path(root.clone());
            if tx.send((Instant::now(), event)).is_err() {
                return;
            }
        }
    }
}

/// Turns timestamped events into bursts: a burst starts at a wanted event
/// and ends after `quiet` without another wanted event, or `max_delay`
/// after its first event, whichever comes first. Unwanted events are
/// ignored. Returns when `raw` closes or `send` fails.
pub(crate) fn coalesce<T>(
    raw: &mpsc::Receiver<(Instant, T)>,
    wanted: impl Fn(&T) -> bool,
    mut send: impl FnMut(Change) -> bool,
    quiet: Duration,
    max_delay: Duration,
) {
    // Blocks until the watcher is dropped (the sender goes away).
    while let Ok((first, ev)) = raw.recv() {
        if !wanted(&ev) {
            continue;
        }
        let mut change = Change { first, events: 1 };
        let deadline = first + max_delay;
        let mut quiet_until = Instant::now() + quiet;
        loop {
            let until = quiet_until.min(deadline);
            let Some(wait) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            match raw.recv_timeout(wait) {
                Ok((_, ev)) if wanted(&ev) => {
                    change.events += 1;
                    quiet_until = Instant::now() + quiet;
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        if !send(change) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const TWO: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\n  namespace: x\n";

    #[test]
    fn multi_document_files_and_directories() {
        let dir = scratch("multi");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("b.yaml"), TWO).unwrap();
        std::fs::write(
            dir.join("sub/a.yml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n",
        )
        .unwrap();
        std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
        let mut src = FileSource::new(vec![dir.clone()]);
        let loaded = src.load();
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let names: Vec<_> = loaded
            .objects
            .iter()
            .map(|o| (o.name.as_str(), o.origin.document().unwrap_or(usize::MAX)))
            .collect();
        assert_eq!(names, [("a", 0), ("b", 2), ("n", 0)]);
        assert_eq!(loaded.objects[1].namespace.as_deref(), Some("x"));
        assert_eq!(loaded.objects[0].namespace, None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_changed_files_are_parsed_again_and_a_broken_one_keeps_its_objects() {
        let dir = scratch("cache");
        std::fs::write(dir.join("a.yaml"), TWO).unwrap();
        let ns = |n: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {n}\n");
        std::fs::write(dir.join("b.yaml"), ns("n1")).unwrap();
        let mut src = FileSource::new(vec![dir.clone()]);
        assert_eq!(src.load().objects.len(), 3);
        assert_eq!(src.parses(), 2);
        // Nothing changed: nothing parsed, the same objects.
        let again = src.load();
        assert_eq!(src.parses(), 2);
        assert_eq!(again.objects.len(), 3);
        // Same length, new text: seen (the text decides, not its metadata).
        std::fs::write(dir.join("b.yaml"), ns("n2")).unwrap();
        let changed = src.load();
        assert_eq!(src.parses(), 3);
        assert!(changed.objects.iter().any(|o| o.name == "n2"));
        // Broken: the last good objects stay, with a diagnostic.
        std::fs::write(dir.join("b.yaml"), "kind: [unclosed").unwrap();
        let broken = src.load();
        assert!(broken.objects.iter().any(|o| o.name == "n2"));
        assert!(
            broken.diagnostics[0]
                .message
                .contains("keeping the 1 object(s)")
        );
        // Back to the last good text: no parse needed.
        let parses = src.parses();
        std::fs::write(dir.join("b.yaml"), ns("n2")).unwrap();
        let back = src.load();
        assert!(back.diagnostics.is_empty(), "{:?}", back.diagnostics);
        assert_eq!(src.parses(), parses);
        // Deleted: its objects go.
        std::fs::remove_file(dir.join("b.yaml")).unwrap();
        assert_eq!(src.load().objects.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn broken_file_keeps_previous_objects_and_deleted_file_drops_them() {
        let dir = scratch("keep");
        let f = dir.join("svc.yaml");
        std::fs::write(&f, TWO).unwrap();
        let mut src = FileSource::new(vec![dir.clone()]);
        assert_eq!(src.load().objects.len(), 2);

        std::fs::write(
            &f,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n",
        )
        .unwrap();
        let loaded = src.load();
        assert_eq!(loaded.objects.len(), 2, "previous objects are kept");
        assert_eq!(loaded.diagnostics.len(), 1);
        let d = &loaded.diagnostics[0];
        assert!(d.is_error());
        assert_eq!(d.file.as_deref(), Some(f.as_path()));
        assert!(d.message.contains("line"), "{}", d.message);
        assert!(
            d.message.contains("keeping the 2 object(s)"),
            "{}",
            d.message
        );

        // Still broken: still kept.
        assert_eq!(src.load().objects.len(), 2);

        std::fs::remove_file(&f).unwrap();
        let loaded = src.load();
        assert!(loaded.objects.is_empty());
        assert!(loaded.diagnostics.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_path_is_an_error() {
        let mut src = FileSource::new(vec![PathBuf::from("/nonexistent/lb-manifests")]);
        let loaded = src.load();
        assert_eq!(loaded.diagnostics.len(), 1);
        assert!(loaded.diagnostics[0].is_error());
    }

    #[test]
    fn watch_signals_once_per_burst() {
        let dir = scratch("watch");
        let listed = dir.join("one.yaml");
        std::fs::write(&listed, TWO).unwrap();
        std::fs::create_dir_all(dir.join("tree")).unwrap();
        let (guard, rx) = watch(&[listed.clone(), dir.join("tree")]).expect("watch");
        // A burst of writes gives one signal.
        for i in 0..5 {
            std::fs::write(dir.join("tree").join(format!("{i}.yaml")), TWO).unwrap();
        }
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        assert!(
            rx.recv_timeout(Duration::from_millis(400)).is_err(),
            "one signal per burst"
        );
        // A sibling of the listed file is not interesting.
        std::fs::write(dir.join("other.yaml"), TWO).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(400)).is_err());
        // Replacing the listed file by rename is seen.
        let tmp = dir.join(".one.yaml.tmp");
        std::fs::write(&tmp, TWO).unwrap();
        std::fs::rename(&tmp, &listed).unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        drop(guard);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_busy_file_beside_a_watched_directory_wakes_nothing() {
        let dir = scratch("sibling");
        let tree = dir.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let (guard, rx) = watch(std::slice::from_ref(&tree)).expect("watch");
        // A log file next to the directory, written to often.
        let mut log = std::fs::File::create(dir.join("lb.log")).unwrap();
        for i in 0..200 {
            use std::io::Write;
            writeln!(log, "line {i}").unwrap();
        }
        drop(log);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(guard.raw_events(), 0, "no event from beside the directory");
        assert!(rx.try_recv().is_err());

        // The directory deleted and created again: seen (within ROOT_POLL),
        // and its new contents are watched.
        std::fs::remove_dir_all(&tree).unwrap();
        assert!(rx.recv_timeout(ROOT_POLL * 3).is_ok(), "removal seen");
        std::fs::create_dir(&tree).unwrap();
        assert!(rx.recv_timeout(ROOT_POLL * 3).is_ok(), "re-creation seen");
        while rx.recv_timeout(Duration::from_millis(300)).is_ok() {}
        std::fs::write(tree.join("a.yaml"), TWO).unwrap();
        assert!(
            rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "a file in the new directory is seen"
        );
        drop(guard);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Runs [`coalesce`] on a thread over integer events (odd ones unwanted).
    fn coalescer(
        quiet: Duration,
        max_delay: Duration,
    ) -> (mpsc::Sender<(Instant, u32)>, mpsc::Receiver<Change>) {
        let (raw_tx, raw_rx) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            coalesce(
                &raw_rx,
                |n: &u32| n.is_multiple_of(2),
                |c| tx.send(c).is_ok(),
                quiet,
                max_delay,
            )
        });
        (raw_tx, rx)
    }

    #[test]
    fn steady_stream_still_reloads_within_max_delay() {
        let (raw, rx) = coalescer(DEBOUNCE, MAX_DELAY);
        // One event every 20 ms (never DEBOUNCE of quiet) for 1.6 s.
        let sender = std::thread::spawn(move || {
            for _ in 0..80 {
                let _ = raw.send((Instant::now(), 0));
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let start = Instant::now();
        let first = rx.recv_timeout(Duration::from_secs(5)).expect("a reload");
        let waited = first.first.elapsed();
        // Bounded: no waiting for a quiet gap that never comes.
        assert!(
            waited < MAX_DELAY + Duration::from_millis(250),
            "first reload {waited:?} after the first event"
        );
        assert!(first.first >= start - Duration::from_millis(50));
        assert!(first.events > 10, "{first:?}");
        let mut later = 0;
        while rx
            .recv_timeout(MAX_DELAY + Duration::from_millis(300))
            .is_ok()
        {
            later += 1;
        }
        sender.join().unwrap();
        // 1.6 s of events in bursts of at most MAX_DELAY: 3 more signals,
        // give or take scheduling; not one per event.
        assert!((2..=10).contains(&later), "{later} more signals");
    }

    #[test]
    fn burst_of_ten_thousand_events_gives_one_change() {
        let (raw, rx) = coalescer(DEBOUNCE, MAX_DELAY);
        let at = Instant::now();
        for i in 0..20_000u32 {
            raw.send((at, i)).unwrap();
        }
        let change = rx.recv_timeout(Duration::from_secs(5)).expect("a reload");
        assert_eq!(
            change,
            Change {
                first: at,
                events: 10_000
            }
        );
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        // Unwanted events alone signal nothing.
        raw.send((Instant::now(), 1)).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        // Closing the event stream ends the coalescer.
        drop(raw);
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(2)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        ));
    }

    #[test]
    fn changes_merge_to_the_earliest_first_event() {
        let t = Instant::now();
        let mut a = Change {
            first: t + Duration::from_millis(5),
            events: 2,
        };
        a.merge(Change {
            first: t,
            events: 3,
        });
        assert_eq!(
            a,
            Change {
                first: t,
                events: 5
            }
        );
    }
}
