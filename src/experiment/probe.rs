//! `ringside ring --probe KEY`: one key's clockwise walk on the ring the
//! experiment builds — its backends, vnodes, placement and keys placed (so
//! bounded loads are real), after the change when one is given, with the
//! backends named by `--down` failing their health checks.

use std::fmt;

use serde::Serialize;

use super::ring::{Change, MAX_KEYS, RingExperiment};
use crate::router::affinity::AffinityMode;
use crate::router::probe::{Probe, ProbeError};
use crate::router::{BackendSpec, BackendState, RouterError, Timestamp};
use crate::text::thousands;

/// Why a key could not be probed.
#[derive(Debug, thiserror::Error)]
pub enum RingProbeError {
    /// The ring could not be built or changed.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// The key does not read in that mode.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// Balancer cookies are sealed with a running balancer's secret.
    #[error(
        "a balancer cookie is sealed with the running balancer's secret: probe it with GET /api/probe?key=…&mode=lb-cookie"
    )]
    Cookie,
}

/// A probed key on the experiment's ring.
#[derive(Debug, Clone, Serialize)]
pub struct RingProbe {
    /// The key, as given.
    pub key: String,
    /// Backends before the change.
    pub backends: u32,
    /// Virtual nodes per backend.
    pub vnodes: u32,
    /// Keys placed before probing.
    pub keys: u32,
    /// Backends failing their health checks.
    pub down: Vec<String>,
    /// What the router would do with the key.
    pub probe: Probe,
}

impl RingExperiment {
    /// Builds the experiment's ring, places its keys, makes its change,
    /// marks `down` as failing, and probes `key` as `mode` reads it.
    pub fn probe(&self, key: &str, mode: AffinityMode, down: &[String]) -> Result<RingProbe, RingProbeError> {
        if mode == AffinityMode::LbCookie {
            return Err(RingProbeError::Cookie);
        }
        if self.keys > MAX_KEYS {
            return Err(RouterError::BadSpec(format!("{} keys: at most {MAX_KEYS} per run", self.keys)).into());
        }
        let (router, _) = self.placed(&self.names_before(), &self.keys())?;
        match &self.change {
            Some(Change::Remove(name)) => {
                router.remove_backend(name)?;
            }
            Some(Change::Add(name)) => {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
                router.add_backend(&BackendSpec::new(name, addr, 1)?)?;
            }
            None => {}
        }
        for name in down {
            router.set_state(name, BackendState::Down)?;
        }
        router.set_affinity(mode);
        let probe = router.probe(key.as_bytes(), Some(mode), Timestamp(0))?;
        Ok(RingProbe {
            key: key.to_owned(),
            backends: self.backends,
            vnodes: self.vnodes,
            keys: self.keys,
            down: down.to_vec(),
            probe,
        })
    }
}

impl fmt::Display for RingProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {:?} on {} backends × {} vnodes, {} keys placed",
            self.key,
            self.backends,
            self.vnodes,
            thousands(u64::from(self.keys))
        )?;
        if !self.down.is_empty() {
            write!(f, "; down: {}", self.down.join(", "))?;
        }
        writeln!(f)?;
        write!(f, "{}", self.probe)
    }
}
