//! Agents and the sources they report: names, identities and records.
//!
//! Tables (see [`crate::catalog`] for the layout): `agents` (agent name →
//! [`AgentRecord`]) and `sources` (`agent/source` → [`SourceRecord`]), both
//! transactional.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Key, TableDef, Tree, Tx, TxTree};
use crate::error::{Error, Result};

/// Agents by name.
pub const AGENTS: TableDef<String, AgentRecord> = TableDef::new("agents");
/// Sources by `agent/source`.
pub const SOURCES: TableDef<SourceId, SourceRecord> = TableDef::new("sources");

/// A source's identity: the agent that reported it and its name there,
/// written `agent/name` (e.g. `host-a/redis-main`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceId {
    /// The agent (host) name.
    pub agent: String,
    /// The source's name on that agent.
    pub name: String,
}

/// Longest agent or source name.
pub const MAX_NAME_LEN: usize = 128;

/// Check an agent or source name: 1–128 letters, digits, `.`, `-`, `_`,
/// not starting with `.`.
///
/// # Errors
/// [`Error::InvalidValue`] naming `what` and the rule.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            name,
            format!(
                "use 1-{MAX_NAME_LEN} letters, digits, '.', '-' or '_' (not starting with '.')"
            ),
        ))
    }
}

impl SourceId {
    /// A source id from its parts.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] when a part is not a valid name.
    pub fn new(agent: impl Into<String>, name: impl Into<String>) -> Result<Self> {
        let (agent, name) = (agent.into(), name.into());
        validate_name("agent name", &agent)?;
        validate_name("source name", &name)?;
        Ok(SourceId { agent, name })
    }
}

impl FromStr for SourceId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| {
            Error::invalid(
                "source",
                s,
                format!("{reason}; write agent/source, e.g. \"host-a/redis-main\""),
            )
        };
        let (agent, name) = s.split_once('/').ok_or_else(|| bad("there is no '/'"))?;
        SourceId::new(agent, name).map_err(|e| match e {
            Error::InvalidValue { field, reason, .. } => bad(&format!("the {field} {reason}")),
            e => e,
        })
    }
}

impl TryFrom<String> for SourceId {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<SourceId> for String {
    fn from(s: SourceId) -> String {
        s.to_string()
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.agent, self.name)
    }
}

/// What the catalog knows about an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The host name the agent reported.
    pub hostname: String,
    /// The agent's version.
    pub version: String,
    /// When the agent first registered.
    pub first_seen: DateTime<Utc>,
    /// When the agent last registered or reported.
    pub last_seen: DateTime<Utc>,
    /// Names of the sources it reported at its last registration.
    #[serde(default)]
    pub sources: Vec<String>,
    /// When the client certificate of its last registration or session
    /// expires (its notAfter); None before an agent first connected with
    /// this field's controller.
    #[serde(default)]
    pub certificate_not_after: Option<DateTime<Utc>>,
}

/// A source an agent reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Source kind, as the agent's integration names it (`volume`, `redis`,
    /// `tidb`, `kafka`, `mongodb`, `command`, …).
    pub kind: String,
    /// Kind-specific details as the agent reported them (paths, addresses;
    /// never secrets).
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    /// When the agent last reported this source.
    pub last_seen: DateTime<Utc>,
    /// Where a DR drill restores it, lower first, as the agent's integration
    /// describes its kind (see `recovery::drill_rank`). None when the agent
    /// did not say (agents older than this field, sources rebuilt from the
    /// repository): the drill restores those last.
    #[serde(default)]
    pub drill_rank: Option<u32>,
}

impl Key for SourceId {
    fn to_key(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
    fn from_key(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok()?.parse().ok()
    }
}

impl Catalog {
    /// Agents by name.
    pub fn agents(&self) -> Tree<String, AgentRecord> {
        self.table(&AGENTS)
    }

    /// Sources by `agent/source`.
    pub fn sources(&self) -> Tree<SourceId, SourceRecord> {
        self.table(&SOURCES)
    }

    /// Record an agent's registration and the sources it reports, in one
    /// transaction. Sources it no longer reports stay in the catalog (their
    /// policies and snapshots still refer to them) but leave the agent's
    /// `sources` list.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a bad agent or source name; catalog errors.
    pub fn register_agent(
        &self,
        name: &str,
        hostname: &str,
        version: &str,
        sources: &[(String, SourceRecord)],
        now: DateTime<Utc>,
    ) -> Result<AgentRecord> {
        self.register_agent_with_certificate(name, hostname, version, sources, None, now)
    }

    /// As [`Catalog::register_agent`], also recording when the client
    /// certificate the agent connected with expires (`None` keeps what was
    /// recorded before).
    ///
    /// # Errors
    /// As [`Catalog::register_agent`].
    pub fn register_agent_with_certificate(
        &self,
        name: &str,
        hostname: &str,
        version: &str,
        sources: &[(String, SourceRecord)],
        certificate_not_after: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<AgentRecord> {
        validate_name("agent name", name)?;
        let ids = sources
            .iter()
            .map(|(n, _)| SourceId::new(name, n.clone()))
            .collect::<Result<Vec<_>>>()?;
        let key = name.to_string();
        self.transaction_durable(|tx| {
            let old = tx.agents().get(&key)?;
            let record = AgentRecord {
                hostname: hostname.to_string(),
                version: version.to_string(),
                first_seen: old.as_ref().map_or(now, |a| a.first_seen),
                last_seen: now,
                sources: sources.iter().map(|(n, _)| n.clone()).collect(),
                certificate_not_after: certificate_not_after
                    .or(old.and_then(|a| a.certificate_not_after)),
            };
            tx.agents().insert(&key, &record)?;
            for (id, (_, src)) in ids.iter().zip(sources) {
                tx.sources().insert(id, src)?;
            }
            Ok(record)
        })
    }

    /// Every source of one agent, by name.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn sources_of(&self, agent: &str) -> Result<Vec<(SourceId, SourceRecord)>> {
        self.sources().scan_prefix(format!("{agent}/").as_bytes())
    }
}

impl<'a> Tx<'a> {
    /// Agents by name, in this transaction.
    pub fn agents(&self) -> TxTree<'a, String, AgentRecord> {
        self.table(&AGENTS)
    }

    /// Sources by `agent/source`, in this transaction.
    pub fn sources(&self) -> TxTree<'a, SourceId, SourceRecord> {
        self.table(&SOURCES)
    }
}
