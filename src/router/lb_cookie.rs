//! The balancer's own cookie (`SERVERID` by default): a session id and an
//! opaque backend tag, protected so that clients can neither read backend
//! names nor choose their backend.
//!
//! | protection | value | a client can… |
//! |---|---|---|
//! | `private` (default) | AES-256-GCM of `"<session>.<tag>"` (the `cookie` crate's private jar) | nothing: not read it, not forge it |
//! | `signed` | HMAC-SHA256 + `"<session>.<tag>"` | read the opaque tag, not forge it |
//! | `hashed` | `"<session>.<tag>"` (the seed's option 1) | copy another backend's tag |
//! | `plain` | `"<session>.<name>"` (teaching only) | read and choose the backend |
//!
//! The `private` and `signed` values are byte for byte those of the `cookie`
//! crate's private and signed jars, keyed by [`cookie::Key`]; the cipher and
//! the MAC are set up once here instead of on every request, and a cookie is
//! verified without touching the heap.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{AeadInPlace, OsRng};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use cookie::Key;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::backend::{Backend, backend_tag};

/// The balancer cookie's name unless configured otherwise.
pub const DEFAULT_COOKIE_NAME: &str = "SERVERID";

/// The least bytes a configured cookie secret may have.
pub const MIN_SECRET_LEN: usize = 32;

/// How the cookie value is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protection {
    /// Encrypted and authenticated.
    #[default]
    Private,
    /// Authenticated; the tag is opaque but visible.
    Signed,
    /// A hash of the backend name, unauthenticated.
    Hashed,
    /// The backend name in clear: for teaching only.
    Plain,
}

impl Protection {
    /// The name used in config files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Protection::Private => "private",
            Protection::Signed => "signed",
            Protection::Hashed => "hashed",
            Protection::Plain => "plain",
        }
    }
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "private" => Ok(Protection::Private),
            "signed" => Ok(Protection::Signed),
            "hashed" => Ok(Protection::Hashed),
            "plain" => Ok(Protection::Plain),
            _ => Err(format!(
                "unknown cookie protection {s:?}: expected private, signed, hashed or plain"
            )),
        }
    }
}

/// A cookie secret that is too short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cookie secret has {0} bytes; it needs at least {MIN_SECRET_LEN} (e.g. `openssl rand -hex 32`)")]
pub struct ShortSecret(pub usize);

/// What a valid balancer cookie says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieClaim {
    /// The session id.
    pub session: u64,
    /// The opaque tag of the backend it names.
    pub tag: u32,
}

/// AES-GCM's nonce, which leads a `private` value.
const NONCE_LEN: usize = 12;
/// AES-GCM's tag, which ends a `private` value.
const TAG_LEN: usize = 16;
/// The base64 HMAC-SHA256 that leads a `signed` value.
const DIGEST_B64_LEN: usize = 44;
/// `"<16 hex>.<8 hex>"`, what `private` and `signed` protect.
const CLAIM_LEN: usize = 25;
/// The longest value [`CookieCodec::decode`] reads.
const MAX_VALUE_LEN: usize = 256;

/// Encodes and verifies balancer cookies.
pub struct CookieCodec {
    name: String,
    protection: Protection,
    /// The `private` cipher, keyed by the key's encryption half.
    cipher: Aes256Gcm,
    /// The `signed` MAC, keyed by the key's signing half; cloned per use.
    mac: Hmac<Sha256>,
    /// True when the key was generated at start (cookies die with the process).
    ephemeral: bool,
}

impl fmt::Debug for CookieCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieCodec")
            .field("name", &self.name)
            .field("protection", &self.protection)
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

impl CookieCodec {
    /// A codec keyed by `secret` (at least 32 bytes), or by a random key when
    /// `None`: then [`CookieCodec::is_ephemeral`] is true and the caller
    /// should warn that cookies will not survive a restart.
    pub fn new(name: &str, protection: Protection, secret: Option<&[u8]>) -> Result<Self, ShortSecret> {
        let (key, ephemeral) = match secret {
            Some(s) if s.len() < MIN_SECRET_LEN => return Err(ShortSecret(s.len())),
            Some(s) => (Key::derive_from(s), false),
            None => (Key::generate(), true),
        };
        Ok(CookieCodec {
            name: name.to_owned(),
            protection,
            cipher: Aes256Gcm::new_from_slice(key.encryption()).expect("cookie::Key has a 32-byte encryption half"),
            mac: <Hmac<Sha256> as Mac>::new_from_slice(key.signing()).expect("HMAC takes a key of any length"),
            ephemeral,
        })
    }

