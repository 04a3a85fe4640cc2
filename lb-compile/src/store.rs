//! The object store: every valid object by (kind, namespace, name), ordered
//! so that everything computed from it is deterministic. Built from raw
//! objects; invalid objects are left out and reported.

use std::collections::BTreeMap;

use crate::diag::Diagnostic;
use crate::model::Pretyped;
use crate::model::{self, Object, ObjectKey};
use crate::raw::RawObject;

/// The current valid objects.
#[derive(Debug, Clone, Default)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Stored>,
    invalid: usize,
    /// Objects that parsed but failed validation, with their errors: never
    /// served (a previous valid version may be), kept so that route status
    /// can report them.
    rejected: BTreeMap<ObjectKey, (Object, String)>,
}

/// A stored object and, for an object typed without any diagnostic, the id
/// of the document it was typed from: the same document (sources hand out
/// the same id while an object is unchanged) is not typed again.
#[derive(Debug, Clone)]
struct Stored {
    object: Object,
    typed_from: Option<u64>,
}

impl Stored {
    /// Whether this is `raw`'s object, typed from the same document.
    fn is_typed_from(&self, raw: &RawObject) -> bool {
        self.typed_from == Some(raw.doc.id()) && *self.object.origin() == raw.origin
    }
}

/// The store key of a raw object (its namespace defaulted), when its kind is known.
fn key_of(raw: &RawObject) -> Option<ObjectKey> {
    let info = model::kind_info(&raw.kind)?;
    Some(ObjectKey {
        kind: raw.kind.clone(),
        namespace: info.namespaced.then(|| {
            raw.namespace
                .clone()
                .unwrap_or_else(|| model::DEFAULT_NAMESPACE.to_owned())
        }),
        name: raw.name.clone(),
    })
}

/// Below this many objects to type, typing runs on the calling thread.
const PARALLEL_OBJECTS: usize = 2_000;

