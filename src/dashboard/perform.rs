//! What the UI loop does for the dashboard's [`Request`]s: probe a key
//! with the router, follow a session with the engine's recorder, save the
//! screen, drive the lesson. Each is a read or a small call made from the
//! UI task, never on a request's path.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ratatui::buffer::Buffer;

use super::app::{App, FlashKind, Request};
use super::export;
use super::follow::Followed;
use super::lesson::LessonControl;
use crate::engine::Shared;
use crate::experiment::scenario::Lesson;
use crate::router::affinity::AffinityMode;
use crate::router::probe::{Probe, ProbeError};

/// Carries out `request`; returns true when the next frame is to be saved.
pub fn perform(request: Request, shared: &Shared, lesson: Option<&Lesson>, app: &mut App) -> bool {
    match request {
        Request::Probe(key) => {
            let result = probe(shared, &key);
            app.on_probe(key, result);
        }
        Request::Follow(text) => follow(shared, app, &text),
        Request::Unfollow(fingerprint) => {
            shared.unfollow(fingerprint);
        }
        Request::Capture => return true,
        Request::Lesson(control) => match lesson {
            Some(l) => match control {
                LessonControl::Pause => l.pause(),
                LessonControl::Resume => l.resume(),
                LessonControl::Step => l.step(),
                LessonControl::Replay => l.replay(),
            },
            None => app.flash(FlashKind::Info, "no lesson runs"),
        },
    }
    false
}

/// Probes `key` as the affinity mode in force reads it; a key that mode
/// cannot read (not a balancer cookie, not an address) is read as an
/// application session id, or as an address when it is one.
pub fn probe(shared: &Shared, key: &str) -> Result<Probe, String> {
    let now = shared.clock.now();
    match shared.router.probe(key.as_bytes(), None, now) {
        Err(why @ (ProbeError::NotOurCookie | ProbeError::NotAnAddress | ProbeError::NoKey)) => {
            let mode = if key.trim().parse::<IpAddr>().is_ok() {
                AffinityMode::SourceIp
            } else {
                AffinityMode::AppCookie
            };
            let mut p = shared
                .router
                .probe(key.as_bytes(), Some(mode), now)
                .map_err(|e| e.to_string())?;
            let in_force = shared.router.affinity().mode();
            let short = match why {
                ProbeError::NotOurCookie => "not a cookie this balancer sealed",
                ProbeError::NotAnAddress => "not an address",
                _ => "affinity none reads no key",
            };
            p.notes
                .insert(0, format!("{short} ({in_force} is in force), so read as {mode}"));
            Ok(p)
        }
        other => other.map_err(|e| e.to_string()),
    }
}

fn follow(shared: &Shared, app: &mut App, text: &str) {
    let history = match shared.follow_named(text) {
        Ok(h) => h,
        Err(e) => {
            app.flash(FlashKind::Refused, format!("follow {text}: refused — {e}"));
            return;
        }
    };
    let Ok(fingerprint) = u64::from_str_radix(&history.fingerprint, 16) else {
        return;
    };
    if let Some(old) = app.following()
        && old != fingerprint
    {
        shared.unfollow(old);
    }
    let followed = followed_now(shared, fingerprint).unwrap_or(Followed {
        fingerprint,
        history,
        position: None,
    });
    let on = followed.history.backend.clone().unwrap_or_else(|| "no backend".into());
    app.flash(
        FlashKind::Done,
        format!(
            "following {} on {on}: ◎ on the ring, its history in the panel (Esc stops)",
            followed.label()
        ),
    );
    app.set_followed(Some(followed));
}

/// The followed session `fingerprint` as it is now; `None` once it is
/// followed no more.
pub fn followed_now(shared: &Shared, fingerprint: u64) -> Option<Followed> {
    let history = shared.history(fingerprint)?;
    let position = shared
        .router
        .sessions()
        .and_then(|t| t.get(fingerprint))
        .map(|s| s.position);
    Some(Followed {
        fingerprint,
        history,
        position,
    })
}

/// Where a capture goes: the current directory, else beside the log.
pub fn capture_dirs(log_path: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    if let Some(dir) = Path::new(log_path).parent().filter(|d| !d.as_os_str().is_empty())
        && !dirs.iter().any(|d| d == dir)
    {
        dirs.push(dir.to_path_buf());
    }
    dirs
}

/// Saves the frame as SVG and text in the first of `dirs` that takes the
/// files, and says where in the flash line.
pub fn capture(frame: &Buffer, dirs: &[PathBuf], app: &mut App) {
    let mut last = String::from("no directory to write to");
    for dir in dirs {
        match export::save(frame, dir) {
            Ok(s) => {
                tracing::info!("screen saved: {} and {}", s.svg.display(), s.text.display());
                let name = s
                    .svg
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                app.flash(FlashKind::Done, format!("saved {name} and .txt in {}", dir.display()));
                return;
            }
            Err(e) => last = format!("{}: {e}", dir.display()),
        }
    }
    app.flash(
        FlashKind::Refused,
        format!("capture: refused — cannot write the files ({last})"),
    );
}
