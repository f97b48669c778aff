//! The command line (clap): one subcommand per job, each handing off to the library.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use std::sync::Arc;

use crate::app::{Listeners, StartOptions};
use crate::config::{BackendEntry, Config, ConfigError};
use crate::experiment::{self, RingExperiment};
use crate::router::affinity::AffinityMode;
use crate::router::lb_cookie::Protection;
use crate::router::{BackendSpec, Placement, VnodeHash};
use crate::sim::{self, SimConfig};

/// An interactive load balancer for learning and experimenting with sticky
/// sessions and consistent hashing.
#[derive(Debug, Parser)]
#[command(name = "ringside", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to run; with none, the balancer itself.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The balancer's options.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Options of the balancer (`ringside` with no subcommand).
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Run without the dashboard: logs to stderr, one JSON line with the addresses on stdout.
    #[arg(long)]
    pub headless: bool,
    /// A TOML configuration file (see assets/ringside.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// An external backend, NAME=IP:PORT[*WEIGHT]; repeat for more. None: demo backends.
    #[arg(long = "backend", value_name = "NAME=IP:PORT[*WEIGHT]")]
    pub backends: Vec<BackendSpec>,
    /// Where the proxy listens.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// Where the admin API listens.
    #[arg(long, value_name = "IP:PORT")]
    pub admin: Option<SocketAddr>,
    /// Bearer token for the admin API (required beyond loopback).
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// Share the session table through Redis, e.g. redis://127.0.0.1:6379
    /// (needs the same cookie secret on every balancer).
    #[arg(long, value_name = "URL")]
    pub session_store: Option<String>,
    /// Placement for new sessions.
    #[arg(long)]
    pub placement: Option<Placement>,
    /// What requests are routed by.
    #[arg(long)]
    pub affinity: Option<AffinityMode>,
    /// How the balancer cookie is protected: private, signed, hashed or plain.
    #[arg(long)]
    pub cookie_protection: Option<Protection>,
    /// Virtual nodes per unit of weight.
    #[arg(long)]
    pub vnodes: Option<u32>,
    /// How vnode labels become positions: mixed or crc32.
    #[arg(long)]
    pub vnode_hash: Option<VnodeHash>,
    /// Demo backends to start when no backend is given.
    #[arg(long, value_name = "N")]
    pub demo: Option<usize>,
    /// The first demo backend's port (0: chosen by the OS).
    #[arg(long, value_name = "PORT")]
    pub demo_port: Option<u16>,
    /// Run the synthetic clients (on by default in the dashboard, off headless).
    #[arg(long)]
    pub traffic: bool,
    /// Where the dashboard writes its log.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Proxy threads, each with its own runtime and connections (default: one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: Option<u16>,
    /// Make a new random cookie secret for this run only (balancer cookies
    /// then die with the process), instead of the one kept in the state directory.
    #[arg(long)]
    pub ephemeral_secret: bool,
}

impl RunArgs {
    /// The configuration: the file (or defaults) with these flags on top, validated.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let (mut c, origin) = match &self.config {
            Some(path) => (Config::load(path)?, format!("{} + command line", path.display())),
            None => (Config::default(), "command line".to_owned()),
        };
        if !self.backends.is_empty() {
            c.backends = self
                .backends
                .iter()
                .map(|b| BackendEntry {
                    name: b.name.clone(),
                    addr: b.addr,
                    weight: b.weight,
                })
                .collect();
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.admin {
            c.admin.listen = v;
        }
        if let Some(v) = &self.admin_token {
            c.admin.token = Some(v.clone());
        }
        if let Some(v) = &self.session_store {
            c.sessions.store = Some(v.clone());
        }
        if c.affinity.secret.is_none() {
            c.affinity.secret = std::env::var(crate::secret::SECRET_ENV).ok().filter(|s| !s.is_empty());
        }
        if let Some(v) = self.placement {
            c.routing.placement = v;
        }
        if let Some(v) = self.affinity {
            c.affinity.mode = v;
        }
        if let Some(v) = self.cookie_protection {
            c.affinity.protection = v;
        }
        if let Some(v) = self.vnodes {
            c.routing.vnodes = v;
        }
        if let Some(v) = self.vnode_hash {
            c.routing.vnode_hash = v;
        }
        if let Some(v) = self.demo {
            c.demo.backends = v;
        }
        if let Some(v) = self.demo_port {
            c.demo.base_port = v;
        }
        if self.traffic {
            c.traffic.enabled = Some(true);
        }
        if let Some(v) = &self.log_file {
            c.log.file = Some(v.clone());
        }
        if let Some(v) = self.threads {
            c.proxy.threads = usize::from(v);
        }
        c.validate(&origin)?;
        Ok(c)
    }

    /// Fills in the cookie secret when neither the file, the command line
    /// nor the environment gave one: the secret kept in the state directory
    /// (made the first time), or none with `--ephemeral-secret`. Says where
    /// it is kept.
    pub fn resolve_secret(&self, config: &mut Config) -> anyhow::Result<()> {
        if config.affinity.secret.is_some() || self.ephemeral_secret {
            return Ok(());
        }
        let (secret, path) = crate::secret::kept_secret()?;
        tracing::info!(
            "cookie secret kept in {} (balancer cookies survive restarts)",
            path.display()
        );
        config.affinity.secret = Some(secret);
        Ok(())
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consistent hashing against modulo: keys per backend before and after a
    /// backend leaves or joins, and the share of keys remapped by each (with
    /// no option, api-2 leaves).
    Ring(RingArgs),
    /// A sticky-session simulator: JSON messages on stdin (one per line, or
    /// spread over lines), one answer per line on stdout, driving the real
    /// router with simulated backends.
    Sim(SimArgs),
    /// Run one demo backend as its own process, for failover experiments.
    DemoBackend(DemoBackendArgs),
    /// Run a scripted experiment (assets/scenarios/*.toml) and print its report.
    Scenario(ScenarioArgs),
}

