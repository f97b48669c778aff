//! Small helpers the unit tests share.

use http::{HeaderMap, HeaderValue};

/// A header map from `(name, value)` pairs, repeats kept in order.
pub fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}
