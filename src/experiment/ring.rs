//! `ringside ring`: the seed's remapping experiment. Place keys on backends,
//! change the topology, place them again and count what moved — under the
//! chosen placement, under modulo hashing, and the ideal.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::router::remap::ideal_share;
use crate::router::{
    BackendSpec, NullSink, Placement, Router, RouterConfig, RouterError, SessionKey, Timestamp, VnodeHash,
};
use crate::text::thousands;

/// The most keys one run places (they are held as sessions for bounded loads).
pub const MAX_KEYS: u32 = 2_000_000;

/// A topology change to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Take this backend out.
    Remove(String),
    /// Add a backend with this name.
    Add(String),
}

/// The experiment's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RingExperiment {
    /// Backends `api-1` … `api-N` before the change.
    pub backends: u32,
    /// Virtual nodes per backend.
    pub vnodes: u32,
    /// Keys `client-0` … `client-(N-1)`.
    pub keys: u32,
    /// The change, if any.
    pub change: Option<Change>,
    /// How keys are placed.
    pub placement: Placement,
    /// How vnode labels become positions.
    pub vnode_hash: VnodeHash,
}

/// Keys per backend, in backend order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counts(pub Vec<(String, u64)>);

impl Counts {
    /// The busiest backend's keys over the mean.
    pub fn max_over_mean(&self) -> f64 {
        let total: u64 = self.0.iter().map(|(_, c)| c).sum();
        let max = self.0.iter().map(|(_, c)| *c).max().unwrap_or(0);
        if total == 0 {
            0.0
        } else {
            max as f64 * self.0.len() as f64 / total as f64
        }
    }

    fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, c)| *c)
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, count) in &self.0 {
            map.serialize_entry(name, count)?;
        }
        map.end()
    }
}

/// Shares of all keys that changed backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Remapped {
    /// Under the chosen placement.
    pub placement: f64,
    /// Under `position % backends`.
    pub modulo: f64,
    /// The least any scheme must move.
    pub ideal: f64,
}

/// What the experiment measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RingReport {
    /// The parameters.
    pub experiment: RingExperiment,
    /// Keys per backend before the change.
    pub before: Counts,
    /// Keys per backend after it, when there was one.
    pub after: Option<Counts>,
    /// What moved, when there was a change.
    pub remapped: Option<Remapped>,
}

impl RingExperiment {
    /// Places the keys before and after the change.
    pub fn run(&self) -> Result<RingReport, RouterError> {
        if self.keys > MAX_KEYS {
            return Err(RouterError::BadSpec(format!(
                "{} keys: at most {MAX_KEYS} per run",
                self.keys
            )));
        }
        let names_before = self.names_before();
        let names_after = match &self.change {
            None => None,
            Some(Change::Remove(name)) => {
                if !names_before.contains(name) {
                    return Err(RouterError::UnknownBackend(name.clone()));
                }
                Some(names_before.iter().filter(|n| *n != name).cloned().collect::<Vec<_>>())
            }
            Some(Change::Add(name)) => {
                if names_before.contains(name) {
                    return Err(RouterError::DuplicateName(name.clone()));
                }
                crate::router::backend::validate_name(name)?;
                let mut after = names_before.clone();
                after.push(name.clone());
                Some(after)
            }
        };
        let keys = self.keys();
        let before = self.place(&names_before, &keys)?;
        let Some(names_after) = names_after else {
            return Ok(RingReport {
                experiment: self.clone(),
                before: count(&names_before, &before),
                after: None,
                remapped: None,
            });
        };
        let after = self.place(&names_after, &keys)?;
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let modulo_moved = keys
            .iter()
            .filter(|k| {
                let p = crc32fast::hash(k.as_bytes()) as usize;
                names_before[p % names_before.len()] != names_after[p % names_after.len()]
            })
            .count();
        let n = keys.len() as f64;
        Ok(RingReport {
            experiment: self.clone(),
            before: count(&names_before, &before),
            after: Some(count(&names_after, &after)),
            remapped: Some(Remapped {
                placement: moved as f64 / n,
                modulo: modulo_moved as f64 / n,
                ideal: ideal_share(names_before.len(), names_after.len()),
            }),
        })
    }

    /// The backend of each key, placed one after the other.
    fn place(&self, names: &[String], keys: &[String]) -> Result<Vec<String>, RouterError> {
        Ok(self.placed(names, keys)?.1)
    }