    /// The cookie name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The protection in force.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// True when the key is random for this process.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The cookie value for `session` on `backend`.
    pub fn encode(&self, session: u64, backend: &Backend) -> String {
        let mut value = Vec::with_capacity(MAX_VALUE_LEN);
        self.encode_into(session, backend, &mut value);
        String::from_utf8(value).expect("cookie values are ASCII")
    }

    /// Appends [`encode`](Self::encode)'s value to `out`, with no
    /// formatting machinery and no allocation beyond `out`'s.
    pub fn encode_into(&self, session: u64, backend: &Backend, out: &mut Vec<u8>) {
        let mut claim = [0u8; CLAIM_LEN];
        hex_into(&mut claim[..16], session);
        claim[16] = b'.';
        if self.protection == Protection::Plain {
            out.extend_from_slice(&claim[..17]);
            out.extend_from_slice(backend.name.as_bytes());
            return;
        }
        hex_into(&mut claim[17..], u64::from(backend.tag));
        match self.protection {
            Protection::Private => self.seal_into(&claim, out),
            Protection::Signed => {
                let mut mac = self.mac.clone();
                mac.update(&claim);
                base64_into(&mac.finalize().into_bytes(), out);
                out.extend_from_slice(&claim);
            }
            Protection::Hashed | Protection::Plain => out.extend_from_slice(&claim),
        }
    }

    /// `base64(nonce ‖ AES-256-GCM(claim) ‖ tag)`, the cookie name as
    /// associated data, a fresh random nonce each time.
    fn seal_into(&self, claim: &[u8; CLAIM_LEN], out: &mut Vec<u8>) {
        let mut sealed = [0u8; NONCE_LEN + CLAIM_LEN + TAG_LEN];
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (text, tag) = rest.split_at_mut(CLAIM_LEN);
        fresh_nonce(nonce);
        text.copy_from_slice(claim);
        let sealed_tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(nonce), self.name.as_bytes(), text)
            .expect("AES-GCM refuses only messages over 64 GiB");
        tag.copy_from_slice(&sealed_tag);
        base64_into(&sealed, out);
    }

    /// Verifies and reads a cookie value; `None` for anything tampered,
    /// truncated, made with another key, or not of this format.
    pub fn decode(&self, value: &str) -> Option<CookieClaim> {
        if value.is_empty() || value.len() > MAX_VALUE_LEN {
            return None;
        }
        match self.protection {
            Protection::Private => {
                let mut buf = [0u8; MAX_VALUE_LEN / 4 * 3];
                let len = BASE64_STANDARD.decode_slice(value, &mut buf).ok()?;
                if len < NONCE_LEN + TAG_LEN {
                    return None;
                }
                let (nonce, rest) = buf[..len].split_at_mut(NONCE_LEN);
                let (text, tag) = rest.split_at_mut(len - NONCE_LEN - TAG_LEN);
                self.cipher
                    .decrypt_in_place_detached(
                        Nonce::from_slice(nonce),
                        self.name.as_bytes(),
                        text,
                        Tag::from_slice(tag),
                    )
                    .ok()?;
                parse_plaintext(std::str::from_utf8(text).ok()?, false)
            }
            Protection::Signed => {
                if !value.is_char_boundary(DIGEST_B64_LEN) {
                    return None;
                }
                let (digest_b64, claim) = value.split_at(DIGEST_B64_LEN);
                let mut digest = [0u8; DIGEST_B64_LEN / 4 * 3];
                let len = BASE64_STANDARD.decode_slice(digest_b64, &mut digest).ok()?;
                let mut mac = self.mac.clone();
                mac.update(claim.as_bytes());
                mac.verify_slice(&digest[..len]).ok()?;
                parse_plaintext(claim, false)
            }
            Protection::Hashed => parse_plaintext(value, false),
            Protection::Plain => parse_plaintext(value, true),
        }
    }
}

/// The last balancer-cookie value one client connection presented that
/// verified, and its claim: a keep-alive connection's next requests carry
/// the same bytes and are not decrypted again. Compared byte for byte, so
/// no other value is ever taken for it; a connection's requests come one at
/// a time, so the lock is never contended.
#[derive(Debug, Default)]
pub struct VerifiedCookie(Mutex<Option<(Vec<u8>, CookieClaim)>>);

impl CookieCodec {
    /// [`decode`](Self::decode) of raw bytes, remembering in `memo`, when
    /// there is one, the last value that verified.
    pub fn decode_remembered(&self, value: &[u8], memo: Option<&VerifiedCookie>) -> Option<CookieClaim> {
        let decode = || std::str::from_utf8(value).ok().and_then(|v| self.decode(v));
        let Some(Ok(mut last)) = memo.map(|m| m.0.try_lock()) else {
            return decode();
        };
        if let Some((bytes, claim)) = &*last
            && bytes.as_slice() == value
        {
            return Some(*claim);
        }
        let claim = decode()?;
        let (bytes, kept) = last.get_or_insert_with(|| (Vec::with_capacity(value.len()), claim));
        bytes.clear();
        bytes.extend_from_slice(value);
        *kept = claim;
        Some(claim)
    }
}

