//! The teaching endpoints: probe a key, what the last change moved, and
//! the followed sessions' histories. A probed key is read from the query
//! string and never logged or echoed back; sessions are named by their
//! fingerprint (or a demo client's name), never by their key.

use http::StatusCode;
use serde_json::{Value, json};

use super::{AdminBody, ApiError, json_response};
use crate::engine::Shared;
use crate::engine::follow::{FollowError, NameError, client_number};
use crate::router::Moves;
use crate::router::affinity::{AffinityMode, query_value};

/// The longest key `/api/probe` takes, in bytes once decoded.
const MAX_KEY: usize = 4096;

type Answer = Result<http::Response<AdminBody>, ApiError>;

/// `GET /api/probe?key=…[&mode=…]`: what the router would do with the key.
pub(super) fn probe(shared: &Shared, query: &str) -> Answer {
    let key = query_value(query, "key")
        .ok_or_else(|| ApiError::bad("probe needs ?key=… (percent-encoded, e.g. curl -G --data-urlencode key=…)"))?;
    let key = percent_decode(key).ok_or_else(|| ApiError::bad("the key is not well percent-encoded"))?;
    if key.len() > MAX_KEY {
        return Err(ApiError::bad(format!("the key is longer than {MAX_KEY} bytes")));
    }
    let mode = match query_value(query, "mode") {
        Some(m) => Some(m.parse::<AffinityMode>().map_err(ApiError::bad)?),
        None => None,
    };
    let probe = shared
        .router
        .probe(&key, mode, shared.clock.now())
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let mut body = serde_json::to_value(&probe).unwrap_or_default();
    body["text"] = Value::from(probe.to_string());
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /api/moves?limit=N`: the last topology change's sessions and where each went.
pub(super) fn moves(shared: &Shared, query: &str) -> Answer {
    let limit = match query_value(query, "limit").map(str::parse::<usize>) {
        None => usize::MAX,
        Some(Ok(n)) => n,
        Some(Err(_)) => return Err(ApiError::bad("limit must be a whole number")),
    };
    let Some(moves) = shared.router.last_moves() else {
        return Ok(json_response(StatusCode::OK, &json!({ "moves": null })));
    };
    Ok(json_response(StatusCode::OK, &moves_json(shared, &moves, limit)))
}

/// The moves as JSON, backends by name.
pub fn moves_json(shared: &Shared, moves: &Moves, limit: usize) -> Value {
    let topo = shared.router.topology();
    let name = |id: Option<crate::router::BackendId>| match id {
        Some(id) if id.index() < topo.backend_count() => Value::from(&*topo.backend(id).name),
        _ => Value::Null,
    };
    let sessions: Vec<Value> = moves
        .sessions
        .iter()
        .take(limit)
        .map(|s| {
            json!({
                "session": s.session.to_string(),
                "position": s.position,
                "from": name(Some(s.from)),
                "to": name(Some(s.to)),
                "moved": s.moved(),
                "ring": [name(s.ring.0), name(s.ring.1)],
                "ring_moved": s.ring_moved(),
                "modulo": [name(s.modulo.0), name(s.modulo.1)],
                "modulo_moved": s.modulo_moved(),
            })
        })
        .collect();
    json!({
        "summary": moves.summary.to_string(),
        "headline": moves.headline(),
        "remap": moves.summary,
        "moved": moves.summary.moved,
        "kept": moves.kept(),
        "modulo_would_move": moves.summary.modulo,
        "generation": moves.generation,
        "sampled": moves.sampled(),
        "sessions": sessions,
    })
}

/// `GET /api/sessions/{session}/history`.
pub(super) fn history(shared: &Shared, session: &str) -> Answer {
    let fingerprint = resolve(shared, session, true)?;
    match shared.history(fingerprint) {
        Some(h) => Ok(json_response(
            StatusCode::OK,
            &json!({ "history": h, "lived_on": h.lived_on() }),
        )),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{session} is not followed: POST /api/sessions/{session}/follow first"),
        )),
    }
}

/// `POST /api/sessions/{session}/follow`: `{session}` is a fingerprint
/// (16 hex digits, or the short 8 shown with `#`), a client address, or a
/// demo client (`client-7`).
pub(super) fn follow(shared: &Shared, session: &str) -> Answer {
    let followed = match client_number(session) {
        Some(n) => shared.follow_client(n),
        None => shared.follow(resolve(shared, session, false)?),
    };
    match followed {
        Ok(h) => Ok(json_response(StatusCode::OK, &json!({ "history": h }))),
        Err(e @ FollowError::TooMany) => Err(ApiError(StatusCode::CONFLICT, e.to_string())),
        Err(e) => Err(ApiError(StatusCode::NOT_FOUND, e.to_string())),
    }
}

/// `DELETE /api/sessions/{session}/follow`.
pub(super) fn unfollow(shared: &Shared, session: &str) -> Answer {
    let fingerprint = resolve(shared, session, true)?;
    if shared.unfollow(fingerprint) {
        Ok(json_response(
            StatusCode::OK,
            &json!({ "ok": format!("stopped following {session}") }),
        ))
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, format!("{session} is not followed")))
    }
}

/// The fingerprint a path segment names (percent-decoded; see
/// [`Shared::session_named`]).
fn resolve(shared: &Shared, segment: &str, followed: bool) -> Result<u64, ApiError> {
    let decoded = percent_decode(segment).and_then(|b| String::from_utf8(b).ok());
    let text = decoded.as_deref().unwrap_or(segment);
    shared.session_named(text, followed).map_err(|e| match e {
        NameError::Unknown(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
        NameError::Malformed(m) => ApiError::bad(m),
    })
}

/// Decodes a query value as forms and `curl --data-urlencode` encode it:
/// `%XX` escapes, and `+` for a space; `None` when an escape is malformed.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = bytes.get(i + 1..i + 3)?;
            if !pair.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding_reads_forms_and_refuses_broken_escapes() {
        // What `curl -G --data-urlencode 'key=a b+c/'` sends.
        assert_eq!(percent_decode("a+b%2bc%2F").unwrap(), b"a b+c/");
        assert_eq!(percent_decode("%e2%9c%93").unwrap(), "✓".as_bytes());
        assert!(percent_decode("%4").is_none());
        assert!(percent_decode("%zz").is_none());
        assert!(percent_decode("%+1").is_none());
    }
}
