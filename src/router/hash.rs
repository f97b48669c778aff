//! Hash functions: key positions on the ring, vnode mixing, session fingerprints.

use std::hash::{BuildHasherDefault, Hasher};

use siphasher::sip::SipHasher13;

/// A key's position on the 2^32 ring: CRC-32 (IEEE) of its bytes, as in the
/// source material, so positions can be checked by hand with any crc32 tool.
pub fn key_position(key: &[u8]) -> u32 {
    crc32fast::hash(key)
}

/// murmur3's 32-bit finalizer: a bijection that spreads every input bit over
/// the whole output. CRC is linear, so `crc32("api-1-0")`, `crc32("api-1-1")` …
/// cluster; passing them through this breaks the pattern.
pub fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// SplitMix64's output function, used to turn a counter into random-looking ids.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Session fingerprints: a keyed 64-bit SipHash-1-3 of the key, so a client
/// cannot craft keys that collide in the session table. The algorithm is
/// fixed (not std's unspecified `DefaultHasher`), so balancers that share a
/// secret compute the same fingerprints and can share a session store.
#[derive(Debug, Clone, Copy)]
pub struct Fingerprinter {
    secret: u64,
}

/// The domain a key comes from, hashed in so that `"1.2.3.4"` as a header
/// value and the address 1.2.3.4 are different sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyDomain {
    /// A text key: application cookie, header or query parameter.
    Text = 1,
    /// A client address.
    Ip = 2,
    /// A balancer cookie's session id.
    Cookie = 3,
}

impl KeyDomain {
    /// How many domains there are (one session table each).
    pub const COUNT: usize = 3;

    /// Every domain, in table order.
    pub const ALL: [KeyDomain; KeyDomain::COUNT] = [KeyDomain::Text, KeyDomain::Ip, KeyDomain::Cookie];

    /// The index of its session table.
    pub fn index(self) -> usize {
        self as usize - 1
    }

    /// Its sessions, in words: `application sessions`.
    pub fn sessions_noun(self) -> &'static str {
        match self {
            KeyDomain::Text => "application sessions",
            KeyDomain::Ip => "client-address sessions",
            KeyDomain::Cookie => "balancer-cookie sessions",
        }
    }
}

impl Fingerprinter {
    /// A fingerprinter keyed with `secret`.
    pub fn new(secret: u64) -> Self {
        Fingerprinter { secret }
    }

    /// A fingerprinter keyed by a shared secret's bytes: the same on every
    /// balancer given the same secret.
    pub fn from_shared_secret(secret: &[u8]) -> Self {
        let mut h = SipHasher13::new_with_keys(0x7269_6e67_7369_6465, 0x6669_6e67_6572_7072);
        h.write(secret);
        Fingerprinter { secret: h.finish() }
    }

    /// The fingerprint of `key` in `domain`.
    pub fn fingerprint(&self, domain: KeyDomain, key: &[u8]) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.secret, domain as u64);
        h.write(key);
        h.finish()
    }
}

/// A pass-through hasher for maps keyed by fingerprints that are already
/// uniformly distributed.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Builds [`IdentityHasher`]s.
pub type BuildIdentity = BuildHasherDefault<IdentityHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_position_is_ieee_crc32() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(key_position(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn fmix32_is_a_bijection_on_a_sample() {
        let mut seen: Vec<u32> = (0..100_000u32).map(fmix32).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 100_000);
    }

    #[test]
    fn fingerprints_separate_domains_and_secrets() {
        let a = Fingerprinter::new(1);
        let b = Fingerprinter::new(2);
        let k = b"abc";
        assert_ne!(a.fingerprint(KeyDomain::Text, k), a.fingerprint(KeyDomain::Ip, k));
        assert_ne!(a.fingerprint(KeyDomain::Text, k), b.fingerprint(KeyDomain::Text, k));
        assert_eq!(a.fingerprint(KeyDomain::Text, k), a.fingerprint(KeyDomain::Text, k));
    }
}
