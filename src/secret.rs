//! The cookie secret that survives a restart: when none is configured,
//! ringside makes one once and keeps it in the user's state directory
//! (`$XDG_STATE_HOME/ringside/cookie-secret`, or
//! `~/.local/state/ringside/cookie-secret`), readable by the user alone, so
//! restarting the balancer — a real failover experiment — moves no session.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;

use crate::router::lb_cookie::MIN_SECRET_LEN;

/// The environment variable that may hold the cookie secret.
pub const SECRET_ENV: &str = "RINGSIDE_COOKIE_SECRET";

/// A secret file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No state directory is known.
    #[error(
        "no place to keep the cookie secret: set XDG_STATE_HOME or HOME, set {SECRET_ENV}, or run with --ephemeral-secret"
    )]
    NoStateDir,
    /// The file could not be read or written.
    #[error("cookie secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds too little.
    #[error(
        "cookie secret file {path} holds {len} bytes; it needs at least {MIN_SECRET_LEN} (delete it to make a new one)"
    )]
    Short {
        /// The file.
        path: PathBuf,
        /// What it holds.
        len: usize,
    },
}

/// Where the secret is kept.
pub fn secret_path() -> Result<PathBuf, SecretError> {
    let non_empty = |v: std::ffi::OsString| (!v.is_empty()).then_some(PathBuf::from(v));
    let base = std::env::var_os("XDG_STATE_HOME")
        .and_then(non_empty)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(non_empty)
                .map(|h| h.join(".local/state"))
        })
        .ok_or(SecretError::NoStateDir)?;
    Ok(base.join("ringside").join("cookie-secret"))
}

/// The kept secret and its path: read, or made once (64 hex digits from
/// the OS generator, in a file of mode 0600 in a directory of mode 0700).
pub fn kept_secret() -> Result<(String, PathBuf), SecretError> {
    let path = secret_path()?;
    Ok((load_or_create(&path)?, path))
}

fn load_or_create(path: &Path) -> Result<String, SecretError> {
    let io = |source| SecretError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return check(path, text),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io)?;
    }
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes()).map_err(io)?;
            file.write_all(b"\n").map_err(io)?;
            Ok(secret)
        }
        // Another ringside made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            check(path, std::fs::read_to_string(path).map_err(io)?)
        }
        Err(e) => Err(io(e)),
    }
}

fn check(path: &Path, text: String) -> Result<String, SecretError> {
    let secret = text.trim().to_owned();
    if secret.len() < MIN_SECRET_LEN {
        return Err(SecretError::Short {
            path: path.to_owned(),
            len: secret.len(),
        });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_read_back_private() {
        let dir = std::env::temp_dir().join(format!("ringside-secret-{}", fastrand::u64(..)));
        let path = dir.join("ringside").join("cookie-secret");
        let first = load_or_create(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create(&path).unwrap(), first, "the same secret the second time");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(load_or_create(&path), Err(SecretError::Short { len: 5, .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
