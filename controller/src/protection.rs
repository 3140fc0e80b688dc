//! The protection rule: when a snapshot's copies count as protected.
//!
//! A snapshot is protected when the locations where its copy is verified
//! number at least `min_locations` and, for every label in `distinct`
//! (`region`, `provider`), span at least two different values: the copies
//! survive the loss of any one whole region (or provider). A location
//! without that label counts for no value at all. `status`, `snapshots ls`,
//! the metrics, the RPO and the snapshot a restore test picks all use it.
//!
//! ```toml
//! [protection]
//! min_locations = 3                   # default 3
//! distinct = ["region", "provider"]   # default ["region"]; [] for none
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A location label the rule can ask copies to spread over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Spread {
    /// `region = "…"` on the location.
    Region,
    /// `provider = "…"` on the location.
    Provider,
}

impl Spread {
    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            Spread::Region => "region",
            Spread::Provider => "provider",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Spread::Region => "regions",
            Spread::Provider => "providers",
        }
    }

    /// Parse a config word.
    pub fn parse(s: &str) -> Option<Spread> {
        match s {
            "region" => Some(Spread::Region),
            "provider" => Some(Spread::Provider),
            _ => None,
        }
    }
}

/// A location's labels, as the rule sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// `region`, empty when not set.
    pub region: String,
    /// `provider`, empty when not set.
    pub provider: String,
}

impl Labels {
    fn get(&self, s: Spread) -> &str {
        match s {
            Spread::Region => &self.region,
            Spread::Provider => &self.provider,
        }
    }
}

/// Default `min_locations`.
pub const DEFAULT_MIN_LOCATIONS: usize = 3;

/// The rule, with the configured locations' labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectionRule {
    min_locations: usize,
    distinct: Vec<Spread>,
    labels: BTreeMap<String, Labels>,
}

impl ProtectionRule {
    /// The rule over these locations (name, labels), in config order.
    pub fn new(
        min_locations: usize,
        distinct: Vec<Spread>,
        locations: impl IntoIterator<Item = (String, Labels)>,
    ) -> Self {
        let mut distinct = distinct;
        distinct.sort();
        distinct.dedup();
        ProtectionRule {
            min_locations: min_locations.max(1),
            distinct,
            labels: locations.into_iter().collect(),
        }
    }

    /// Verified at `n` locations or more, nothing else asked (tests, and
    /// code that has no labels).
    pub fn count(n: usize) -> Self {
        ProtectionRule::new(n, Vec::new(), std::iter::empty())
    }

    /// How many verified copies it needs.
    pub fn min_locations(&self) -> usize {
        self.min_locations
    }

    /// The labels copies must spread over.
    pub fn distinct(&self) -> &[Spread] {
        &self.distinct
    }

