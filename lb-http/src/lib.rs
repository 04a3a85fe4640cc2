//! lb's L7 layer: the compiled HTTP snapshot and route tables, HTTP/1.1
//! proxying written against tokio's `AsyncRead`/`AsyncWrite`, and per-worker
//! upstream connection pools.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod balance;
pub mod downstream;
pub mod error;
#[doc(hidden)]
pub mod fuzz_api;
pub mod gateway;
pub mod h1;
pub mod h2;
mod passthrough;
pub mod path;
pub mod proxy;
pub mod route;
pub mod settings;
pub mod snapshot;
pub mod tls;
pub mod upstream;

pub use error::{Error, ErrorKind, Side};
pub use proxy::HttpProxy;
pub use route::{HostMatch, PathKind, RouteTable, RouteTableBuilder, RouteTarget};
pub use settings::ProxySettings;
pub use snapshot::{ApplianceSnapshot, Backend, BackendId};
