//! The simulator's messages: what comes in on stdin and goes out on stdout,
//! one JSON object per line, in the envelope of the source task:
//! `{"src":…,"dest":…,"body":{"type":…,…}}`.

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::router::RemapSummary;

/// Error codes, as in Maelstrom-style protocols.
pub mod code {
    /// The message type is not one the simulator knows.
    pub const NOT_SUPPORTED: u32 = 10;
    /// Not JSON, not an object, or a field missing or of the wrong type.
    pub const MALFORMED: u32 = 12;
    /// No backend has that name.
    pub const UNKNOWN_BACKEND: u32 = 20;
}

/// An outgoing line: the envelope around a body.
#[derive(Debug, Serialize)]
pub struct Reply<'a, B: Serialize> {
    /// Always `l7_proxy`.
    pub src: &'static str,
    /// The requester (`client` when it could not be read).
    pub dest: &'a str,
    /// The answer.
    pub body: B,
}

/// The answer to an `http_request`.
#[derive(Debug, Serialize)]
pub struct HttpResponse {
    /// Always `http_response`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request's `msg_id`.
    pub in_reply_to: u64,
    /// 200, or 503 when no backend is available.
    pub status: u16,
    /// The backend that served it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// `session_id=<id>; backend=<name>` when a session was created or moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_cookie: Option<String>,
}

/// An error answer.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The message's `msg_id`, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<u64>,
    /// See [`code`].
    pub code: u32,
    /// What was wrong.
    pub text: String,
}

/// The answer to a backend state change (`backend_down`, `drain`, …).
#[derive(Debug, Serialize)]
pub struct StateOk {
    /// `<type>_ok`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The message's `msg_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<u64>,
    /// The backend.
    pub backend: String,
    /// Its state now.
    pub state: &'static str,
    /// What the change did to the sessions, when it affected any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remap: Option<RemapJson>,
    /// The same in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// A remap summary's figures.
#[derive(Debug, Serialize)]
pub struct RemapJson {
    /// Live sessions at the change.
    pub sessions: u64,
    /// Sessions moved.
    pub moved: u64,
    /// Sessions modulo hashing would have moved.
    pub modulo: u64,
    /// Sessions a stateless ring would have moved.
    pub ring: u64,
    /// The ideal share.
    pub ideal: f64,
}

impl From<&RemapSummary> for RemapJson {
    fn from(s: &RemapSummary) -> Self {
        RemapJson {
            sessions: s.sessions,
            moved: s.moved,
            modulo: s.modulo,
            ring: s.ring,
            ideal: (s.ideal * 10_000.0).round() / 10_000.0,
        }
    }
}

/// The answer to `advance_time`.
#[derive(Debug, Serialize)]
pub struct AdvanceOk {
    /// `advance_time_ok`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The message's `msg_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<u64>,
    /// Simulated seconds since start.
    pub now_secs: u64,
    /// Sessions expired by this step's sweep.
    pub expired: u64,
}

/// The answer to `stats`.
#[derive(Debug, Serialize)]
pub struct StatsOk {
    /// `stats_ok`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The message's `msg_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<u64>,
    /// Live sessions.
    pub sessions: u64,
    /// Live sessions by backend, in backend order.
    pub sessions_per_backend: Ordered<u64>,
    /// Each backend's state.
    pub backends: Ordered<&'static str>,
    /// Sessions created.
    pub created: u64,
    /// Sessions reassigned.
    pub reassigned: u64,
    /// Sessions expired.
    pub expired: u64,
}

/// A JSON object whose keys keep their order.
#[derive(Debug, Default)]
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}
