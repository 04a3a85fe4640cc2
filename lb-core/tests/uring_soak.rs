//! Soak test of the io_uring reactor's cancellation: many thousands of
//! accepts, connects, receives and sends abandoned at random points (futures
//! dropped by timeouts, streams dropped mid-operation). Afterwards every
//! operation has completed, the process's descriptor count is back where it
//! started, and resident memory has not grown beyond a small bound.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lb_core::uring;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One round: `n` client connections through the ring to a ring listener,
/// each abandoned somewhere along the way.
async fn round(rng: &mut Rng, listener: &mut uring::UringListener, addr: SocketAddr, n: usize) {
    for _ in 0..n {
        let what = rng.below(8);
        let wait = Duration::from_micros(rng.below(300));
        match what {
            // Accept abandoned by a timeout (nobody connects).
            0 => {
                let _ = tokio::time::timeout(wait, listener.accept()).await;
            }
            // Connect abandoned at a random point.
            1 => {
                let _ =
                    tokio::time::timeout(wait, uring::connect(addr, Duration::from_secs(1))).await;
            }
            // Connect to a closed port: refused.
            2 => {
                let closed: SocketAddr = "127.0.0.1:1".parse().unwrap();
                assert!(
                    uring::connect(closed, Duration::from_secs(1))
                        .await
                        .is_err()
                );
            }
            _ => {
                let Ok(client) = uring::connect(addr, Duration::from_secs(1)).await else {
                    continue;
                };
                // Connections abandoned earlier may still sit in the accept
                // queue: take the one whose peer is this client.
                let me = socket2::SockRef::from(client.fd())
                    .local_addr()
                    .unwrap()
                    .as_socket()
                    .unwrap();
                let server = loop {
                    let (s, peer) = listener.accept().await.expect("accept");
                    if peer == me {
                        break s;
                    }
                };
                let mut client = lb_core::stream::Stream::Uring(client);
                let mut server = lb_core::stream::Stream::Uring(server);
                match what {
                    // A receive abandoned while waiting; the stream dropped with it in flight.
                    3 => {
                        let mut buf = [0u8; 64];
                        let _ = tokio::time::timeout(wait, server.read(&mut buf)).await;
                    }
                    // A large send dropped mid-way, the peer never reading.
                    4 => {
                        let data = vec![7u8; 1 << 20];
                        let _ = tokio::time::timeout(wait, client.write_all(&data)).await;
                    }
                    // A full exchange, then both dropped without shutdown.
                    5 => {
                        client.write_all(b"ping").await.unwrap();
                        let mut buf = [0u8; 4];
                        server.read_exact(&mut buf).await.unwrap();
                        assert_eq!(&buf, b"ping");
                    }
                    // Half-close: the reader sees end of stream after the data.
                    6 => {
                        client.write_all(b"bye").await.unwrap();
                        client.shutdown().await.unwrap();
                        let mut all = Vec::new();
                        server.read_to_end(&mut all).await.unwrap();
                        assert_eq!(all, b"bye");
                    }
                    // Reads abandoned while the peer writes.
                    _ => {
                        let mut buf = vec![0u8; 4096];
                        let w = client.write_all(&[1u8; 100_000]);
                        let r = server.read(&mut buf);
                        let _ = tokio::time::timeout(wait, async { tokio::join!(w, r) }).await;
                    }
                }
            }
        }
    }
}

#[test]
fn abandoned_operations_leak_no_descriptor_and_no_memory() {
    if let Err(reason) = uring::probe() {
        eprintln!("skipped: io_uring unavailable: {reason}");
        let _ = std::io::stderr().flush();
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let driver = tokio::task::spawn_local(uring::install().expect("ring"));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let mut listener = uring::listener(std_listener).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

        // Warm up allocator pools and the slab before taking the baseline.
        round(&mut rng, &mut listener, addr, 500).await;
        settle().await;
        let fds = open_fds();
        let rss = rss_kib();

        let start = Instant::now();
        let mut rounds = 0;
        while rounds < 20 && start.elapsed() < Duration::from_secs(60) {
            round(&mut rng, &mut listener, addr, 500).await;
            rounds += 1;
        }
        settle().await;
        // The listener's multishot accept stays armed: one operation.
        assert!(
            uring::in_flight() <= 1,
            "operations still in flight: {}",
            uring::in_flight()
        );
        assert_eq!(open_fds(), fds, "descriptors leaked after {rounds} rounds");
        let grown = rss_kib().saturating_sub(rss);
        assert!(grown < 16 * 1024, "resident memory grew by {grown} KiB");
        eprintln!(
            "{} abandoned-operation rounds of 500: fds {fds} -> {}, RSS {rss} KiB (+{grown} KiB)",
            rounds,
            open_fds()
        );

        drop(listener);
        settle().await;
        assert_eq!(uring::in_flight(), 0);
        uring::uninstall();
        let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
    });
}

/// Lets cancellations and closes complete.
async fn settle() {
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if uring::in_flight() <= 1 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}
