//! Which synthetic client holds which session: each client files its
//! identity (address and cookie jar) here whenever it changes, so a session
//! can be told by its client (`client-7`) and a client by its session. The
//! cookies never leave this module: its answers are client numbers and
//! session names (fingerprints), read as the router reads the very headers
//! the client sends — away from the proxy's request path.

use std::sync::Mutex;

use super::traffic::ClientIdentity;
use crate::router::{Router, SessionName};

/// The synthetic clients' identities, by client number.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    cards: Mutex<Vec<Option<ClientIdentity>>>,
}

impl ClientRegistry {
    fn cards(&self) -> std::sync::MutexGuard<'_, Vec<Option<ClientIdentity>>> {
        self.cards.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Files a client's identity (called when it changes).
    pub fn record(&self, identity: &ClientIdentity) {
        let mut cards = self.cards();
        let number = identity.number;
        if cards.len() <= number {
            cards.resize_with(number + 1, || None);
        }
        match &mut cards[number] {
            Some(card) => card.clone_from(identity),
            empty => *empty = Some(identity.clone()),
        }
    }

    /// Clients filed so far (the highest number + 1).
    pub fn len(&self) -> usize {
        self.cards().len()
    }

    /// True when no client has filed its identity yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every filed identity, by number (a copy: the lock is not held after).
    fn all(&self) -> Vec<ClientIdentity> {
        self.cards().iter().flatten().cloned().collect()
    }

    /// The session client `number`'s next request routes by, under the
    /// affinity mode in force; `None` before it has one.
    pub fn session_of(&self, number: usize, router: &Router) -> Option<SessionName> {
        let card = self.cards().get(number)?.clone()?;
        card.session(router)
    }

    /// The first client whose next request routes by the session `fingerprint`.
    pub fn client_of(&self, fingerprint: u64, router: &Router) -> Option<usize> {
        self.all()
            .iter()
            .find(|c| c.session(router).is_some_and(|s| s.fingerprint == fingerprint))
            .map(|c| c.number)
    }

    /// The first `max` clients with the fingerprint of the session each
    /// routes by now, in number order (those without one left out).
    pub fn sessions(&self, router: &Router, max: usize) -> Vec<(usize, u64)> {
        self.all()
            .iter()
            .take_while(|c| c.number < max)
            .filter_map(|c| Some((c.number, c.session(router)?.fingerprint)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use super::*;
    use crate::router::affinity::AffinityMode;
    use crate::router::{NullSink, RouterConfig, SessionKey};

    fn identity(number: usize, address: &str, session: Option<&str>) -> ClientIdentity {
        let mut jar = BTreeMap::new();
        if let Some(id) = session {
            jar.insert("session_id".to_owned(), id.to_owned());
        }
        ClientIdentity {
            number,
            address: address.parse().unwrap(),
            jar,
        }
    }

    #[test]
    fn clients_and_sessions_are_found_both_ways_in_each_mode() {
        let router = Router::new(RouterConfig::default(), Arc::new(NullSink));
        let registry = ClientRegistry::default();
        registry.record(&identity(3, "198.51.100.4", Some("s-7")));
        registry.record(&identity(1, "198.51.100.2", None));
        assert_eq!(registry.len(), 4);
        assert_eq!(registry.session_of(1, &router), None, "no balancer cookie yet");
        router.set_affinity(AffinityMode::AppCookie);
        let s = registry.session_of(3, &router).unwrap();
        assert_eq!(Some(s.fingerprint), router.fingerprint(SessionKey::Text(b"s-7")));
        assert_eq!(registry.client_of(s.fingerprint, &router), Some(3));
        assert_eq!(registry.sessions(&router, 10), vec![(3, s.fingerprint)]);
        assert!(registry.sessions(&router, 2).is_empty(), "only the first two clients");
        router.set_affinity(AffinityMode::SourceIp);
        let ip = registry.session_of(1, &router).unwrap();
        // The proxy believes X-Forwarded-For only from trusted peers; loopback is not one here.
        assert_eq!(ip.address, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(registry.session_of(9, &router), None);
    }
}
