//! A small h2c backend (HTTP/2 over cleartext, prior knowledge) written with
//! the h2 crate, on its own thread and runtime. Every response carries
//! `x-backend: <name>`.
//!
//! | path          | answer                                                          |
//! |---------------|-----------------------------------------------------------------|
//! | any path      | 200, text lines describing the request, with `content-length`  |
//! | `/echo`       | the request body, no `content-length`                           |
//! | `/stream/<n>` | `n` lines `chunk <i>`, sent 20 ms apart, no `content-length`    |
//! | `/trailers`   | the description, then trailers `x-trailer: done`                |
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A running h2c backend; stops when dropped.
pub struct H2cServer {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl H2cServer {
    /// Starts a backend named `name` on a free loopback port.
    pub fn start(name: &str) -> H2cServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let (count, name) = (Arc::clone(&connections), Arc::<str>::from(name));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        count.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(serve_connection(tcp, Arc::clone(&name)));
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
        });
        H2cServer {
            addr,
            connections,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for H2cServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve_connection(tcp: TcpStream, name: Arc<str>) {
    let Ok(mut conn) = h2::server::handshake(tcp).await else {
        return;
    };
    while let Some(Ok((req, respond))) = conn.accept().await {
        tokio::spawn(handle(req, respond, Arc::clone(&name)));
    }
}

fn describe(req: &http::request::Parts, body: &[u8]) -> String {
    let path = req.uri.path_and_query().map_or("", |p| p.as_str());
    let authority = req.uri.authority().map_or("", |a| a.as_str());
    let mut text = format!(
        "method={}\npath={path}\nauthority={authority}\n",
        req.method
    );
    for name in [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "content-length",
        "te",
        "x-test",
    ] {
        let values: Vec<&str> = req
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        text.push_str(&format!("{name}={}\n", values.join(",")));
    }
    text.push_str(&format!("body={}\n", body.len()));
    text
}

async fn handle(req: Request<RecvStream>, mut respond: SendResponse<Bytes>, name: Arc<str>) {
    let (parts, mut body) = req.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let path = parts.uri.path().to_owned();
    let text = describe(&parts, &data);
    let head = |length: Option<usize>| {
        let mut r = Response::builder()
            .status(200)
            .header("x-backend", &*name)
            .header("content-type", "text/plain");
        if let Some(n) = length {
            r = r.header("content-length", n);
        }
        r.body(()).expect("response")
    };
    if path == "/echo" {
        let Ok(mut send) = respond.send_response(head(None), false) else {
            return;
        };
        let _ = send.send_data(Bytes::from(data), true);
    } else if let Some(n) = path.strip_prefix("/stream/") {
        let n: usize = n.parse().unwrap_or(1);
        let Ok(mut send) = respond.send_response(head(None), false) else {
            return;
        };
        for i in 0..n {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if send
                .send_data(Bytes::from(format!("chunk {i}\n")), i + 1 == n)
                .is_err()
            {
                return;
            }
        }
    } else if path == "/trailers" {
        let Ok(mut send) = respond.send_response(head(None), false) else {
            return;
        };
        let _ = send.send_data(Bytes::from(text), false);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-trailer", "done".parse().expect("value"));
        let _ = send.send_trailers(trailers);
    } else {
        let Ok(mut send) = respond.send_response(head(Some(text.len())), false) else {
            return;
        };
        let _ = send.send_data(Bytes::from(text), true);
    }
}
