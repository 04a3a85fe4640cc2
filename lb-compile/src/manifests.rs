//! Kubernetes manifests as YAML text to raw objects: a file is split into
//! documents at their `---` markers, adjacent documents are parsed as one
//! stream (on every CPU for large texts), each is typed right after it is
//! parsed, and a document whose text did not change since the last parse
//! is not parsed again. Pure: the caller reads the files.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::diag::Diagnostic;
use crate::model::{Parsed as Typed, Pretyped};
use crate::raw::{Document, Origin, RawObject, content_id};

/// What one document chunk (see [`split_documents`]) parsed to: its
/// documents, each an object or a diagnostic (`None`: an empty document).
/// Document indexes are filled in when the chunk is placed in its file.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// A single-document chunk holds its document as its YAML text (not
    /// parsed, which takes many times the memory), for the store to type
    /// again if it has to.
    docs: Vec<Option<Result<RawObject, Box<Diagnostic>>>>,
}

/// Parsed chunks of a file by the hash of their text: a chunk whose text
/// did not change is not parsed again.
pub type ChunkCache = HashMap<u64, Arc<Chunk>>;

/// Below this many bytes to parse, a file is parsed on one thread.
const PARALLEL_BYTES: usize = 1 << 20;

/// Parses `text` chunk by chunk, reusing the chunks of `cache` whose text
/// is unchanged and parsing the others on up to as many threads as there
/// are CPUs. Returns the objects (their documents parsed only where the
/// chunk was parsed now), the per-document diagnostics and the chunks for
/// the next parse. A syntax error anywhere fails the whole file, with the
/// error a parse of the whole text gives.
pub fn parse_chunked(
    text: &str,
    file: &Path,
    cache: &ChunkCache,
) -> Result<ChunkedParse, Box<Diagnostic>> {
    let Some(pieces) = split_documents(text) else {
        return parse_whole(text, file).map(|(objects, diagnostics)| ChunkedParse {
            objects,
            diagnostics,
            typed: Pretyped::new(),
            chunks: ChunkCache::new(),
        });
    };
    let ids: Vec<u64> = pieces.iter().map(|p| content_id(p.as_bytes())).collect();
    let missing: Vec<usize> = (0..pieces.len())
        .filter(|&i| !cache.contains_key(&ids[i]))
        .collect();
    let bytes: usize = missing.iter().map(|&i| pieces[i].len()).sum();
    let threads = if bytes < PARALLEL_BYTES {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    };
    let parse_group = |group: &[usize]| -> Option<Vec<(usize, Fresh)>> {
        let mut out = Vec::with_capacity(group.len());
        // Runs of adjacent chunks parse as one stream (a parser per chunk
        // costs more than the parsing of a small document).
        let mut rest = group;
        while let Some(&first) = rest.first() {
            let len = rest
                .iter()
                .enumerate()
                .take_while(|&(k, &i)| i == first + k)
                .count();
            out.extend(parse_run(text, &pieces, &rest[..len], file)?);
            rest = &rest[len..];
        }
        Some(out)
    };
    let parsed: Option<Vec<(usize, Fresh)>> = if threads <= 1 {
        parse_group(&missing)
    } else {
        // Contiguous groups of about equal bytes, one per thread.
        let per = bytes.div_ceil(threads);
        let mut groups: Vec<&[usize]> = Vec::new();
        let (mut from, mut acc) = (0, 0);
        for (n, &i) in missing.iter().enumerate() {
            acc += pieces[i].len();
            if acc >= per {
                groups.push(&missing[from..=n]);
                (from, acc) = (n + 1, 0);
            }
        }
        if from < missing.len() {
            groups.push(&missing[from..]);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = groups
                .iter()
                .map(|g| scope.spawn(|| parse_group(g)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(None))
                .collect::<Option<Vec<_>>>()
                .map(|v| v.into_iter().flatten().collect())
        })
    };
    let Some(parsed) = parsed else {
        // Report the error as a parse of the whole file words it.
        return match parse_whole(text, file) {
            Err(d) => Err(d),
            Ok(_) => Err(Box::new(Diagnostic::error("not valid YAML").at(file, None))),
        };
    };
    let mut fresh: HashMap<usize, Fresh> = parsed.into_iter().collect();
    let mut next = ChunkCache::new();
    let (mut objects, mut diags, mut typed) = (Vec::new(), Vec::new(), Pretyped::new());
    let mut index = 0;
    for (i, id) in ids.iter().enumerate() {
        let (chunk, mut now) = match fresh.remove(&i) {
            Some(f) => (Arc::new(f.chunk), f.typed),
            None => match next.get(id).or_else(|| cache.get(id)) {
                Some(c) => (Arc::clone(c), Vec::new()),
                None => continue,
            },
        };
        for (local, doc) in chunk.docs.iter().enumerate() {
            match doc {
                None => {}
                Some(Ok(raw)) => {
                    let mut raw = raw.clone();
                    raw.origin.set_document(index);
                    if let Some(mut parsed) = now.get_mut(local).and_then(Option::take) {
                        parsed.set_document(file, index);
                        typed.insert((raw.doc.id(), raw.origin.clone()), parsed);
                    }
                    objects.push(raw);
                }
                Some(Err(d)) => {
                    let mut d = (**d).clone();
                    d.document = Some(index);
                    diags.push(d);
                }
            }
            index += 1;
        }
        next.insert(*id, chunk);
    }
    Ok(ChunkedParse {
        objects,
        diagnostics: diags,
        typed,
        chunks: next,
    })
}

