//! The lb control plane: configuration, object sources, the object store,
//! validation into domain types, compilation into snapshots, publication,
//! and the admin API.
#![forbid(unsafe_code)]
