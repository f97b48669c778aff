//! Which synthetic client holds which session: each client files its cookie
//! jar and address here whenever they change, so a session can be told by
//! its client (`client-7`) and a client by its session. The cookies never
//! leave this module: its answers are client numbers and session names
//! (fingerprints), read as the router reads a request.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use http::{HeaderMap, HeaderValue, header};

use crate::router::affinity::RequestView;
use crate::router::{Router, SessionKey, SessionName};

/// One client's cookies and address, as it last sent them.
#[derive(Debug, Clone, Default)]
struct Card {
    address: Option<IpAddr>,
    jar: BTreeMap<String, String>,
}

/// The synthetic clients' cookie jars, by client number.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    cards: Mutex<Vec<Card>>,
}

impl ClientRegistry {
    /// Files client `number`'s address and jar (called when they change).
    pub fn record(&self, number: usize, address: IpAddr, jar: &BTreeMap<String, String>) {
        let mut cards = self.cards.lock().unwrap_or_else(|e| e.into_inner());
        if cards.len() <= number {
            cards.resize_with(number + 1, Card::default);
        }
        cards[number] = Card {
            address: Some(address),
            jar: jar.clone(),
        };
    }

    /// Clients filed so far.
    pub fn len(&self) -> usize {
        self.cards.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no client has filed its jar yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session client `number`'s next request routes by, under the
    /// affinity mode in force; `None` before it has one.
    pub fn session_of(&self, number: usize, router: &Router) -> Option<SessionName> {
        let card = self
            .cards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(number)?
            .clone();
        session_of_card(&card, router)
    }

    /// The client whose next request routes by the session `fingerprint`.
    pub fn client_of(&self, fingerprint: u64, router: &Router) -> Option<usize> {
        let cards = self.cards.lock().unwrap_or_else(|e| e.into_inner()).clone();
        cards
            .iter()
            .position(|c| session_of_card(c, router).is_some_and(|s| s.fingerprint == fingerprint))
    }
}

/// Reads a client's request as the proxy would: its cookies, the session
/// header and parameter the clients send, its address in `X-Forwarded-For`
/// from a loopback peer.
fn session_of_card(card: &Card, router: &Router) -> Option<SessionName> {
    let address = card.address?;
    let mut headers = HeaderMap::new();
    let cookies: Vec<String> = card.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !cookies.is_empty() {
        headers.insert(header::COOKIE, HeaderValue::from_str(&cookies.join("; ")).ok()?);
    }
    let id = card.jar.get("session_id");
    if let Some(id) = id {
        headers.insert("x-session-id", HeaderValue::from_str(id).ok()?);
    }
    headers.insert("x-forwarded-for", HeaderValue::from_str(&address.to_string()).ok()?);
    let query = id.map(|id| format!("session={id}"));
    let view = RequestView {
        headers: &headers,
        query: query.as_deref(),
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let key = router.affinity().extract(&view, &router.topology()).key;
    let fingerprint = router.fingerprint(key)?;
    Some(SessionName {
        fingerprint,
        address: match key {
            SessionKey::Source(ip) => Some(ip),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::router::affinity::AffinityMode;
    use crate::router::{NullSink, RouterConfig};

    #[test]
    fn clients_and_sessions_are_found_both_ways_in_each_mode() {
        let router = Router::new(RouterConfig::default(), Arc::new(NullSink));
        let registry = ClientRegistry::default();
        let mut jar = BTreeMap::new();
        jar.insert("session_id".to_owned(), "s-7".to_owned());
        registry.record(3, "198.51.100.4".parse().unwrap(), &jar);
        registry.record(1, "198.51.100.2".parse().unwrap(), &BTreeMap::new());
        assert_eq!(registry.len(), 4);
        assert_eq!(registry.session_of(1, &router), None, "no balancer cookie yet");
        router.set_affinity(AffinityMode::AppCookie);
        let s = registry.session_of(3, &router).unwrap();
        assert_eq!(Some(s.fingerprint), router.fingerprint(SessionKey::Text(b"s-7")));
        assert_eq!(registry.client_of(s.fingerprint, &router), Some(3));
        router.set_affinity(AffinityMode::SourceIp);
        let ip = registry.session_of(1, &router).unwrap();
        // The proxy believes X-Forwarded-For only from trusted peers; loopback is not one here.
        assert_eq!(ip.address, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(registry.session_of(9, &router), None);
    }
}
