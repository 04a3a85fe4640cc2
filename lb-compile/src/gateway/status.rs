//! Kubernetes status conditions (`metav1.Condition`) and the status objects
//! the Gateway compiler emits, in Kubernetes' own camelCase schema.
//!
//! Compilation is pure, so no clock is read: `lastTransitionTime` is the
//! object's `metadata.creationTimestamp` (the Unix epoch when it has none),
//! and `observedGeneration` is `metadata.generation` (1, the first
//! generation Kubernetes assigns, for objects read from files).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

/// `lastTransitionTime` for objects without a creation timestamp.
const EPOCH: &str = "1970-01-01T00:00:00Z";

/// Why a condition has the status it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reason {
    /// The condition reason, e.g. `NotAllowedByListeners`.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl Reason {
    /// A reason with its message.
    pub(crate) fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Reason {
            reason,
            message: message.into(),
        }
    }
}

/// The generation and time every condition of one object carries.
#[derive(Debug, Clone)]
pub(crate) struct Stamp {
    generation: i64,
    time: String,
}

impl Stamp {
    /// The stamp of an object with metadata `meta`.
    pub(crate) fn of(meta: &ObjectMeta) -> Self {
        let time = meta
            .creation_timestamp
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| EPOCH.to_owned());
        Stamp {
            generation: meta.generation.unwrap_or(1),
            time,
        }
    }

    /// One condition.
    pub(crate) fn condition(
        &self,
        type_: &str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Value {
        json!({
            "type": type_,
            "status": if status { "True" } else { "False" },
            "reason": reason,
            "message": message.into(),
            "observedGeneration": self.generation,
            "lastTransitionTime": self.time,
        })
    }

    /// A positive-polarity condition: `True` with `ok_reason` when `result`
    /// is `Ok`, else `False` with the error's reason.
    pub(crate) fn outcome(
        &self,
        type_: &str,
        result: &Result<(), Reason>,
        ok_reason: &str,
        ok_message: &str,
    ) -> Value {
        match result {
            Ok(()) => self.condition(type_, true, ok_reason, ok_message),
            Err(r) => self.condition(type_, false, r.reason, r.message.clone()),
        }
    }
}

/// A status object as the status writer consumes it:
/// `{apiVersion, kind, metadata: {namespace?, name}, status}`.
pub(crate) fn object_status(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    status: Value,
) -> Value {
    let metadata = match namespace {
        Some(ns) => json!({"namespace": ns, "name": name}),
        None => json!({"name": name}),
    };
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": metadata,
        "status": status,
    })
}