/// Types (in parallel, on up to as many threads as there are CPUs) every
/// raw object that `previous` does not hold typed from the same document:
/// entry `i` is `raws[i]` typed, or `None` where it may be reused.
fn type_in_parallel(
    raws: &[RawObject],
    keys: &[Option<ObjectKey>],
    pretyped: &mut Pretyped,
    previous: &Store,
) -> Vec<Option<model::Parsed>> {
    let reusable = |raw: &RawObject, key: &Option<ObjectKey>| {
        key.as_ref()
            .and_then(|key| previous.objects.get(key))
            .is_some_and(|s| s.is_typed_from(raw))
    };
    let mut out: Vec<Option<model::Parsed>> = (0..raws.len()).map(|_| None).collect();
    let mut todo = Vec::new();
    for (i, (raw, key)) in raws.iter().zip(keys).enumerate() {
        if reusable(raw, key) {
            continue;
        }
        match pretyped.remove(&(raw.doc.id(), raw.origin.clone())) {
            Some(parsed) => out[i] = Some(parsed),
            None => todo.push(i),
        }
    }
    let threads = if todo.len() < PARALLEL_OBJECTS {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    };
    if threads <= 1 {
        for i in todo {
            out[i] = Some(model::parse(&raws[i]));
        }
        return out;
    }
    let per = todo.len().div_ceil(threads);
    let results: Vec<Vec<(usize, model::Parsed)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = todo
            .chunks(per)
            .map(|group| {
                scope.spawn(move || {
                    group
                        .iter()
                        .map(|&i| (i, model::parse(&raws[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("typing thread panicked"))
            .collect()
    });
    for (i, parsed) in results.into_iter().flatten() {
        out[i] = Some(parsed);
    }
    out
}

impl Store {
    /// Types and validates `raws` (in source order) into a store. Returns the
    /// store and every diagnostic: invalid objects (dropped), unknown kinds
    /// and duplicates (the first one read is kept).
    pub fn build(raws: &[RawObject]) -> (Store, Vec<Diagnostic>) {
        Self::rebuild(raws, Store::default())
    }

    /// Like [`Store::build`], but an object that is invalid now and was valid
    /// in `previous` keeps its previous version, so nothing that was serving
    /// stops serving because of bad input. It still counts as invalid.
    pub fn build_keeping(raws: &[RawObject], previous: &Store) -> (Store, Vec<Diagnostic>) {
        Self::rebuild(raws, previous.clone())
    }

    /// [`Store::build_keeping`] that consumes the previous store: objects
    /// whose document is the one they were typed from last time move over
    /// as they are, without being typed and validated again (a reload with
    /// one changed object types one object).
    pub fn rebuild(raws: &[RawObject], previous: Store) -> (Store, Vec<Diagnostic>) {
        Self::rebuild_with(raws, &mut Pretyped::new(), previous)
    }

    /// [`Store::rebuild`] that takes the objects a source typed already
    /// from `typed` instead of typing them again.
    pub fn rebuild_with(
        raws: &[RawObject],
        typed: &mut Pretyped,
        mut previous: Store,
    ) -> (Store, Vec<Diagnostic>) {
        let mut store = Store::default();
        let mut diags = Vec::new();
        let keys: Vec<Option<ObjectKey>> = raws.iter().map(key_of).collect();
        let mut typed = type_in_parallel(raws, &keys, typed, &previous);
        for (i, (raw, key)) in raws.iter().zip(keys).enumerate() {
            if let Some(key) = &key
                && !store.objects.contains_key(key)
                && previous
                    .objects
                    .get(key)
                    .is_some_and(|s| s.is_typed_from(raw))
                && let Some(stored) = previous.objects.remove(key)
            {
                store.objects.insert(key.clone(), stored);
                continue;
            }
            let mut parsed = typed[i].take().unwrap_or_else(|| model::parse(raw));
            let clean = parsed.diagnostics.is_empty() && !parsed.invalid;
            let mut fallback = None;
            if parsed.invalid {
                store.invalid += 1;
                if let (Some(key), Some(obj)) = (&key, parsed.rejected.take()) {
                    let errors: Vec<String> = parsed
                        .diagnostics
                        .iter()
                        .filter(|d| d.is_error())
                        .map(|d| match &d.field {
                            Some(f) => format!("{f}: {}", d.message),
                            None => d.message.clone(),
                        })
                        .collect();
                    store.rejected.insert(key.clone(), (obj, errors.join("; ")));
                }
                if let Some(old) = key
                    .as_ref()
                    .and_then(|k| previous.objects.remove(k))
                    .map(|s| s.object)
                {
                    fallback = Some(old);
                    for d in &mut parsed.diagnostics {
                        d.message
                            .push_str("; the previous valid version keeps serving");
                    }
                }
            }
            diags.extend(parsed.diagnostics);
            let Some(obj) = parsed.object.or(fallback) else {
                continue;
            };
            let key = obj.key();
            match store.objects.get(&key) {
                Some(first) => diags.push(obj.diagnostic(Diagnostic::warning(format!(
                    "duplicate {key}: already defined at {}; this one is ignored",
                    first.object.origin()
                )))),
                None => {
                    let typed_from = clean.then(|| raw.doc.id());
                    store.objects.insert(
                        key,
                        Stored {
                            object: obj,
                            typed_from,
                        },
                    );
                }
            }
        }
        (store, diags)
    }

    /// Inserts or replaces one object (for tests and API-server sources).
    pub fn insert(&mut self, obj: Object) {
        self.objects.insert(
            obj.key(),
            Stored {
                object: obj,
                typed_from: None,
            },
        );
    }

    /// The object with `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key).map(|s| &s.object)
    }

    /// Looks an object up by kind, namespace and name.
    pub fn find(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<&Object> {
        let parts = (kind, namespace, name);
        self.objects
            .get(&parts as &dyn model::KeyParts)
            .map(|s| &s.object)
    }

    /// Every object, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Object> {
        self.objects.values().map(|s| &s.object)
    }

    /// Every object of one kind, in (namespace, name) order.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Object> + 'a {
        let start = ObjectKey {
            kind: kind.to_owned(),
            namespace: None,
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, s)| &s.object)
    }

    /// How many objects are stored.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The objects of `kind` that parsed but failed validation, with their
    /// errors joined, in (namespace, name) order. A previous valid version
    /// of one may be in the store and serving.
    pub fn rejected<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = (&'a Object, &'a str)> + 'a {
        self.rejected
            .iter()
            .filter(move |(k, _)| k.kind == kind)
            .map(|(_, (o, e))| (o, e.as_str()))
    }

    /// Whether the object with `key` was rejected by validation.
    pub fn is_rejected(&self, key: &ObjectKey) -> bool {
        self.rejected.contains_key(key)
    }

    /// How many objects were dropped as invalid while building.
    pub fn invalid(&self) -> usize {
        self.invalid
    }

    /// Object counts by kind.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for k in self.objects.keys() {
            *counts.entry(k.kind.clone()).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Severity;
    use crate::model::raw_from_yaml;

    fn raw(yaml: &str, doc: usize) -> RawObject {
        let mut r = raw_from_yaml(yaml);
        r.origin.set_document(doc);
        r
    }

    #[test]
    fn duplicates_keep_the_first_and_warn() {
        let a = raw(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n",
            0,
        );
        let b = raw(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: default}\nspec: {ports: [{port: 81}]}\n",
            1,
        );
        let (store, diags) = Store::build(&[a, b]);
        assert_eq!(store.len(), 1);
        let Some(Object::Service(s)) = store.find("Service", Some("default"), "s") else {
            panic!("missing");
        };
        assert_eq!(s.origin.document(), Some(0));
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].severity, Severity::Warning);
        assert_eq!(diags[0].document, Some(1));
        assert!(
            diags[0].message.contains("test.yaml doc 0"),
            "{}",
            diags[0].message
        );
    }

    #[test]
    fn an_unchanged_document_keeps_its_typed_object() {
        let svc = |port: u16| {
            raw(
                &format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {{ports: [{{port: {port}}}]}}\n"
                ),
                0,
            )
        };
        let typed_at = |store: &Store| match store.iter().next() {
            Some(Object::Service(b)) => &**b as *const _ as usize,
            other => panic!("{other:?}"),
        };
        let (a, b) = (svc(80), svc(81));
        let (first, _) = Store::build(std::slice::from_ref(&a));
        let before = typed_at(&first);
        // The same document: moved over.
        let (second, diags) = Store::rebuild(std::slice::from_ref(&a), first);
        assert!(diags.is_empty());
        assert_eq!(typed_at(&second), before);
        // An equal document read again has the same content id: moved over.
        let (third, _) = Store::rebuild(&[svc(80)], second);
        assert_eq!(typed_at(&third), before);
        // A changed one is typed again.
        let (fourth, _) = Store::rebuild(std::slice::from_ref(&b), third);
        assert_ne!(typed_at(&fourth), before);
        let Some(Object::Service(s)) = fourth.iter().next() else {
            panic!()
        };
        assert_eq!(
            s.value.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
            81
        );
    }

    #[test]
    fn an_object_that_becomes_invalid_keeps_its_previous_version() {
        let v1 = raw(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n",
            0,
        );
        let bad = raw(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 0}]}\n",
            0,
        );
        let (first, _) = Store::build(std::slice::from_ref(&v1));
        let (second, diags) = Store::build_keeping(&[bad], &first);
        assert_eq!(second.invalid(), 1);
        assert_eq!(
            second.get(&ObjectKey {
                kind: "Service".into(),
                namespace: Some("default".into()),
                name: "s".into()
            }),
            first.iter().next()
        );
        assert!(diags[0].is_error() && diags[0].message.contains("previous valid version"));
        // Gone from the input: gone from the store.
        let (third, _) = Store::build_keeping(&[], &second);
        assert!(third.is_empty());
    }

    #[test]
    fn invalid_objects_are_dropped_and_counted_others_kept() {
        let good = raw("apiVersion: v1\nkind: Service\nmetadata: {name: good}\n", 0);
        let bad = raw(
            "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: 0}]}\n",
            1,
        );
        let unknown = raw("apiVersion: x/v1\nkind: Widget\nmetadata: {name: w}\n", 2);
        let cluster = raw(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: lb}\n",
            3,
        );
        let (store, diags) = Store::build(&[good, bad, unknown, cluster]);
        assert_eq!(store.invalid(), 1);
        assert_eq!(store.len(), 2);
        assert!(store.find("IngressClass", None, "lb").is_some());
        assert_eq!(store.of_kind("Service").count(), 1);
        assert_eq!(store.counts().get("Service"), Some(&1));
        let sev: Vec<_> = diags.iter().map(|d| d.severity).collect();
        assert_eq!(sev, [Severity::Error, Severity::Warning]);
    }
}
