//! Policy files (`parse_policies`: TOML, sources, cron expressions, time
//! zones, durations, retention, objectives, restore tests), then what the
//! scheduler computes from an accepted policy: next and last slots around a
//! few instants, retry delays and the backup mode.
#![no_main]

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use trireme_controller::policy::parse_policies;

fuzz_target!(|data: &[u8]| {
    let text = trireme_fuzz::text(data);
    let Ok(policies) = parse_policies("fuzz.toml", &text) else {
        return;
    };
    for p in policies.iter().take(8) {
        for secs in [0, 946_684_800, 1_700_000_000, 4_102_444_800] {
            let t = DateTime::from_timestamp(secs, 0).expect("in range");
            let next = p.next_slot_after(t);
            if let Some(n) = next {
                assert!(n > t, "next slot {n} not after {t}");
            }
            if let Some(l) = p.last_slot_at_or_before(t) {
                assert!(l <= t, "last slot {l} after {t}");
            }
            let _ = p.mode_for(t, None);
            let _ = p.mode_for(t, next);
        }
        for attempt in 0..40 {
            let _ = p.retry_delay(attempt);
        }
    }
});
