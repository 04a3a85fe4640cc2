//! Balance and minimal disruption of Maglev tables at the default size.
//! Run with `--nocapture` to see the measured figures.

use lb_core::flowhash::{Protocol, flow_hash};
use lb_core::maglev::{DEFAULT_TABLE_SIZE, MaglevEndpoint, MaglevTable};
use std::net::SocketAddr;

const M: u32 = DEFAULT_TABLE_SIZE;

fn key(i: usize) -> String {
    format!("10.{}.{}.{}:8080", i / 65_536, i / 256 % 256, i % 256)
}

fn table(weights: &[u32]) -> MaglevTable<()> {
    let eps = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| MaglevEndpoint::new(key(i), w, ()));
    MaglevTable::new(eps, M).expect("valid table")
}

/// The largest relative deviation of a share from its weighted ideal, and the
/// largest absolute deviation in slots.
fn imbalance(t: &MaglevTable<()>) -> (f64, f64) {
    let total: u64 = t.endpoints().iter().map(|e| u64::from(e.weight())).sum();
    let mut worst = (0f64, 0f64);
    for (e, &share) in t.endpoints().iter().zip(t.shares().iter()) {
        let ideal = f64::from(M) * f64::from(e.weight()) / total as f64;
        let off = (f64::from(share) - ideal).abs();
        worst.0 = worst.0.max(off / ideal);
        worst.1 = worst.1.max(off);
    }
    worst
}

fn check_balance(name: &str, weights: &[u32]) {
    let t = table(weights);
    assert_eq!(t.shares().iter().sum::<u32>(), M);
    let (rel, abs) = imbalance(&t);
    println!(
        "balance {name}: max deviation from weighted ideal {:.4}% ({abs:.2} slots)",
        rel * 100.0
    );
    assert!(rel <= 0.01, "{name}: {:.4}%", rel * 100.0);
}

#[test]
fn balance_unweighted() {
    for n in [3, 10, 100] {
        check_balance(&format!("N={n} unweighted"), &vec![1; n]);
    }
}

#[test]
fn balance_weighted() {
    check_balance("weights 1,2,3", &[1, 2, 3]);
    check_balance("weights 1,10 (N=2)", &[1, 10]);
    let cycle: Vec<u32> = (0..100).map(|i| i % 4 + 1).collect();
    check_balance("N=100 weights 1..4 cycling", &cycle);
    let mixed: Vec<u32> = (0..100).map(|i| if i < 10 { 500 } else { 100 }).collect();
    check_balance("N=100 ten at 500, ninety at 100", &mixed);
    // Large, co-prime weights: one turn per weight unit per round would need
    // thousands of turns a round; the stride schedule keeps every share within
    // a slot or so of its ideal.
    let odd: Vec<u32> = (0..10).map(|i| 997 + 7919 * i).collect();
    check_balance("N=10 large co-prime weights", &odd);
}

#[test]
fn weight_proportions_are_exact_to_a_slot() {
    // With weights 1..=100 the smallest ideal share is 13 slots, where 1% is not
    // a whole slot; the bound that holds is about one slot.
    let weights: Vec<u32> = (1..=100).collect();
    let (rel, abs) = imbalance(&table(&weights));
    println!(
        "balance N=100 weights 1..=100: max deviation {abs:.2} slots ({:.3}%)",
        rel * 100.0
    );
    assert!(abs <= 1.5, "{abs}");
}

/// Slots that changed owner between `before` and `after`, not counting slots
/// owned by `except` in either table; and the number of slots that could have
/// stayed (those not owned by `except` before).
fn moved(before: &MaglevTable<()>, after: &MaglevTable<()>, except: &str) -> (usize, usize) {
    fn owner(t: &MaglevTable<()>, s: u16) -> &str {
        t.endpoints()[usize::from(s)].key()
    }
    let mut moved = 0;
    let mut eligible = 0;
    for (&a, &b) in before.slots().iter().zip(after.slots()) {
        let (a, b) = (owner(before, a), owner(after, b));
        if a == except || b == except {
            continue;
        }
        eligible += 1;
        if a != b {
            moved += 1;
        }
    }
    (moved, eligible)
}

fn check_removal(weights: &[u32], removed: &[usize]) -> f64 {
    let before = table(weights);
    let mut worst = 0f64;
    for &r in removed {
        let kept: Vec<_> = weights
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != r)
            .map(|(i, &w)| MaglevEndpoint::new(key(i), w, ()))
            .collect();
        let after = MaglevTable::new(kept, M).expect("table");
        let (moved, eligible) = moved(&before, &after, &key(r));
        // Every slot of the removed backend moves, by construction.
        assert!(after.position(&key(r)).is_none());
        worst = worst.max(moved as f64 / eligible as f64);
    }
    worst
}

fn check_addition(n: usize) -> f64 {
    let before = table(&vec![1; n]);
    let after = table(&vec![1; n + 1]);
    let new = key(n);
    let (moved, eligible) = moved(&before, &after, &new);
    let taken = after.shares()[after.position(&new).expect("added")];
    println!(
        "disruption add 1 to N={n}: new backend takes {taken} slots ({:.2}%), \
         {moved} other slots moved ({:.4}% of the rest)",
        100.0 * f64::from(taken) / f64::from(M),
        100.0 * moved as f64 / eligible as f64
    );
    moved as f64 / eligible as f64
}

#[test]
fn minimal_disruption_on_removal() {
    for n in [10, 100] {
        let all: Vec<usize> = (0..n).collect();
        let worst = check_removal(&vec![1; n], &all);
        println!(
            "disruption remove 1 of N={n} (each in turn): worst {:.4}% of the other slots moved",
            worst * 100.0
        );
        assert!(worst <= 0.01, "N={n}: {:.4}%", worst * 100.0);
    }
    let weights: Vec<u32> = (0..100).map(|i| i % 4 + 1).collect();
    let worst = check_removal(&weights, &[0, 1, 2, 3, 50, 99]);
    println!(
        "disruption remove 1 of N=100 weighted 1..4: worst {:.4}% of the other slots moved",
        worst * 100.0
    );
    assert!(worst <= 0.01);
}

#[test]
fn minimal_disruption_on_addition() {
    for n in [10, 100] {
        let frac = check_addition(n);
        assert!(frac <= 0.01, "N={n}: {:.4}%", frac * 100.0);
    }
}

#[test]
fn flows_spread_like_the_table() {
    // Real lookups (flow hash + table index) for 200k synthetic flows follow the
    // slot shares.
    let t = table(&[1, 2, 3]);
    let dst: SocketAddr = "203.0.113.10:443".parse().expect("addr");
    let mut hits = [0u32; 3];
    for i in 0..200_000u32 {
        let src = SocketAddr::from(([198, 18, (i >> 16) as u8, (i >> 8) as u8], i as u16));
        let idx = t
            .index(flow_hash(src, dst, Protocol::Tcp))
            .expect("non-empty");
        hits[idx] += 1;
    }
    let shares: Vec<f64> = hits.iter().map(|&h| f64::from(h) / 200_000.0).collect();
    println!("flows over weights 1,2,3: {shares:.4?}");
    for (got, want) in shares.iter().zip([1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]) {
        assert!((got - want).abs() < 0.01, "{shares:?}");
    }
}
