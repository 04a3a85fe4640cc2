//! lb's L7 layer: the compiled HTTP snapshot and route tables, HTTP/1.1
//! proxying written against tokio's `AsyncRead`/`AsyncWrite`, and per-worker
//! upstream connection pools.
#![forbid(unsafe_code)]

pub mod route;
pub mod snapshot;

pub use route::{HostMatch, PathKind, RouteTable, RouteTableBuilder, RouteTarget};
pub use snapshot::{Backend, BackendId, HttpSnapshot};
