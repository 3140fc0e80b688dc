use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use trireme_common::backend::MemoryBackend;
use trireme_common::DynBackend;
use trireme_net::{Identity, Role};

use super::*;
use crate::catalog::Catalog;

fn t0() -> DateTime<Utc> {
    "2026-03-01T12:00:00.123456789Z".parse().unwrap()
}

fn op(name: &str) -> Identity {
    Identity {
        name: name.into(),
        role: Role::Operator,
        serial: "01".into(),
    }
}

/// A catalog whose log holds `n` entries, alternating actors `alice`, `bob`.
fn log_with(n: u64) -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(dir.path().join("catalog")).unwrap();
    for i in 1..=n {
        let who = if i % 2 == 1 { "alice" } else { "bob" };
        let e = c
            .audit()
            .append(
                Event::by(&op(who), "policy apply", format!("policy {i}"))
                    .from_peer(Some("10.0.0.7:5000".parse().unwrap())),
                t0() + Duration::minutes(i as i64),
            )
            .unwrap();
        assert_eq!(e.seq, i);
    }
    (dir, c)
}

#[test]
fn entries_chain_and_verify() {
    let (_d, c) = log_with(5);
    let all = c.audit().entries().values().unwrap();
    assert_eq!(all[0].prev_hash, GENESIS);
    for w in all.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
    assert_eq!(all[4].peer, "10.0.0.7:5000");
    let r = c.audit().verify();
    assert_eq!(r.checked, 5);
    assert_eq!(r.broken, None);
    assert_eq!(r.head, Some((5, all[4].hash.clone())));
    // An empty log verifies.
    let (_d2, empty) = log_with(0);
    assert_eq!(empty.audit().verify(), VerifyReport::default());
}

#[test]
fn the_hash_covers_every_field() {
    let (_d, c) = log_with(1);
    let e = c.audit().entries().get(&1).unwrap().unwrap();
    let mut variants = Vec::new();
    let mut v = e.clone();
    v.actor.push('x');
    variants.push(v);
    let mut v = e.clone();
    v.role = "viewer".into();
    variants.push(v);
    let mut v = e.clone();
    v.action.push('x');
    variants.push(v);
    let mut v = e.clone();
    v.target.push('x');
    variants.push(v);
    let mut v = e.clone();
    v.outcome = Outcome::Refused;
    variants.push(v);
    let mut v = e.clone();
    v.reason.push('x');
    variants.push(v);
    let mut v = e.clone();
    v.peer.push('x');
    variants.push(v);
    let mut v = e.clone();
    v.time += Duration::nanoseconds(1);
    variants.push(v);
    let mut v = e.clone();
    v.seq = 2;
    variants.push(v);
    let mut v = e.clone();
    v.prev_hash = "11".repeat(32);
    variants.push(v);
    for v in variants {
        assert_ne!(v.compute_hash(), e.hash, "{v:?}");
    }
    assert_eq!(e.compute_hash(), e.hash);
}

#[test]
fn an_edited_entry_is_named() {
    let (_d, c) = log_with(5);
    let tree = c.audit().entries();
    let mut e = tree.get(&3).unwrap().unwrap();
    e.actor = "mallory".into();
    tree.insert(&3, &e).unwrap();
    let r = c.audit().verify();
    let b = r.broken.unwrap();
    assert_eq!(b.seq, 3);
    assert!(
        b.problem.contains("does not match its hash"),
        "{}",
        b.problem
    );
    assert_eq!(r.checked, 2);

    // Re-hashing the edited entry moves the break to the next one.
    e.hash = e.compute_hash();
    tree.insert(&3, &e).unwrap();
    let b = c.audit().verify().broken.unwrap();
    assert_eq!(b.seq, 4);
    assert!(b.problem.contains("prev_hash"), "{}", b.problem);
}

#[test]
fn a_removed_entry_is_named() {
    let (_d, c) = log_with(5);
    c.audit().entries().remove(&2).unwrap();
    let b = c.audit().verify().broken.unwrap();
    assert_eq!(b.seq, 2);
    assert!(b.problem.contains("entry 2 is missing"), "{}", b.problem);

    let (_d, c) = log_with(5);
    c.audit().entries().remove(&1).unwrap();
    assert_eq!(c.audit().verify().broken.unwrap().seq, 1);

    let (_d, c) = log_with(6);
    c.audit().entries().remove(&3).unwrap();
    c.audit().entries().remove(&4).unwrap();
    let b = c.audit().verify().broken.unwrap();
    assert_eq!(b.seq, 3);
    assert!(
        b.problem.contains("entries 3 to 4 are missing"),
        "{}",
        b.problem
    );
}

#[test]
fn renumbering_after_a_removal_is_caught() {
    // Remove entry 2 and move 3.. down by one: the sequence has no gap, but
    // entry 2 (old 3) says it is 3 and chains to the removed entry.
    let (_d, c) = log_with(4);
    let tree = c.audit().entries();
    let three = tree.get(&3).unwrap().unwrap();
    let four = tree.get(&4).unwrap().unwrap();
    tree.remove(&4).unwrap();
    tree.insert(&2, &three).unwrap();
    tree.insert(&3, &four).unwrap();
    let b = c.audit().verify().broken.unwrap();
    assert_eq!(b.seq, 2);

    // Also fixing the seq field breaks the hash.
    let mut moved = three.clone();
    moved.seq = 2;
    tree.insert(&2, &moved).unwrap();
    let b = c.audit().verify().broken.unwrap();
    assert_eq!(b.seq, 2);
    assert!(b.problem.contains("hash"), "{}", b.problem);
}