/// Options of `ringside scenario`.
#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// The scenario file.
    pub file: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Run it in the dashboard as a guided lesson (P pauses, n steps, b
    /// replays); the report shows at the end and prints when you quit.
    #[arg(long)]
    pub tui: bool,
}

/// Options of `ringside demo-backend`.
#[derive(Debug, Args)]
pub struct DemoBackendArgs {
    /// Its name, shown in every answer ("Backend Server NAME").
    #[arg(long)]
    pub name: String,
    /// Where it listens.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: SocketAddr,
}

/// Options of `ringside ring`.
#[derive(Debug, Args)]
pub struct RingArgs {
    /// Backends api-1 … api-N before the change.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub backends: u32,
    /// Virtual nodes per backend.
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub vnodes: u32,
    /// Keys `client-0` … `client-(N-1)` to place.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub keys: u32,
    /// Take this backend out (e.g. api-2).
    #[arg(long, conflicts_with = "add")]
    pub remove: Option<String>,
    /// Add a backend with this name.
    #[arg(long)]
    pub add: Option<String>,
    /// How keys are placed.
    #[arg(long, default_value = "ring")]
    pub placement: Placement,
    /// How vnode labels become positions: mixed (default) or the seed's crc32.
    #[arg(long, default_value = "mixed")]
    pub vnode_hash: VnodeHash,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Instead of the tables: this key's hash, ring position and clockwise
    /// walk to its owner on this ring (after the change, if one is given).
    #[arg(long, value_name = "KEY")]
    pub probe: Option<String>,
    /// With --probe: a backend failing its health checks; repeat for more.
    #[arg(long, value_name = "NAME", requires = "probe")]
    pub down: Vec<String>,
    /// With --probe: how the key is read — app-cookie, header or query (as
    /// text, alike) or source-ip (as an address).
    #[arg(long, default_value = "app-cookie", requires = "probe")]
    pub affinity: AffinityMode,
}

/// Options of `ringside sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Simulated backends api-1 … api-N.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub backends: u32,
    /// How new sessions are placed (the task's default is round-robin).
    #[arg(long, default_value = "round-robin")]
    pub placement: Placement,
    /// Sessions idle this many seconds expire.
    #[arg(long, default_value_t = 1800)]
    pub idle_timeout: u32,
    /// Seed for session ids and random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Before any socket: the budget of connections is derived from it.
    crate::limits::raise_fd_limit();
    match cli.command {
        Some(Command::Ring(a)) => {
            let change = match (a.remove, a.add) {
                (Some(name), _) => Some(experiment::Change::Remove(name)),
                (None, Some(name)) => Some(experiment::Change::Add(name)),
                // For people, a change worth seeing: the seed's (api-2
                // leaves). A probe walks the ring as it stands.
                (None, None) if !a.json && a.probe.is_none() => {
                    let change = if a.backends >= 2 {
                        experiment::Change::Remove("api-2".into())
                    } else {
                        experiment::Change::Add("api-2".into())
                    };
                    let flag = match &change {
                        experiment::Change::Remove(n) => format!("--remove {n}"),
                        experiment::Change::Add(n) => format!("--add {n}"),
                    };
                    println!("no --remove or --add given: showing {flag} (give either to choose the change)\n");
                    Some(change)
                }
                (None, None) => None,
            };
            let experiment = RingExperiment {
                backends: a.backends,
                vnodes: a.vnodes,
                keys: a.keys,
                change,
                placement: a.placement,
                vnode_hash: a.vnode_hash,
            };
            if let Some(key) = &a.probe {
                let probe = experiment.probe(key, a.affinity, &a.down)?;
                if a.json {
                    println!("{}", serde_json::to_string(&probe)?);
                } else {
                    print!("{probe}");
                }
                return Ok(());
            }
            let report = experiment.run()?;
            let out = if a.json {
                serde_json::to_string(&report.json())?
            } else {
                report.to_string()
            };
            println!("{out}");
            Ok(())
        }
        Some(Command::Sim(a)) => {
            let config = SimConfig {
                backends: a.backends as usize,
                placement: a.placement,
                idle_timeout_secs: a.idle_timeout,
                seed: a.seed,
            };
            sim::run(io::stdin().lock(), io::stdout().lock(), &config)?;
            Ok(())
        }
        Some(Command::Scenario(a)) => scenario(&a),
        Some(Command::DemoBackend(a)) => {
            crate::logging::to_stderr("info");
            runtime()?.block_on(crate::demo::backend::run_standalone(&a.name, a.listen))
        }
        None => balancer(cli.run),
    }
}

