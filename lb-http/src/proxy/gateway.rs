//! Connections accepted on Gateway API listeners: the port's protocol decides
//! whether they are served as cleartext HTTP, terminated HTTPS or passed
//! through by SNI.

use std::rc::Rc;

use lb_core::runtime::{Accepted, Drain};

use super::HttpProxy;

impl HttpProxy {
    /// Serves a connection accepted on a Gateway listener (the port is found
    /// by the connection's local address in the current snapshot).
    pub async fn serve_gateway(self: Rc<Self>, conn: Accepted, drain: Drain) {
        let port = conn.local;
        self.serve_passthrough(conn, port, drain).await;
    }
}