#[test]
fn appending_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog");
    {
        let c = Catalog::open(&path).unwrap();
        c.audit()
            .append(Event::controller("copy damaged", "loc2: packs/ab"), t0())
            .unwrap();
    }
    let c = Catalog::open(&path).unwrap();
    let e = c
        .audit()
        .append(Event::by(&op("alice"), "restore", "x").refused("no"), t0())
        .unwrap();
    assert_eq!(e.seq, 2);
    assert_eq!(e.outcome, Outcome::Refused);
    assert_eq!(c.audit().verify().checked, 2);
}

#[test]
fn list_filters_by_time_and_actor() {
    let (_d, c) = log_with(6);
    let all = c.audit().list(None, None, 100).unwrap();
    assert_eq!(all.len(), 6);
    let bob = c.audit().list(None, Some("bob"), 100).unwrap();
    assert_eq!(bob.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 4, 6]);
    let recent = c
        .audit()
        .list(Some(t0() + Duration::minutes(4)), None, 100)
        .unwrap();
    assert_eq!(recent.first().unwrap().seq, 4);
    let last_two = c.audit().list(None, None, 2).unwrap();
    assert_eq!(
        last_two.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 6]
    );
}

#[tokio::test]
async fn the_mirror_holds_every_entry_once_and_catches_rewrites() {
    let (_d, c) = log_with(3);
    let mem = Arc::new(MemoryBackend::new());
    let backend: DynBackend = mem.clone();
    assert_eq!(
        c.audit().mirror_to("loc1", &backend, None).await.unwrap(),
        3
    );
    assert_eq!(
        c.audit().mirror_to("loc1", &backend, None).await.unwrap(),
        0
    );
    c.audit()
        .append(Event::controller("copy damaged", "x"), t0())
        .unwrap();
    assert_eq!(
        c.audit().mirror_to("loc1", &backend, None).await.unwrap(),
        1
    );
    let names: Vec<String> = mem.keys().iter().map(|k| k.path()).collect();
    assert_eq!(
        names,
        vec![
            "audit/00000000000000000001.jsonl",
            "audit/00000000000000000004.jsonl"
        ]
    );
    let seg = backend.get(&segment_key(1)).await.unwrap();
    let lines: Vec<AuditEntry> = seg
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines, c.audit().entries().values().unwrap()[..3].to_vec());

    let (n, problems) = compare_mirror(&c.audit(), &backend, None).await.unwrap();
    assert_eq!((n, problems.len()), (4, 0), "{problems:?}");

    // Rewrite the catalog's chain consistently from entry 2 on: the chain
    // verifies, the mirror does not agree.
    let tree = c.audit().entries();
    let mut prev = tree.get(&1).unwrap().unwrap().hash;
    for seq in 2..=4 {
        let mut e = tree.get(&seq).unwrap().unwrap();
        if seq == 2 {
            e.actor = "mallory".into();
        }
        e.prev_hash = prev;
        e.hash = e.compute_hash();
        prev = e.hash.clone();
        tree.insert(&seq, &e).unwrap();
    }
    assert_eq!(c.audit().verify().broken, None);
    let (_, problems) = compare_mirror(&c.audit(), &backend, None).await.unwrap();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("entry 2 differs"), "{problems:?}");
}

#[tokio::test]
async fn a_mirror_segment_rewritten_without_the_controller_key_is_named() {
    let (_d, c) = log_with(3);
    let key = [7u8; 32];
    let backend: DynBackend = Arc::new(MemoryBackend::new());
    assert_eq!(
        c.audit()
            .mirror_to("loc1", &backend, Some(&key))
            .await
            .unwrap(),
        3
    );
    let (n, problems) = compare_mirror(&c.audit(), &backend, Some(&key))
        .await
        .unwrap();
    assert_eq!((n, problems.len()), (3, 0), "{problems:?}");
    let seg = backend.get(&segment_key(1)).await.unwrap();
    assert!(
        seg.ends_with(b"\"}\n")
            && seg
                .split(|b| *b == b'\n')
                .any(|l| l.starts_with(b"{\"mac\":")),
        "the segment ends with its MAC line"
    );

    // Someone with write access to the location but not the controller
    // key rewrites the segment: the same entries, without the MAC line
    // (a consistent chain), or with a MAC under another key.
    let entries: Vec<u8> = seg
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"{\"mac\":"))
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .collect();
    for forged in [
        entries.clone(),
        [
            entries.clone(),
            format!(
                "{{\"mac\":\"{}\"}}\n",
                hex::encode(trireme_common::attribution::keyed_mac(&[8u8; 32], &entries))
            )
            .into_bytes(),
        ]
        .concat(),
    ] {
        let sum = trireme_common::crypto::sha256(&forged);
        backend
            .put(&segment_key(1), bytes::Bytes::from(forged), sum)
            .await
            .unwrap();
        let (_, problems) = compare_mirror(&c.audit(), &backend, Some(&key))
            .await
            .unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("controller MAC"), "{problems:?}");
    }
}
