//! A configuration file read again (SIGHUP), applied through the same steps
//! as the commands: backends added, removed and reweighted, health checks,
//! proxy timeouts, affinity, placement and vnodes. What cannot change while
//! running is named, and kept as it was.

use std::sync::Arc;

use super::{BackendKind, CommandError, Engine};
use crate::config::{BackendEntry, Config};
use crate::proxy::ProxySettings;
use crate::router::{BackendSpec, BackendState};

impl Engine {
    pub(super) async fn reload(&mut self, new: Config) -> Result<String, CommandError> {
        new.validate("the new configuration")
            .map_err(|e| CommandError::BadValue(e.to_string()))?;
        let old = self.config();
        let mut done: Vec<String> = Vec::new();
        let mut applied = (*old).clone();

        // Backends named in the file: added, removed, moved or reweighted.
        let find = |list: &[BackendEntry], name: &str| list.iter().find(|b| b.name == name).cloned();
        for gone in old.backends.iter().filter(|b| find(&new.backends, &b.name).is_none()) {
            self.remove_backend_quietly(&gone.name).await;
            done.push(format!("removed {}", gone.name));
        }
        for b in &new.backends {
            match find(&old.backends, &b.name) {
                Some(was) if was.addr == b.addr && was.weight == b.weight => {}
                Some(was) if was.addr == b.addr => {
                    self.shared.router.set_weight(&b.name, b.weight)?;
                    done.push(format!("{} weight {} → {}", b.name, was.weight, b.weight));
                }
                Some(_) => {
                    self.remove_backend_quietly(&b.name).await;
                    let spec = BackendSpec::new(&b.name, b.addr, b.weight)?;
                    self.register(spec, BackendKind::External, BackendState::Down)?;
                    done.push(format!("{} moved to {}", b.name, b.addr));
                }
                None => {
                    let spec = BackendSpec::new(&b.name, b.addr, b.weight)?;
                    self.register(spec, BackendKind::External, BackendState::Down)?;
                    done.push(format!("added {} at {}", b.name, b.addr));
                }
            }
        }
        applied.backends = new.backends.clone();

        if new.health != old.health || new.demo.health_interval_ms != old.demo.health_interval_ms {
            applied.health = new.health.clone();
            applied.demo.health_interval_ms = new.demo.health_interval_ms;
            done.push(format!(
                "health: GET {} every {} ms, rise {}, fall {}",
                new.health.path, new.health.interval_ms, new.health.rise, new.health.fall
            ));
        }
        if new.proxy.connect_timeout_ms != old.proxy.connect_timeout_ms
            || new.proxy.backend_timeout_ms != old.proxy.backend_timeout_ms
            || new.proxy.header_read_timeout_ms != old.proxy.header_read_timeout_ms
            || new.proxy.retries != old.proxy.retries
        {
            applied.proxy = crate::config::ProxyConfig {
                threads: old.proxy.threads,
                max_header_bytes: old.proxy.max_header_bytes,
                ..new.proxy.clone()
            };
            done.push("proxy timeouts and retries".into());
        }
        if new.drain != old.drain {
            applied.drain = new.drain.clone();
            done.push(format!("drain timeout {}s", new.drain.timeout_secs));
        }
        if new.admin.token != old.admin.token || new.admin.allowed_hosts != old.admin.allowed_hosts {
            applied.admin.token = new.admin.token.clone();
            applied.admin.allowed_hosts = new.admin.allowed_hosts.clone();
            done.push("admin token and allowed hosts".into());
        }
        self.shared.config.store(Arc::new(applied.clone()));
        self.shared
            .proxy
            .set_settings(ProxySettings::from_config(&applied, self.shared.proxy_addr));
        if new.health != old.health || new.demo.health_interval_ms != old.demo.health_interval_ms {
            let ids: Vec<_> = self.runtimes.keys().copied().collect();
            for id in ids {
                self.restart_checker(id);
            }
        }
        if new.routing.placement != old.routing.placement {
            self.shared.router.set_placement(new.routing.placement);
            applied.routing.placement = new.routing.placement;
            done.push(format!("placement {}", new.routing.placement));
        }
        if new.routing.vnodes != old.routing.vnodes {
            let summary = self.shared.router.set_vnodes(new.routing.vnodes)?;
            applied.routing.vnodes = new.routing.vnodes;
            done.push(format!("{} vnodes — {summary}", new.routing.vnodes));
        }
        if new.affinity.mode != old.affinity.mode {
            let switch = self.shared.router.set_affinity(new.affinity.mode);
            applied.affinity.mode = new.affinity.mode;
            done.push(switch.to_string());
        }
        self.shared.config.store(Arc::new(applied.clone()));

        let later = not_live(&old, &new);
        let mut text = if done.is_empty() {
            "configuration reloaded: nothing to change".to_owned()
        } else {
            format!("configuration reloaded: {}", done.join("; "))
        };
        if !later.is_empty() {
            text.push_str(&format!(" — needs a restart, kept as it was: {}", later.join(", ")));
        }
        Ok(text)
    }

    /// Removes a backend for a reload, whatever its state.
    async fn remove_backend_quietly(&mut self, name: &str) {
        if let Err(e) = self.remove(name).await {
            tracing::warn!("reload: removing {name}: {e}");
        }
    }
}

/// The settings that differ but cannot change while running.
fn not_live(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut later = Vec::new();
    let mut differs = |changed: bool, what: &'static str| {
        if changed {
            later.push(what);
        }
    };
    differs(old.listen != new.listen, "listen");
    differs(old.admin.listen != new.admin.listen, "admin.listen");
    differs(
        old.admin.max_event_streams != new.admin.max_event_streams,
        "admin.max_event_streams",
    );
    differs(old.sessions != new.sessions, "sessions");
    differs(
        old.affinity.cookie_name != new.affinity.cookie_name
            || old.affinity.protection != new.affinity.protection
            || old.affinity.secret != new.affinity.secret
            || old.affinity.secure != new.affinity.secure
            || old.affinity.max_age_secs != new.affinity.max_age_secs
            || old.affinity.app_cookie != new.affinity.app_cookie
            || old.affinity.header != new.affinity.header
            || old.affinity.query_param != new.affinity.query_param
            || old.affinity.trusted_proxies != new.affinity.trusted_proxies,
        "affinity (all but mode)",
    );
    differs(
        old.routing.vnode_hash != new.routing.vnode_hash || old.routing.bound_factor != new.routing.bound_factor,
        "routing.vnode_hash and bound_factor",
    );
    differs(old.proxy.threads != new.proxy.threads, "proxy.threads");
    differs(
        old.proxy.max_header_bytes != new.proxy.max_header_bytes,
        "proxy.max_header_bytes",
    );
    differs(
        old.demo.backends != new.demo.backends || old.demo.base_port != new.demo.base_port,
        "demo",
    );
    differs(old.traffic != new.traffic, "traffic");
    differs(old.log != new.log, "log");
    later
}
