//! How fast each source's data volume fills: a sample of its usage kept
//! every `volume_sample_every` (default 1 h, the newest 720: a month), the
//! growth rate over them, and the days left until the volume reaches the
//! 75% warning line. `status` warns, and `TriremeSourceVolumeFillsSoon`
//! fires, when that is under 30 days.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::error::Result;
use crate::SourceId;

/// A source's data filesystem as its agent reported it.
#[derive(Debug, Clone)]
pub struct Volume {
    /// The path on the agent's host.
    pub path: String,
    /// Filesystem size.
    pub total_bytes: u64,
    /// Used bytes.
    pub used_bytes: u64,
    /// When reported.
    pub at: DateTime<Utc>,
}

impl Volume {
    /// Used share, 0..1.
    pub fn ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            self.used_bytes as f64 / self.total_bytes as f64
        }
    }
}

/// Used share at which `status` warns about a source's volume.
pub const VOLUME_WARN_RATIO: f64 = 0.75;

/// Default `volume_sample_every`.
pub const DEFAULT_SAMPLE_EVERY: Duration = Duration::from_secs(3600);

/// Samples kept per source.
pub const MAX_SAMPLES: usize = 720;

/// Under this many days to the warning line is a status problem.
pub const WARN_DAYS: f64 = 30.0;

/// One kept sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When the agent reported it.
    pub at: DateTime<Utc>,
    /// Used bytes.
    pub used: u64,
    /// Filesystem size.
    pub total: u64,
}

/// A source's kept samples, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Samples {
    /// Oldest first.
    pub samples: Vec<Sample>,
}

/// Volume samples by source.
pub const VOLUME_SAMPLES: crate::catalog::TableDef<SourceId, Samples> =
    crate::catalog::TableDef::new("volume_samples");

impl Catalog {
    /// Volume samples by source.
    pub fn volume_samples(&self) -> crate::catalog::Tree<SourceId, Samples> {
        self.table(&VOLUME_SAMPLES)
    }
}

/// Keep `v` as a sample of `source` when the newest kept one is `every` or
/// more older (or there is none); the oldest go past [`MAX_SAMPLES`].
///
/// # Errors
/// Catalog errors.
pub fn record(catalog: &Catalog, source: &SourceId, v: &Volume, every: Duration) -> Result<()> {
    let mut s = catalog.volume_samples().get(source)?.unwrap_or_default();
    if let Some(last) = s.samples.last() {
        let every = chrono::Duration::from_std(every).unwrap_or_default();
        if v.at - last.at < every {
            return Ok(());
        }
    }
    s.samples.push(Sample {
        at: v.at,
        used: v.used_bytes,
        total: v.total_bytes,
    });
    if s.samples.len() > MAX_SAMPLES {
        let drop = s.samples.len() - MAX_SAMPLES;
        s.samples.drain(..drop);
    }
    catalog.volume_samples().insert(source, &s)
}

/// A volume's growth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth {
    /// Bytes per day (negative: shrinking), least squares over the samples.
    pub bytes_per_day: f64,
    /// Days until used reaches 75% of the size at that rate (none: not
    /// growing; 0: already there).
    pub days_to_warn: Option<f64>,
}

/// The growth over `samples` (two or more, spanning some time).
pub fn growth(samples: &[Sample]) -> Option<Growth> {
    let (first, last) = (samples.first()?, samples.last()?);
    if samples.len() < 2 || last.at <= first.at {
        return None;
    }
    let t0 = first.at;
    let pts: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| {
            (
                (s.at - t0).num_milliseconds() as f64 / 86_400_000.0,
                s.used as f64,
            )
        })
        .collect();
    let n = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx;
    let warn_at = last.total as f64 * VOLUME_WARN_RATIO;
    let days_to_warn = if last.used as f64 >= warn_at {
        Some(0.0)
    } else if slope > 0.0 {
        Some((warn_at - last.used as f64) / slope)
    } else {
        None
    };
    Some(Growth {
        bytes_per_day: slope,
        days_to_warn,
    })
}

/// Status problems: volumes that reach 75% within [`WARN_DAYS`] at their
/// growth rate (those already there are `status::volume_problems`).
///
/// # Errors
/// Catalog errors.
pub fn problems(catalog: &Catalog) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (source, s) in catalog.volume_samples().entries()? {
        let Some(g) = growth(&s.samples) else {
            continue;
        };
        match g.days_to_warn {
            Some(d) if d > 0.0 && d < WARN_DAYS => out.push(format!(
                "{source}: its data volume grows {}/day and reaches 75% full in {:.0} days at that rate: \
                 grow the volume (keep a 30-50% buffer) or move data off it",
                bytes(g.bytes_per_day),
                d.max(1.0)
            )),
            _ => {}
        }
    }
    Ok(out)
}

fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000 + h * 3600, 0).unwrap()
    }

    #[test]
    fn growth_is_the_least_squares_slope_and_projects_the_warning_line() {
        let gib = 1u64 << 30;
        // 1 GiB a day on a 100 GiB volume at 60 GiB: 15 days to 75 GiB.
        let s: Vec<Sample> = (0..=48)
            .map(|h| Sample {
                at: at(h),
                used: 60 * gib + (h as u64) * gib / 24,
                total: 100 * gib,
            })
            .collect();
        let g = growth(&s).unwrap();
        assert!((g.bytes_per_day - gib as f64).abs() < 1.0, "{g:?}");
        let d = g.days_to_warn.unwrap();
        assert!((d - 13.0).abs() < 0.01, "{d}");
        // Flat or shrinking: never.
        let flat: Vec<Sample> = (0..5)
            .map(|h| Sample {
                at: at(h),
                used: 10,
                total: 100,
            })
            .collect();
        assert_eq!(growth(&flat).unwrap().days_to_warn, None);
        assert!(growth(&flat[..1]).is_none());
    }

    #[test]
    fn samples_are_kept_every_interval_and_capped() {
        let d = tempfile::tempdir().unwrap();
        let c = Catalog::open(d.path().join("catalog")).unwrap();
        let src: SourceId = "a/b".parse().unwrap();
        let v = |h: i64, used| Volume {
            path: "/data".into(),
            total_bytes: 1000,
            used_bytes: used,
            at: at(h),
        };
        record(&c, &src, &v(0, 100), DEFAULT_SAMPLE_EVERY).unwrap();
        // Within the hour: not kept.
        let mut early = v(0, 150);
        early.at += chrono::Duration::minutes(30);
        record(&c, &src, &early, DEFAULT_SAMPLE_EVERY).unwrap();
        assert_eq!(
            c.volume_samples().get(&src).unwrap().unwrap().samples.len(),
            1
        );
        for h in 1..=(MAX_SAMPLES as i64 + 5) {
            record(&c, &src, &v(h, 100 + h as u64), DEFAULT_SAMPLE_EVERY).unwrap();
        }
        let s = c.volume_samples().get(&src).unwrap().unwrap().samples;
        assert_eq!(s.len(), MAX_SAMPLES);
        assert_eq!(s.last().unwrap().used, 100 + MAX_SAMPLES as u64 + 5);
        // 1 byte an hour on 1000, at ~825 already past 750.
        let p = problems(&c).unwrap();
        assert!(p.is_empty(), "{p:?}");
    }
}
