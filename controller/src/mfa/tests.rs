use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use trireme_common::LocalKeyFile;

use super::*;

/// RFC 6238 appendix B, SHA-1 seed "12345678901234567890", last 6 digits.
#[test]
fn codes_match_the_rfc_test_vectors() {
    let secret = b"12345678901234567890";
    for (t, code) in [
        (59, "287082"),
        (1_111_111_109, "081804"),
        (1_111_111_111, "050471"),
        (1_234_567_890, "005924"),
        (2_000_000_000, "279037"),
    ] {
        assert_eq!(code_at(secret, t), code, "t = {t}");
    }
}

#[test]
fn the_window_is_one_step_either_side() {
    let s = [7u8; SECRET_LEN];
    let now = 1_800_000_015; // step 60_000_000
    let step = now / STEP_SECS;
    for d in [-1i64, 0, 1] {
        let at = (now as i64 + d * STEP_SECS as i64) as u64;
        assert_eq!(
            check_code(&s, &code_at(&s, at), now, None),
            Ok((step as i64 + d) as u64),
            "offset {d}"
        );
    }
    for d in [-3i64, -2, 2, 3] {
        let at = (now as i64 + d * STEP_SECS as i64) as u64;
        let code = code_at(&s, at);
        // A code of a far step could equal one inside the window by chance.
        let in_window = (-1..=1).any(|w| code_at(&s, (now as i64 + w * 30) as u64) == code);
        if !in_window {
            assert_eq!(
                check_code(&s, &code, now, None),
                Err(CodeError::Wrong),
                "offset {d}"
            );
        }
    }
    assert_eq!(
        check_code(&s, "12345", now, None),
        Err(CodeError::Malformed)
    );
    assert_eq!(
        check_code(&s, "abcdef", now, None),
        Err(CodeError::Malformed)
    );
}

#[test]
fn a_code_is_accepted_once() {
    let s = [9u8; SECRET_LEN];
    let now = 1_800_000_015;
    let code = code_at(&s, now);
    let step = check_code(&s, &code, now, None).unwrap();
    assert_eq!(
        check_code(&s, &code, now, Some(step)),
        Err(CodeError::Reused)
    );
    // Nor an older one still inside the window.
    let older = code_at(&s, now - STEP_SECS);
    if older != code {
        assert_eq!(
            check_code(&s, &older, now, Some(step)),
            Err(CodeError::Reused)
        );
    }
    // The next step's code is fine.
    let next = code_at(&s, now + STEP_SECS);
    assert_eq!(check_code(&s, &next, now, Some(step)), Ok(step + 1));
}

#[test]
fn uri_and_base32_round_trip() {
    let s = [0xA5u8; SECRET_LEN];
    let b32 = secret_base32(&s);
    assert_eq!(secret_from_base32(&b32).unwrap(), s.to_vec());
    assert_eq!(secret_from_base32(&b32.to_lowercase()).unwrap(), s.to_vec());
    let uri = otpauth_uri(&s, "alice");
    assert!(
        uri.starts_with("otpauth://totp/Trireme:alice?secret=") && uri.contains(&b32),
        "{uri}"
    );
}

fn at(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0).unwrap()
}

fn service(required: bool) -> (tempfile::TempDir, Mfa) {
    service_with(MfaSettings {
        required,
        ..MfaSettings::default()
    })
}

fn service_with(settings: MfaSettings) -> (tempfile::TempDir, Mfa) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(dir.path().join("catalog")).unwrap();
    let key = Arc::new(LocalKeyFile::create(&dir.path().join("master.key")).unwrap());
    (dir, Mfa::new(catalog, key, settings))
}

