//! GatewayClass selection: the classes whose `spec.controllerName` is
//! `[gateway].controller_name` are ours and get `Accepted=True`; classes of
//! other controllers get no status from lb and their Gateways are ignored.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::status::{Stamp, object_status};
use crate::model::Object;
use crate::settings::Settings;
use crate::store::Store;

/// The names of our GatewayClasses, and their status objects.
pub(crate) fn our_classes(store: &Store, cfg: &Settings) -> (BTreeSet<String>, Vec<Value>) {
    let mut names = BTreeSet::new();
    let mut status = Vec::new();
    for obj in store.of_kind("GatewayClass") {
        let Object::GatewayClass(gc) = obj else {
            continue;
        };
        if gc.value.spec.controller_name != cfg.gateway.controller_name {
            continue;
        }
        let name = gc.value.metadata.name.clone().unwrap_or_default();
        let stamp = Stamp::of(&gc.value.metadata);
        let conditions = vec![stamp.condition(
            "Accepted",
            true,
            "Accepted",
            format!("handled by {}", cfg.gateway.controller_name),
        )];
        status.push(object_status(
            &gc.value.api_version,
            "GatewayClass",
            None,
            &name,
            json!({ "conditions": conditions }),
        ));
        names.insert(name);
    }
    (names, status)
}
