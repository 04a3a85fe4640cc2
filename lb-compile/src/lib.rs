//! lb's Kubernetes compiler: manifests and API objects in, an appliance
//! snapshot with status and diagnostics out, and the explanation of a
//! request against it. Pure: it reads no file, opens no socket and runs no
//! async runtime; the appliance (`lb-control`) feeds it objects and
//! publishes what it returns.
//!
//! The pipeline, in module order: [`manifests`] (YAML text to [`raw`]
//! objects), [`model`] (raw objects to validated, typed objects), [`store`]
//! (the objects of one load, indexed), [`compile`] (the store and the
//! [`settings`] to a snapshot: [`endpoints`], [`l4`] with [`vip_alloc`],
//! [`gateway`], [`tls`], [`health_spec`]), [`explain`] (a request against
//! a compiled snapshot). [`diag`] carries every finding.
#![forbid(unsafe_code)]

pub mod compile;
pub mod diag;
pub mod endpoints;
pub mod explain;
pub mod gateway;
pub mod health_spec;
pub mod l4;
pub mod manifests;
pub mod model;
pub mod ownership;
pub mod raw;
pub mod settings;
pub mod source_ranges;
pub mod store;
pub mod tls;
pub mod vip_alloc;
