//! WebSocket through the running binary: the HTTP/1.1 Upgrade is relayed both
//! ways between a real WebSocket client and server (tokio-tungstenite), and an
//! established WebSocket keeps its backend across a reload that moves the
//! Service to another endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Lb, service_yaml};

/// A WebSocket server answering each text message `m` with `"{name}:{m}"`,
/// on its own thread until the test process ends.
pub(crate) fn ws_server(name: &'static str) -> SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        match msg {
                            Message::Text(t) => {
                                let reply = format!("{name}:{}", t.as_str());
                                if ws.send(Message::text(reply)).await.is_err() {
                                    break;
                                }
                            }
                            Message::Close(_) => break,
                            _ => {}
                        }
                    }
                });
            }
        });
    });
    addr
}

fn manifests(backend: SocketAddr) -> Vec<(String, String)> {
    vec![
        (
            "class.yaml".into(),
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: lb}\nspec: {controller: lb.example.com/ingress-controller}\n".into(),
        ),
        ("svc.yaml".into(), service_yaml("default", "chat", 80, None, &[backend])),
        (
            "ing.yaml".into(),
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: chat, namespace: default}\nspec:\n  ingressClassName: lb\n  rules:\n  - host: ws.test\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service: {name: chat, port: {number: 80}}\n".into(),
        ),
    ]
}

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

pub(crate) async fn connect(lb: SocketAddr) -> Ws {
    let stream = TcpStream::connect(lb).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async("ws://ws.test/chat", stream)
        .await
        .expect("WebSocket handshake through lb");
    assert_eq!(resp.status(), 101);
    ws
}

pub(crate) async fn ask(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).await.unwrap();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer in time")
            .expect("the WebSocket stays open")
            .unwrap();
        if let Message::Text(t) = msg {
            return t.as_str().to_owned();
        }
    }
}

#[test]
fn websocket_is_relayed_and_keeps_its_backend_across_a_reload() {
    let (a, b) = (ws_server("ws-a"), ws_server("ws-b"));
    let files = manifests(a);
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let lb = Lb::start("websocket", &refs, "");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ws = connect(lb.http).await;
        assert_eq!(ask(&mut ws, "hello").await, "ws-a:hello");
        // A large message crosses intact in both directions.
        let big = "x".repeat(200_000);
        assert_eq!(ask(&mut ws, &big).await, format!("ws-a:{big}"));

        // The Service moves to the other server.
        let generation = lb.generation();
        std::fs::write(
            lb.manifest_path("svc.yaml"),
            service_yaml("default", "chat", 80, None, &[b]),
        )
        .unwrap();
        lb.wait_generation_above(generation, Duration::from_secs(10));
        for i in 0..3 {
            assert_eq!(
                ask(&mut ws, &format!("m{i}")).await,
                format!("ws-a:m{i}"),
                "established WebSocket kept its backend"
            );
        }
        let mut fresh = connect(lb.http).await;
        assert_eq!(ask(&mut fresh, "new").await, "ws-b:new");
        ws.close(None).await.unwrap();
        fresh.close(None).await.unwrap();
    });
}