/// `n`'s low `out.len() * 4` bits as lowercase hex digits, most significant first.
fn hex_into(out: &mut [u8], n: u64) {
    let len = out.len();
    for (i, d) in out.iter_mut().enumerate() {
        *d = b"0123456789abcdef"[((n >> (4 * (len - 1 - i))) & 0xf) as usize];
    }
}

/// Appends `bytes` in standard, padded base64.
fn base64_into(bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let written = BASE64_STANDARD
        .encode_slice(bytes, &mut out[start..])
        .expect("room for the whole encoding was made");
    out.truncate(start + written);
}

/// Nonces drawn from the OS at a time, per thread: one `getrandom` call
/// serves this many new cookies.
const NONCES_PER_DRAW: usize = 64;

thread_local! {
    static NONCES: std::cell::RefCell<([u8; NONCE_LEN * NONCES_PER_DRAW], usize)> =
        const { std::cell::RefCell::new(([0; NONCE_LEN * NONCES_PER_DRAW], NONCES_PER_DRAW)) };
}

/// Fills `nonce` with fresh random bytes from the OS generator, drawn in
/// batches so that sealing a cookie costs no system call most of the time.
fn fresh_nonce(nonce: &mut [u8]) {
    NONCES.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (pool, used) = &mut *guard;
        if *used == NONCES_PER_DRAW {
            OsRng.fill_bytes(pool);
            *used = 0;
        }
        let at = *used * NONCE_LEN;
        nonce.copy_from_slice(&pool[at..at + NONCE_LEN]);
        // A nonce is used once: wipe it from the pool.
        pool[at..at + NONCE_LEN].fill(0);
        *used += 1;
    });
}