#[tokio::test]
async fn enroll_confirm_and_check() {
    let (_d, mfa) = service(false);
    let now = 1_800_000_015;
    // Not enrolled, not required: passes without a code.
    assert_eq!(
        mfa.check("alice", None, "restore", at(now)).await.unwrap(),
        Passed::NotEnrolled
    );
    let e = mfa.enroll("alice", None, at(now)).await.unwrap();
    let secret = secret_from_base32(&e.secret_base32).unwrap();
    // The catalog holds it sealed, not in the clear.
    let rec = mfa
        .catalog
        .mfa()
        .get(&"alice".to_string())
        .unwrap()
        .unwrap();
    assert!(!rec.sealed_secret.windows(secret.len()).any(|w| w == secret));
    // Until confirmed, nothing changes.
    assert_eq!(
        mfa.check("alice", None, "restore", at(now)).await.unwrap(),
        Passed::NotEnrolled
    );
    let wrong = match mfa.confirm("alice", "000000", at(now)).await {
        Err(MfaError::Denied(m)) => m,
        other => panic!("{other:?}"),
    };
    if code_at(&secret, now as u64) != "000000" {
        assert!(wrong.contains("wrong or expired"), "{wrong}");
    }
    mfa.confirm("alice", &code_at(&secret, now as u64 - 30), at(now))
        .await
        .unwrap();
    assert!(mfa.is_enrolled("alice").unwrap());
    // Now a code is needed.
    let m = match mfa.check("alice", None, "policy apply", at(now)).await {
        Err(MfaError::Denied(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(
        m.contains("policy apply is a sensitive action") && m.contains("--totp"),
        "{m}"
    );
    let code = code_at(&secret, now as u64);
    assert_eq!(
        mfa.check("alice", Some(&code), "restore", at(now))
            .await
            .unwrap(),
        Passed::Code
    );
    // The same code again is a replay.
    let m = match mfa.check("alice", Some(&code), "restore", at(now)).await {
        Err(MfaError::Denied(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(m.contains("already used"), "{m}");
    // Replacing the enrollment needs a code too.
    assert!(matches!(
        mfa.enroll("alice", None, at(now)).await,
        Err(MfaError::Denied(_))
    ));
    let later = now + 30;
    mfa.enroll("alice", Some(&code_at(&secret, later as u64)), at(later))
        .await
        .unwrap();
}

#[tokio::test]
async fn required_refuses_operators_who_never_enrolled() {
    let (_d, mfa) = service(true);
    let m = match mfa
        .check("bob", Some("123456"), "restore", at(1_800_000_000))
        .await
    {
        Err(MfaError::Denied(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(
        m.contains("requires MFA") && m.contains("trireme mfa enroll"),
        "{m}"
    );
}

#[tokio::test]
async fn wrong_codes_back_the_name_off_and_are_counted_once() {
    let (_d, mfa) = service_with(MfaSettings {
        required: false,
        limits: Limits {
            max_failures: 3,
            backoff: std::time::Duration::from_secs(60),
        },
    });
    let now = 1_800_000_015;
    let e = mfa.enroll("alice", None, at(now)).await.unwrap();
    let secret = secret_from_base32(&e.secret_base32).unwrap();
    mfa.confirm("alice", &code_at(&secret, now as u64 - 30), at(now))
        .await
        .unwrap();
    let good = code_at(&secret, now as u64);
    let wrong = if good == "000000" { "111111" } else { "000000" };
    let denied = |r: std::result::Result<Passed, MfaError>| match r {
        Err(MfaError::Denied(m)) => m,
        other => panic!("{other:?}"),
    };
    for _ in 0..2 {
        let m = denied(mfa.check("alice", Some(wrong), "prune", at(now)).await);
        assert!(!m.contains("refused without being checked"), "{m}");
    }
    let m = denied(mfa.check("alice", Some(wrong), "prune", at(now)).await);
    assert!(
        m.contains("3 wrong codes for alice")
            && m.contains("refused without being checked until 2027-01-15 08:01:15 UTC (in 60 s)"),
        "{m}"
    );
    // Backed off: even the right code is refused, unchecked, saying when.
    for s in 0..4 {
        match mfa
            .check("alice", Some(&good), "restore", at(now + s))
            .await
        {
            Err(MfaError::Throttled(m)) => assert!(
                m.contains("too many wrong TOTP codes for alice")
                    && m.contains("until 2027-01-15 08:01:15 UTC")
                    && m.contains(&format!("(in {} s)", 60 - s)),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }
    // Another operator is not affected.
    assert_eq!(
        mfa.check("bob", None, "restore", at(now)).await.unwrap(),
        Passed::NotEnrolled
    );
    assert!(mfa.take_bursts(at(now + 59), false).is_empty());
    let bursts = mfa.take_bursts(at(now + 60), false);
    assert_eq!(bursts.len(), 1, "{bursts:?}");
    assert_eq!((bursts[0].name.as_str(), bursts[0].refused), ("alice", 4));
    // After the back-off the right code works (the refused ones did not
    // use it up).
    let later = code_at(&secret, now as u64 + 60);
    assert_eq!(
        mfa.check("alice", Some(&later), "restore", at(now + 60))
            .await
            .unwrap_or_else(|e| panic!("{e:?}")),
        Passed::Code
    );
}