/// The outcome of [`parse_chunked`].
#[derive(Debug)]
pub struct ChunkedParse {
    /// The objects; single-document chunks hold their document as text.
    pub objects: Vec<RawObject>,
    /// Per-document problems (a document that is no object, say).
    pub diagnostics: Vec<Diagnostic>,
    /// The objects of the chunks parsed now, typed.
    pub typed: Pretyped,
    /// The chunks, for the next parse of a changed text.
    pub chunks: ChunkCache,
}

/// A chunk parsed now, with its documents typed (entry `i` for document
/// `i`, where it is an object).
struct Fresh {
    chunk: Chunk,
    typed: Vec<Option<Typed>>,
}

/// Parses the adjacent chunks `run` (indexes into `pieces`, slices of
/// `text`) as one stream when each holds one document (no `...` end
/// marker in any), else chunk by chunk; `None` on a syntax error.
fn parse_run(
    text: &str,
    pieces: &[&str],
    run: &[usize],
    file: &Path,
) -> Option<Vec<(usize, Fresh)>> {
    let offset = |piece: &str| piece.as_ptr() as usize - text.as_ptr() as usize;
    let ends_early = |piece: &&str| {
        piece
            .lines()
            .any(|l| l.strip_prefix("...").is_some_and(|r| r.trim().is_empty()))
    };
    let (Some(&first), Some(&last)) = (run.first(), run.last()) else {
        return Some(Vec::new());
    };
    if run.len() > 1 && !run.iter().map(|&i| &pieces[i]).any(ends_early) {
        let from = offset(pieces[first]);
        let to = offset(pieces[last]) + pieces[last].len();
        let mut out = Vec::with_capacity(run.len());
        let mut chunks = run.iter();
        let mut whole = true;
        for doc in serde_yaml_ng::Deserializer::from_str(&text[from..to]) {
            let value = serde_json::Value::deserialize(doc).ok()?;
            let Some(&i) = chunks.next() else {
                whole = false;
                break;
            };
            out.push((i, fresh(pieces[i], vec![value], file)));
        }
        if whole && chunks.next().is_none() {
            return Some(out);
        }
    }
    run.iter()
        .map(|&i| parse_chunk(pieces[i], file).map(|c| (i, c)))
        .collect()
}