/// Parses `"<16 hex>.<8 hex>"`, or `"<16 hex>.<name>"` when `named`.
fn parse_plaintext(s: &str, named: bool) -> Option<CookieClaim> {
    let (session, backend) = s.split_once('.')?;
    if session.len() != 16 {
        return None;
    }
    let session = u64::from_str_radix(session, 16).ok()?;
    let tag = if named {
        super::backend::validate_name(backend).ok()?;
        backend_tag(backend)
    } else {
        if backend.len() != 8 {
            return None;
        }
        u32::from_str_radix(backend, 16).ok()?
    };
    Some(CookieClaim { session, tag })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::BackendId;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn backend(name: &str) -> Backend {
        Backend::new(BackendId(0), name, "127.0.0.1:1".parse().unwrap())
    }

    fn all() -> [Protection; 4] {
        [
            Protection::Private,
            Protection::Signed,
            Protection::Hashed,
            Protection::Plain,
        ]
    }

    #[test]
    fn round_trips_and_hides_the_name_unless_plain() {
        let b = backend("api-2");
        for p in all() {
            let codec = CookieCodec::new("SERVERID", p, Some(SECRET)).unwrap();
            let value = codec.encode(0xdead_beef_0000_0001, &b);
            assert_eq!(
                codec.decode(&value),
                Some(CookieClaim {
                    session: 0xdead_beef_0000_0001,
                    tag: b.tag
                }),
                "{p}: {value}"
            );
            assert_eq!(value.contains("api-2"), p == Protection::Plain, "{p}: {value}");
            // Cookie-safe characters only.
            assert!(
                value.bytes().all(|c| c.is_ascii_graphic() && c != b';' && c != b','),
                "{value}"
            );
        }
    }

    #[test]
    fn rejects_tampered_truncated_and_garbage_values() {
        let b = backend("api-1");
        for p in [Protection::Private, Protection::Signed] {
            let codec = CookieCodec::new("SERVERID", p, Some(SECRET)).unwrap();
            let value = codec.encode(42, &b);
            let mut tampered = value.clone().into_bytes();
            let mid = tampered.len() / 2;
            tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            for bad in [
                tampered.as_str(),
                &value[..value.len() - 1],
                &value[..10],
                "",
                "garbage",
                "0000000000000001.00000000",
                &"A".repeat(300),
            ] {
                assert_eq!(codec.decode(bad), None, "{p} accepted {bad:?}");
            }
        }
        let hashed = CookieCodec::new("SERVERID", Protection::Hashed, None).unwrap();
        for bad in [
            "",
            "x.y",
            "000000000000002a.zz",
            "2a.0000abcd",
            "000000000000002a0000abcd",
        ] {
            assert_eq!(hashed.decode(bad), None, "{bad:?}");
        }
        let plain = CookieCodec::new("SERVERID", Protection::Plain, None).unwrap();
        assert_eq!(plain.decode("000000000000002a.bad name"), None);
    }

    #[test]
    fn the_claim_is_the_session_and_tag_in_fixed_width_hex() {
        let b = backend("api-1");
        let hashed = CookieCodec::new("SERVERID", Protection::Hashed, None).unwrap();
        let plain = CookieCodec::new("SERVERID", Protection::Plain, None).unwrap();
        for session in [0, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(hashed.encode(session, &b), format!("{session:016x}.{:08x}", b.tag));
            assert_eq!(plain.encode(session, &b), format!("{session:016x}.api-1"));
        }
    }

    #[test]
    fn a_remembered_cookie_answers_only_for_its_own_bytes() {
        let (a, b) = (backend("api-1"), backend("api-2"));
        for p in [Protection::Private, Protection::Signed] {
            let codec = CookieCodec::new("SERVERID", p, Some(SECRET)).unwrap();
            let memo = VerifiedCookie::default();
            let first = codec.encode(1, &a);
            let claim = |session, backend: &Backend| {
                Some(CookieClaim {
                    session,
                    tag: backend.tag,
                })
            };
            assert_eq!(codec.decode_remembered(first.as_bytes(), Some(&memo)), claim(1, &a));
            assert_eq!(
                codec.decode_remembered(first.as_bytes(), Some(&memo)),
                claim(1, &a),
                "{p}: again"
            );
            let mut tampered = first.clone().into_bytes();
            tampered[20] ^= 1;
            for bad in [&tampered[..], &first.as_bytes()[..first.len() - 1], b"", b"\xff\xfe"] {
                assert_eq!(codec.decode_remembered(bad, Some(&memo)), None, "{p} accepted {bad:?}");
            }
            // A forged value leaves the remembered one in place; a new valid one replaces it.
            assert_eq!(codec.decode_remembered(first.as_bytes(), Some(&memo)), claim(1, &a));
            let second = codec.encode(2, &b);
            assert_eq!(codec.decode_remembered(second.as_bytes(), Some(&memo)), claim(2, &b));
            assert_eq!(codec.decode_remembered(first.as_bytes(), Some(&memo)), claim(1, &a));
        }
    }

    #[test]
    fn values_are_those_of_the_cookie_crates_jars() {
        use cookie::{Cookie, CookieJar, Key};
        let b = backend("api-3");
        let key = Key::derive_from(SECRET);
        for p in [Protection::Private, Protection::Signed] {
            let codec = CookieCodec::new("SERVERID", p, Some(SECRET)).unwrap();
            let claim = format!("{:016x}.{:08x}", 99, b.tag);
            let mut jar = CookieJar::new();
            let cookie = Cookie::new("SERVERID", claim.clone());
            if p == Protection::Private {
                jar.private_mut(&key).add(cookie);
            } else {
                jar.signed_mut(&key).add(cookie);
            }
            let theirs = jar.get("SERVERID").unwrap().value().to_owned();
            assert_eq!(
                codec.decode(&theirs),
                Some(CookieClaim {
                    session: 99,
                    tag: b.tag
                }),
                "{p}"
            );
            let ours = Cookie::new("SERVERID", codec.encode(99, &b));
            let read = if p == Protection::Private {
                jar.private(&key).decrypt(ours)
            } else {
                jar.signed(&key).verify(ours)
            };
            assert_eq!(read.unwrap().value(), claim, "{p}");
        }
    }

    #[test]
    fn rejects_cookies_made_with_another_key_or_name() {
        let b = backend("api-1");
        for p in [Protection::Private, Protection::Signed] {
            let a = CookieCodec::new("SERVERID", p, Some(SECRET)).unwrap();
            let other = CookieCodec::new("SERVERID", p, Some(b"another secret that is long enough!!")).unwrap();
            let renamed = CookieCodec::new("LB", p, Some(SECRET)).unwrap();
            let value = a.encode(7, &b);
            assert_eq!(other.decode(&value), None, "{p}: replayed under another key");
            if p == Protection::Private {
                // The private jar binds the cookie name into the ciphertext;
                // the signed jar authenticates the value alone.
                assert_eq!(renamed.decode(&value), None, "{p}: replayed under another name");
            }
        }
    }

    #[test]
    fn short_secrets_are_refused_and_no_secret_is_ephemeral() {
        assert_eq!(
            CookieCodec::new("S", Protection::Private, Some(b"short")).unwrap_err(),
            ShortSecret(5)
        );
        assert!(CookieCodec::new("S", Protection::Private, None).unwrap().is_ephemeral());
        assert!(
            !CookieCodec::new("S", Protection::Private, Some(SECRET))
                .unwrap()
                .is_ephemeral()
        );
    }
}
