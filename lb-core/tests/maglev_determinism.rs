//! Proves that a Maglev table is byte-identical in two processes: the test runs
//! its own binary again as a child (with `LB_MAGLEV_CHILD` set), the child builds
//! the table for a fixed endpoint set given in a different order and prints its
//! bytes in hex, and the parent compares them with its own table.

use lb_core::maglev::{DEFAULT_TABLE_SIZE, MaglevEndpoint, MaglevTable};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;

const CHILD_ENV: &str = "LB_MAGLEV_CHILD";
const MARKER: &str = "MAGLEV-TABLE ";
const TEST_NAME: &str = "table_is_identical_in_another_process";

/// A fixed endpoint set: IPv4 and IPv6 addresses, mixed weights.
fn endpoints() -> Vec<MaglevEndpoint<SocketAddr>> {
    let mut eps = Vec::new();
    for i in 0..40u8 {
        let addr = SocketAddr::from(([10, 1, i / 16, i % 16 + 1], 8080));
        eps.push(MaglevEndpoint::from_addr(addr, u32::from(i % 3) + 1));
    }
    for i in 0..10u16 {
        let addr: SocketAddr = format!("[2001:db8::{:x}]:443", i + 1)
            .parse()
            .expect("addr");
        eps.push(MaglevEndpoint::from_addr(addr, 2));
    }
    eps
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[test]
fn table_is_identical_in_another_process() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // Child: a different input order, the same set.
        let mut eps = endpoints();
        eps.reverse();
        eps.rotate_left(7);
        let t = MaglevTable::new(eps, DEFAULT_TABLE_SIZE).expect("table");
        println!("{MARKER}{:016x} {}", t.digest(), hex(&t.table_bytes()));
        return;
    }
    let exe = std::env::current_exe().expect("own test binary");
    let out = Command::new(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run child");
    assert!(out.status.success(), "child failed: {out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let line = stdout
        .lines()
        .find_map(|l| l.split_once(MARKER).map(|(_, rest)| rest))
        .expect("child printed its table");
    let (child_digest, child_hex) = line.split_once(' ').expect("digest and bytes");

    let parent = MaglevTable::new(endpoints(), DEFAULT_TABLE_SIZE).expect("table");
    let parent_hex = hex(&parent.table_bytes());
    println!(
        "determinism: parent digest {:016x}, child (pid-separate, reordered input) digest {child_digest}, {} table bytes compared",
        parent.digest(),
        parent_hex.len() / 2
    );
    assert_eq!(child_digest, format!("{:016x}", parent.digest()));
    assert!(
        child_hex == parent_hex,
        "table bytes differ between processes"
    );
}

#[test]
fn order_of_input_does_not_matter() {
    let base = MaglevTable::new(endpoints(), DEFAULT_TABLE_SIZE).expect("table");
    let mut eps = endpoints();
    // A deterministic shuffle (xorshift Fisher-Yates), several times.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..5 {
        for i in (1..eps.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            eps.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let t = MaglevTable::new(eps.clone(), DEFAULT_TABLE_SIZE).expect("table");
        assert_eq!(t.table_bytes(), base.table_bytes());
        assert_eq!(t.digest(), base.digest());
    }
}

#[test]
fn any_change_changes_the_bytes() {
    let base = MaglevTable::new(endpoints(), DEFAULT_TABLE_SIZE).expect("table");
    let mut reweighted = endpoints();
    reweighted[0] = MaglevEndpoint::from_addr(*reweighted[0].value(), 9);
    let t = MaglevTable::new(reweighted, DEFAULT_TABLE_SIZE).expect("table");
    assert_ne!(t.digest(), base.digest());
    let smaller = MaglevTable::new(endpoints(), 65_521).expect("table");
    assert_ne!(smaller.digest(), base.digest());
}

/// Pins the whole algorithm (hashes, schedule, population): a change here
/// re-routes flows in a fleet running mixed versions, so it must be deliberate.
/// The value was computed by a separate implementation of the documented
/// algorithm (Python, exact fractions for the weighted schedule), not by this code.
#[test]
fn pinned_digest() {
    let t = MaglevTable::new(endpoints(), DEFAULT_TABLE_SIZE).expect("table");
    assert_eq!(format!("{:016x}", t.digest()), "e9450db2c22c3b80");
}