    /// A router with backends `names` and `keys` placed on it one after the
    /// other (as sessions, so bounded loads count them), and each key's backend.
    pub(super) fn placed(&self, names: &[String], keys: &[String]) -> Result<(Router, Vec<String>), RouterError> {
        let router = Router::new(
            RouterConfig {
                vnodes_per_weight: self.vnodes,
                vnode_hash: self.vnode_hash,
                placement: self.placement,
                max_sessions: keys.len(),
                seed: Some(1),
                ..RouterConfig::default()
            },
            Arc::new(NullSink),
        );
        for (i, name) in names.iter().enumerate() {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 8081u16.wrapping_add(i as u16)));
            router.add_backend(&BackendSpec::new(name, addr, 1)?)?;
        }
        let owners = keys
            .iter()
            .map(|k| {
                router
                    .route(SessionKey::Text(k.as_bytes()), Timestamp(0))
                    .map(|r| r.backend.name.to_string())
            })
            .collect::<Result<_, _>>()?;
        Ok((router, owners))
    }

    /// The backends before the change: `api-1` … `api-N`.
    pub(super) fn names_before(&self) -> Vec<String> {
        (1..=self.backends).map(|i| format!("api-{i}")).collect()
    }

    /// The keys placed: `client-0` … `client-(N-1)`.
    pub(super) fn keys(&self) -> Vec<String> {
        (0..self.keys).map(|i| format!("client-{i}")).collect()
    }
}

fn count(names: &[String], owners: &[String]) -> Counts {
    Counts(
        names
            .iter()
            .map(|n| (n.clone(), owners.iter().filter(|o| *o == n).count() as u64))
            .collect(),
    )
}

/// The JSON form of a report, fields in reading order.
#[derive(Debug, Serialize)]
pub struct RingJson<'a> {
    placement: &'static str,
    vnode_hash: &'static str,
    vnodes: u32,
    keys: u32,
    before: &'a Counts,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<&'a Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remapped: Option<RemappedJson>,
    max_over_mean: MaxOverMean,
}

/// Three named shares, the first keyed by the placement's name.
#[derive(Debug)]
pub struct RemappedJson {
    placement: &'static str,
    shares: Remapped,
}

impl Serialize for RemappedJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry(self.placement, &round(self.shares.placement, 4))?;
        map.serialize_entry("modulo", &round(self.shares.modulo, 4))?;
        map.serialize_entry("ideal", &round(self.shares.ideal, 4))?;
        map.end()
    }
}

/// Load spread before and after.
#[derive(Debug, Serialize)]
pub struct MaxOverMean {
    before: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<f64>,
}

impl RingReport {
    /// The report as one JSON object: `{"before":{…},"after":{…},"remapped":{"ring":…,"modulo":…,"ideal":…}}`
    /// (remapped shares are fractions of all keys, the first keyed by the placement's name).
    pub fn json(&self) -> RingJson<'_> {
        let e = &self.experiment;
        RingJson {
            placement: e.placement.as_str(),
            vnode_hash: e.vnode_hash.as_str(),
            vnodes: e.vnodes,
            keys: e.keys,
            before: &self.before,
            after: self.after.as_ref(),
            remapped: self.remapped.map(|shares| RemappedJson {
                placement: e.placement.as_str(),
                shares,
            }),
            max_over_mean: MaxOverMean {
                before: round(self.before.max_over_mean(), 4),
                after: self.after.as_ref().map(|a| round(a.max_over_mean(), 4)),
            },
        }
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

impl fmt::Display for RingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.experiment;
        writeln!(
            f,
            "{} backends × {} vnodes ({} positions), {} keys, placement {}",
            e.backends,
            e.vnodes,
            e.vnode_hash,
            thousands(u64::from(e.keys)),
            e.placement
        )?;
        let total = f64::from(e.keys.max(1));
        let after_title = match &e.change {
            Some(Change::Remove(n)) => format!("after removing {n}"),
            Some(Change::Add(n)) => format!("after adding {n}"),
            None => String::new(),
        };
        writeln!(f)?;
        writeln!(f, "{:<12} {:>18}   {:>18}", "", "before", after_title)?;
        writeln!(
            f,
            "{:<12} {:>10} {:>7}   {:>10} {:>7}",
            "backend", "keys", "share", "keys", "share"
        )?;
        let mut names: Vec<&str> = self.before.0.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(after) = &self.after {
            for (n, _) in &after.0 {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
        }
        let cell = |c: Option<u64>| match c {
            Some(c) => format!("{:>10} {:>6.1}%", thousands(c), 100.0 * c as f64 / total),
            None => format!("{:>10} {:>7}", "—", ""),
        };
        for name in names {
            let after = self.after.as_ref().map(|a| cell(a.get(name))).unwrap_or_default();
            writeln!(f, "{name:<12} {}   {after}", cell(self.before.get(name)))?;
        }
        let after_mm = self
            .after
            .as_ref()
            .map(|a| format!("{:>18.3}", a.max_over_mean()))
            .unwrap_or_default();
        writeln!(
            f,
            "{:<12} {:>18.3}   {after_mm}",
            "max/mean",
            self.before.max_over_mean()
        )?;
        if let Some(r) = &self.remapped {
            writeln!(f)?;
            write!(
                f,
                "remapped keys: {} {:.1}% · modulo {:.1}% · ideal {:.1}%",
                e.placement,
                100.0 * r.placement,
                100.0 * r.modulo,
                100.0 * r.ideal
            )?;
        }
        Ok(())
    }
}