/// Parses one chunk's documents and types each (see [`fresh`]); `None`
/// on a syntax error.
fn parse_chunk(piece: &str, file: &Path) -> Option<Fresh> {
    let mut values = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(piece) {
        values.push(serde_json::Value::deserialize(doc).ok()?);
    }
    Some(fresh(piece, values, file))
}

/// A chunk from its parsed documents, each typed right away (so that its
/// parsed document is dropped at once). A single-document chunk keeps its
/// document as text.
fn fresh(piece: &str, values: Vec<serde_json::Value>, file: &Path) -> Fresh {
    let id = content_id(piece.as_bytes());
    let text: Arc<str> = Arc::from(piece);
    let single = values.len() == 1;
    let mut docs = Vec::with_capacity(values.len());
    let mut typed = Vec::with_capacity(values.len());
    for (local, value) in values.into_iter().enumerate() {
        if value.is_null() {
            docs.push(None);
            typed.push(None);
            continue;
        }
        // Several documents in one chunk (after a `...` end marker): each
        // gets an id of its own.
        let doc_id = if local == 0 {
            id
        } else {
            content_id(&[id.to_le_bytes(), (local as u64).to_le_bytes()].concat())
        };
        match raw_object(value, doc_id, file, 0) {
            Ok(mut raw) => {
                typed.push(Some(crate::model::parse(&raw)));
                if single {
                    raw.doc = raw.doc.as_yaml(Arc::clone(&text));
                }
                docs.push(Some(Ok(raw)));
            }
            Err(d) => {
                docs.push(Some(Err(d)));
                typed.push(None);
            }
        }
    }
    Fresh {
        chunk: Chunk { docs },
        typed,
    }
}

/// Parses the whole text as one stream (used when it cannot be split, and
/// to word a syntax error).
fn parse_whole(
    text: &str,
    file: &Path,
) -> Result<(Vec<RawObject>, Vec<Diagnostic>), Box<Diagnostic>> {
    let mut docs = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        match serde_json::Value::deserialize(doc) {
            Ok(v) => docs.push((index, v)),
            Err(e) => {
                let mut msg = format!("not valid YAML: {e}");
                if let Some(loc) = e.location()
                    && !msg.contains("line")
                {
                    msg.push_str(&format!(" (line {}, column {})", loc.line(), loc.column()));
                }
                return Err(Box::new(Diagnostic::error(msg).at(file, Some(index))));
            }
        }
    }
    let mut objects = Vec::new();
    let mut diags = Vec::new();
    for (index, value) in docs {
        if value.is_null() {
            continue;
        }
        let id = content_id(&serde_json::to_vec(&value).unwrap_or_default());
        match raw_object(value, id, file, index) {
            Ok(obj) => objects.push(obj),
            Err(d) => diags.push(*d),
        }
    }
    Ok((objects, diags))
}

/// Splits YAML text into chunks at document start markers: a line that
/// begins with `---` followed by a space, a tab or the end of the line.
/// YAML forbids such a line inside a document's content (even in a block
/// or quoted scalar), so each chunk parses on its own to the same
/// documents. Each chunk but the first begins with its marker. `None` when
/// the text has directives (`%` lines), which bind to the next document
/// start and are left to a parse of the whole text.
fn split_documents(text: &str) -> Option<Vec<&str>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with('%') {
            return None;
        }
        if at > 0 && is_document_start(line) {
            pieces.push(&text[start..at]);
            start = at;
        }
        at += line.len();
    }
    pieces.push(&text[start..]);
    // Comments and blank lines before the first marker are no document
    // (alone, a stream of them parses to one empty document).
    if pieces.len() > 1
        && pieces[0]
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        pieces.remove(0);
    }
    Some(pieces)
}

fn is_document_start(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\n', '\r']))
}

