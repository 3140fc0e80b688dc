use super::*;

fn catalog() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(dir.path().join("catalog")).unwrap();
    (dir, c)
}

fn glob(g: &str) -> TokenRequest {
    TokenRequest {
        scope: Scope::Glob(g.into()),
        ttl: None,
        uses: Some(3),
    }
}

#[test]
fn globs_match_like_a_shell() {
    let m = |p: &str, n: &str| glob_match(p.as_bytes(), n.as_bytes());
    assert!(m("node-*", "node-1"));
    assert!(m("node-*", "node-"));
    assert!(m("*.k8s", "a.b.k8s"));
    assert!(m("n?de-*-x", "node-12-x"));
    assert!(!m("node-*", "nod-1"));
    assert!(!m("node-?", "node-12"));
    assert!(!m("db", "db-1"));
}

#[test]
fn only_the_hash_is_stored_and_a_use_is_taken_once() {
    let (_d, c) = catalog();
    let now = Utc::now();
    let (token, rec) = create(&c, &glob("node-*"), "ops", now).unwrap();
    assert!(token.starts_with("trb1."));
    let stored = c.bootstrap_tokens().get(&rec.id).unwrap().unwrap();
    assert_ne!(stored.hash, token);
    assert!(!format!("{stored:?}").contains(token.rsplit('.').next().unwrap()));

    let t = redeem(&c, &token, "node-1", now).unwrap().unwrap();
    assert_eq!(
        (t.uses_left, t.enrolled.clone()),
        (2, vec!["node-1".to_string()])
    );
    // The same name again: enrolled before.
    let r = redeem(&c, &token, "node-1", now).unwrap().unwrap_err();
    assert!(matches!(r, Refusal::NameTaken { .. }), "{r:?}");
    assert!(matches!(
        redeem(&c, &token, "db-1", now).unwrap().unwrap_err(),
        Refusal::OutOfScope { .. }
    ));
    redeem(&c, &token, "node-2", now).unwrap().unwrap();
    redeem(&c, &token, "node-3", now).unwrap().unwrap();
    assert_eq!(
        redeem(&c, &token, "node-4", now).unwrap().unwrap_err(),
        Refusal::UsedUp(3)
    );
    give_back(&c, &rec.id, "node-3").unwrap();
    redeem(&c, &token, "node-4", now).unwrap().unwrap();
}

#[test]
fn wrong_expired_and_revoked_tokens_are_refused() {
    let (_d, c) = catalog();
    let now = Utc::now();
    let (token, rec) = create(&c, &glob("*"), "ops", now).unwrap();
    let mut flipped = token.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == '0' { '1' } else { '0' });
    for bad in ["", "trb1", "trb1.x.y", flipped.as_str()] {
        assert_eq!(
            redeem(&c, bad, "a", now).unwrap().unwrap_err(),
            Refusal::WrongToken,
            "{bad:?}"
        );
    }
    let later = now + chrono::Duration::hours(2);
    assert!(matches!(
        redeem(&c, &token, "a", later).unwrap().unwrap_err(),
        Refusal::Expired(_)
    ));
    revoke(&c, &rec.id, now).unwrap();
    assert_eq!(
        redeem(&c, &token, "a", now).unwrap().unwrap_err(),
        Refusal::Revoked
    );
    assert!(revoke(&c, &rec.id, now).is_err());
}

#[test]
fn requests_are_checked() {
    let (_d, c) = catalog();
    let now = Utc::now();
    let bad = |r: TokenRequest| create(&c, &r, "ops", now).unwrap_err().to_string();
    assert!(bad(TokenRequest {
        scope: Scope::Agent("Bad_Name".into()),
        ttl: None,
        uses: None
    })
    .contains("--agent"));
    assert!(bad(glob("node/*")).contains("--name-glob"));
    assert!(bad(TokenRequest {
        ttl: Some(Duration::from_secs(365 * 86_400)),
        ..glob("n-*")
    })
    .contains("--ttl"));
    assert!(bad(TokenRequest {
        uses: Some(0),
        ..glob("n-*")
    })
    .contains("--uses"));
}