    /// The rule in a few words, e.g. `3 locations in 2+ regions`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "verified at {} location{}",
            self.min_locations,
            if self.min_locations == 1 { "" } else { "s" }
        );
        for d in &self.distinct {
            s.push_str(&format!(", in 2 or more {}", d.plural()));
        }
        s
    }

    /// What keeps copies at `verified` (location names) from meeting the
    /// rule; empty when they meet it.
    pub fn shortfall<'a>(&self, verified: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let verified: BTreeSet<&str> = verified.into_iter().collect();
        let mut out = Vec::new();
        if verified.len() < self.min_locations {
            out.push(format!(
                "verified at {} of the {} locations the protection rule needs",
                verified.len(),
                self.min_locations
            ));
        }
        for &d in &self.distinct {
            let values: BTreeSet<&str> = verified
                .iter()
                .filter_map(|l| self.labels.get(*l))
                .map(|l| l.get(d))
                .filter(|v| !v.is_empty())
                .collect();
            if values.len() < 2 {
                out.push(match values.iter().next() {
                    Some(v) => format!(
                        "every verified copy is in {} {v:?}: the rule needs copies in 2 or more {}",
                        d.name(),
                        d.plural()
                    ),
                    None => format!(
                        "no verified copy is at a location with a {} label: the rule needs copies in 2 or more {}",
                        d.name(),
                        d.plural()
                    ),
                });
            }
        }
        out
    }

    /// Whether copies verified at these locations meet the rule.
    pub fn met_by<'a>(&self, verified: impl IntoIterator<Item = &'a str>) -> bool {
        self.shortfall(verified).is_empty()
    }

    /// Why no snapshot can ever be protected with the configured locations,
    /// each with what to change; empty when copies at every location would
    /// meet the rule.
    pub fn config_problems(&self) -> Vec<String> {
        let all = self.labels.keys().map(String::as_str);
        let mut out: Vec<String> = self
            .shortfall(all)
            .into_iter()
            .map(|s| format!("the protection rule ({}) cannot be met: even copies at every configured location would be short ({s})", self.describe()))
            .collect();
        if !out.is_empty() {
            for &d in &self.distinct {
                let unlabelled: Vec<&str> = self
                    .labels
                    .iter()
                    .filter(|(_, l)| l.get(d).is_empty())
                    .map(|(n, _)| n.as_str())
                    .collect();
                if !unlabelled.is_empty() {
                    out.push(format!(
                        "location{} {} ha{} no {} label: set {} = \"…\" on each [[location]] (the {} it really is in)",
                        if unlabelled.len() == 1 { "" } else { "s" },
                        unlabelled.join(", "),
                        if unlabelled.len() == 1 { "s" } else { "ve" },
                        d.name(),
                        d.name(),
                        d.name()
                    ));
                }
            }
            out.push(
                "add locations (and labels) that meet it, or relax [protection] min_locations / distinct in the controller's config"
                    .into(),
            );
        }
        out
    }
}

impl fmt::Display for ProtectionRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(min: usize, distinct: &[Spread]) -> ProtectionRule {
        let l = |r: &str, p: &str| Labels {
            region: r.into(),
            provider: p.into(),
        };
        ProtectionRule::new(
            min,
            distinct.to_vec(),
            [
                ("primary".to_string(), l("eu-west-1", "aws")),
                ("other-region".to_string(), l("us-east-1", "aws")),
                ("other-provider".to_string(), l("eu-west-1", "ovh")),
                ("same-disk".to_string(), l("", "")),
            ],
        )
    }

    #[test]
    fn copies_must_number_enough_and_spread_over_each_label() {
        let r = rule(3, &[Spread::Region, Spread::Provider]);
        assert!(r.met_by(["primary", "other-region", "other-provider"]));
        // Two regions and two providers, but only two copies.
        let s = r.shortfall(["other-region", "other-provider"]);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(s[0].contains("verified at 2 of the 3"), "{s:?}");
        // Three copies, one provider.
        let s = r.shortfall(["primary", "other-region", "same-disk"]);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(
            s[0].contains("every verified copy is in provider \"aws\""),
            "{s:?}"
        );
        // Three copies, one region (the unlabelled one counts for none).
        let s = r.shortfall(["primary", "other-provider", "same-disk"]);
        assert!(s[0].contains("in region \"eu-west-1\""), "{s:?}");
        // Regions only: two of the three copies in one region is fine.
        assert!(rule(3, &[Spread::Region]).met_by(["primary", "other-provider", "other-region"]));
        assert!(rule(2, &[]).met_by(["same-disk", "primary"]));
        assert!(!rule(2, &[]).met_by(["same-disk"]));
    }

    #[test]
    fn a_config_that_cannot_meet_the_rule_says_what_is_missing() {
        assert!(rule(3, &[Spread::Region, Spread::Provider])
            .config_problems()
            .is_empty());
        assert!(rule(5, &[]).config_problems()[0].contains("verified at 4 of the 5"));
        let disk = ProtectionRule::new(
            3,
            vec![Spread::Region],
            ["a", "b", "c"].map(|n| (n.to_string(), Labels::default())),
        );
        let p = disk.config_problems();
        assert!(p[0].contains("cannot be met"), "{p:?}");
        assert!(
            p.iter()
                .any(|l| l.contains("locations a, b, c have no region label")),
            "{p:?}"
        );
        assert_eq!(
            disk.describe(),
            "verified at 3 locations, in 2 or more regions"
        );
    }
}