fn raw_object(
    value: serde_json::Value,
    id: u64,
    file: &Path,
    index: usize,
) -> Result<RawObject, Box<Diagnostic>> {
    let err = |msg: String, field: &str| {
        Box::new(Diagnostic::error(msg).at(file, Some(index)).field(field))
    };
    let serde_json::Value::Object(map) = &value else {
        return Err(err(
            "document is not a mapping (a Kubernetes object)".into(),
            "",
        ));
    };
    let string = |field: &str| -> Option<String> {
        map.get(field).and_then(|v| v.as_str()).map(str::to_owned)
    };
    let kind = string("kind").filter(|s| !s.is_empty());
    let api_version = string("apiVersion").filter(|s| !s.is_empty());
    let metadata = map.get("metadata").and_then(|m| m.as_object());
    let meta_str = |field: &str| -> Option<String> {
        metadata
            .and_then(|m| m.get(field))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let name = meta_str("name");
    let namespace = meta_str("namespace");
    let located = |d: Diagnostic| {
        let mut d = d.at(file, Some(index));
        d.kind.clone_from(&kind);
        d.namespace.clone_from(&namespace);
        d.name.clone_from(&name);
        Box::new(d)
    };
    let Some(api_version) = api_version else {
        return Err(located(
            Diagnostic::error("missing apiVersion").field("apiVersion"),
        ));
    };
    let Some(kind_s) = kind.clone() else {
        return Err(located(Diagnostic::error("missing kind").field("kind")));
    };
    let Some(name_s) = name.clone() else {
        return Err(located(
            Diagnostic::error("missing metadata.name").field("metadata.name"),
        ));
    };
    Ok(RawObject {
        kind: kind_s,
        api_version,
        namespace,
        name: name_s,
        doc: Document::parsed_yaml(value, id),
        origin: Origin::file(file.to_owned(), index),
    })
}

/// Parses multi-document YAML text as if read from `file`. A syntax error
/// anywhere fails the whole text: no objects and one diagnostic.
pub fn objects_from_str(text: &str, file: &Path) -> (Vec<RawObject>, Vec<Diagnostic>) {
    match parse_chunked(text, file, &ChunkCache::new()) {
        Ok(p) => (p.objects, p.diagnostics),
        Err(d) => (Vec::new(), vec![*d]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a parse gave, comparable: each object's identity, origin and
    /// parsed document, and each diagnostic.
    fn outcome(objs: &[RawObject], diags: &[Diagnostic]) -> Vec<String> {
        let mut out: Vec<String> = objs
            .iter()
            .map(|o| {
                format!(
                    "{} {} {:?} {} {} {}",
                    o.kind,
                    o.api_version,
                    o.namespace,
                    o.name,
                    o.origin,
                    o.doc.to_value().unwrap()
                )
            })
            .collect();
        out.extend(diags.iter().map(ToString::to_string));
        out
    }

    #[test]
    fn chunked_parse_matches_a_parse_of_the_whole_text() {
        let file = Path::new("m.yaml");
        let svc = |n: &str| format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {n}\n");
        let texts = [
            String::new(),
            "# only a comment\n".to_owned(),
            svc("a"),
            format!("# lead\n---\n{}---\n{}", svc("a"), svc("b")),
            format!("{}---\n---\n{}", svc("a"), svc("b")),
            format!(
                "--- {{apiVersion: v1, kind: Service, metadata: {{name: f}}}}\n---\n{}",
                svc("b")
            ),
            format!("{}...\n---\n{}", svc("a"), svc("b")),
            format!("{}...\n{}", svc("a"), svc("b")),
            format!(
                "{}  annotations:\n    x: |\n      ---\n      ---x\n---\t\n{}",
                svc("a"),
                svc("b")
            ),
            format!("---x: 1\n---\n{}", svc("b")),
            format!("%YAML 1.2\n---\n{}---\n{}", svc("a"), svc("b")),
            format!("---\n- 1\n---\n{}---\nkind: Service\n", svc("b")),
            "---\r\napiVersion: v1\r\nkind: Service\r\nmetadata: {name: c}\r\n---\r\n".to_owned(),
            // Errors: the whole file fails, worded as a whole parse words it.
            format!("{}---\nkind: [\n---\n{}", svc("a"), svc("b")),
            format!("{}---\n  bad: indent\n bad\n", svc("a")),
        ];
        for text in &texts {
            let whole = parse_whole(text, file).map(|(o, d)| outcome(&o, &d));
            let chunked = parse_chunked(text, file, &ChunkCache::new())
                .map(|p| outcome(&p.objects, &p.diagnostics));
            assert_eq!(chunked, whole, "{text:?}");
        }
        // Large enough to parse on several threads.
        let big: String = (0..20_000)
            .map(|i| format!("---\n{}", svc(&format!("s{i}"))))
            .collect();
        assert!(big.len() > PARALLEL_BYTES);
        let whole = parse_whole(&big, file).map(|(o, d)| outcome(&o, &d));
        let chunked = parse_chunked(&big, file, &ChunkCache::new())
            .map(|p| outcome(&p.objects, &p.diagnostics));
        assert_eq!(chunked, whole);
    }

    #[test]
    fn only_changed_chunks_are_parsed_again_and_kept_as_text() {
        let file = Path::new("m.yaml");
        let svc = |n: &str, port: u16| {
            format!(
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {n}\nspec:\n  ports: [{{port: {port}}}]\n"
            )
        };
        let first = format!("{}{}{}", svc("a", 80), svc("b", 80), svc("c", 80));
        let p = parse_chunked(&first, file, &ChunkCache::new()).unwrap();
        // Held as text, and typed as parsed.
        assert!(p.objects.iter().all(|o| o.doc.value().is_none()));
        assert_eq!(p.typed.len(), 3);
        for o in &p.objects {
            let typed = &p.typed[&(o.doc.id(), o.origin.clone())];
            let obj = typed.object.as_ref().unwrap();
            assert_eq!(*obj.origin(), o.origin);
            assert_eq!(obj.key().name, o.name);
        }
        let second = format!("{}{}{}", svc("a", 80), svc("b", 81), svc("c", 80));
        let q = parse_chunked(&second, file, &p.chunks).unwrap();
        let parsed_now: Vec<String> = q
            .typed
            .values()
            .map(|t| t.object.as_ref().unwrap().key().name)
            .collect();
        assert_eq!(parsed_now, ["b"]);
        assert_eq!(q.objects[0].doc, p.objects[0].doc);
        assert_ne!(q.objects[1].doc, p.objects[1].doc);
        let whole = parse_whole(&second, file).unwrap();
        assert_eq!(outcome(&q.objects, &[]), outcome(&whole.0, &[]));
        // A chunk moved to another document index keeps its content id.
        let third = format!("{}{}", svc("c", 80), svc("a", 80));
        let r = parse_chunked(&third, file, &q.chunks).unwrap();
        assert_eq!(r.objects[0].origin.document(), Some(0));
        assert_eq!(r.objects[0].doc, p.objects[2].doc);
        assert!(r.typed.is_empty());
    }

    #[test]
    fn missing_identity_is_reported_per_document() {
        let file = Path::new("m.yaml");
        let text = "kind: Service\nmetadata:\n  name: a\n---\napiVersion: v1\nmetadata:\n  name: b\n---\napiVersion: v1\nkind: Service\nmetadata: {}\n---\n- 1\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: ok\n";
        let (objs, diags) = objects_from_str(text, file);
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0].name, "ok");
        let fields: Vec<_> = diags
            .iter()
            .map(|d| (d.document, d.field.clone()))
            .collect();
        assert_eq!(
            fields,
            [
                (Some(0), Some("apiVersion".into())),
                (Some(1), Some("kind".into())),
                (Some(2), Some("metadata.name".into())),
                (Some(3), None),
            ]
        );
        assert_eq!(diags[0].name.as_deref(), Some("a"));
    }
}