/// Runs the balancer: headless, or with the dashboard.
fn balancer(args: RunArgs) -> anyhow::Result<()> {
    let mut config = args.config()?;
    let rt = runtime()?;
    if args.headless {
        crate::logging::to_stderr(&config.log.level);
        args.resolve_secret(&mut config)?;
        let reread: Option<Box<dyn Fn() -> anyhow::Result<Config> + Send>> = match &args.config {
            Some(_) => {
                let args = Arc::new(args);
                Some(Box::new(move || Ok(args.config()?)))
            }
            None => None,
        };
        rt.block_on(async {
            let listeners = Listeners::bind(&config)?;
            crate::headless::run(listeners, config, reread).await
        })
    } else {
        crate::dashboard::require_terminal()?;
        let log_path = config.log.path(config.listen);
        let _log = crate::logging::to_file(&log_path, &config.log.level)?;
        args.resolve_secret(&mut config)?;
        let traffic = config.traffic.enabled.unwrap_or(true);
        let result = rt.block_on(async {
            let listeners = Listeners::bind(&config)?;
            let handle = crate::app::start(listeners, config, StartOptions { traffic }).await?;
            let ui = crate::dashboard::run(&handle, &log_path.display().to_string()).await;
            handle.shutdown().await;
            ui
        });
        // Not println!: after a hangup stdout is gone, and that is no error.
        let _ = writeln!(io::stdout(), "ringside: the log is in {}", log_path.display());
        result
    }
}

fn scenario(a: &ScenarioArgs) -> anyhow::Result<()> {
    use crate::experiment::scenario::{LessonPlan, run_file};
    let rt = runtime()?;
    let report = if a.tui {
        crate::dashboard::require_terminal()?;
        let plan = LessonPlan::load(&a.file)?;
        let config = plan.config();
        let log_path = config.log.path(config.listen);
        let _log = crate::logging::to_file(&log_path, &config.log.level)?;
        rt.block_on(lesson_in_dashboard(plan, &log_path))?
    } else {
        crate::logging::to_stderr("warn");
        let interactive = std::io::IsTerminal::is_terminal(&std::io::stdout()) && !a.json;
        rt.block_on(run_file(&a.file, |progress| {
            if interactive {
                println!("{progress}");
            }
        }))?
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.check.clone())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} check(s) failed: {}", failed.len(), failed.join("; "))
    }
}

/// Runs a scenario in the dashboard as a guided lesson — its caption, the
/// step under way, a countdown, keys to pause, step and replay, and the
/// report at the end; returns the last run's report once the user quits.
async fn lesson_in_dashboard(
    plan: crate::experiment::scenario::LessonPlan,
    log_path: &std::path::Path,
) -> anyhow::Result<crate::experiment::scenario::Report> {
    use crate::experiment::scenario::Lesson;
    let handle = crate::app::bind_and_start(plan.config(), StartOptions { traffic: true }).await?;
    let lesson = Lesson::start(handle.clone(), plan, 1.0);
    let ui = crate::dashboard::run_lesson(&handle, &log_path.display().to_string(), Some(&lesson)).await;
    let report = lesson.state().borrow().report.clone();
    drop(lesson);
    handle.shutdown().await;
    ui?;
    report.ok_or_else(|| anyhow::anyhow!("the dashboard was closed before the lesson finished"))
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}
