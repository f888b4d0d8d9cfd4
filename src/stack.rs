//! The embedded default: a private PostgreSQL+pgvector cluster and a private Redis under
//! `target/capbench/`, on loopback ports of their own, started on first use and reused after.
//!
//! When `DATABASE_URL` / `REDIS_URL` are set, those servers are used and nothing is started.
//! PostgreSQL refuses to run as root; when capbench runs as root the cluster runs as an
//! unprivileged user (`nobody`, or `CAPBENCH_PG_OS_USER`). Its configuration is
//! `setup/postgres.conf`, included verbatim.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use sqlx::Connection;

use crate::config::Servers;

/// The capacity tuning, one source for the embedded stack and (by test) the compose file.
pub const POSTGRES_CONF: &str = include_str!("../setup/postgres.conf");

/// The superuser role of the embedded cluster.
pub const LOCAL_ROLE: &str = "capbench";

/// The servers in use, as URLs.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub database_url: String,
    pub redis_url: String,
}

/// PostgreSQL URL to use: `DATABASE_URL`, or database `database` of the embedded cluster (started
/// or reused, the database created when missing).
pub async fn postgres(servers: &Servers, database: &str) -> Result<String> {
    if let Some(url) = &servers.database_url {
        return Ok(url.clone());
    }
    let cluster = LocalCluster::new(servers)?;
    let home = servers.home.clone();
    tokio::task::spawn_blocking(move || {
        let _lock = StackLock::acquire(&home)?;
        cluster.ensure_running()
    })
    .await
    .context("starting the embedded PostgreSQL")??;
    ensure_database(&local_database_url(servers.pg_port, "postgres"), database).await?;
    Ok(local_database_url(servers.pg_port, database))
}

/// Redis URL to use: `REDIS_URL`, or the embedded Redis (started or reused).
pub async fn redis(servers: &Servers) -> Result<String> {
    if let Some(url) = &servers.redis_url {
        ping_redis(url).await?;
        return Ok(url.clone());
    }
    let local = LocalRedis::new(servers);
    let home = servers.home.clone();
    tokio::task::spawn_blocking(move || {
        let _lock = StackLock::acquire(&home)?;
        local.ensure_running()
    })
    .await
    .context("starting the embedded Redis")??;
    Ok(local_redis_url(servers.redis_port))
}

/// Connects to Redis at `url` and sends PING, with an error that names the server.
pub async fn ping_redis(url: &str) -> Result<()> {
    let shown = redact(url);
    let hint = "is it running and the URL right? (unset REDIS_URL to use the embedded stack)";
    let client = redis::Client::open(url).with_context(|| format!("invalid Redis URL {shown}"))?;
    let limit = crate::db::connect_timeout();
    // The client's own timeouts (1 s to connect, 0.5 s to answer) would override the user's.
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(Some(limit));
    let attempt = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if !e.is_timeout() => {
            Err(e).with_context(|| format!("cannot connect to Redis at {shown}; {hint}"))
        }
        Ok(Err(_)) | Err(_) => bail!(
            "cannot connect to Redis at {shown}: no answer within {} (--connect-timeout); {hint}",
            humantime::format_duration(limit)
        ),
    }
}

/// Both servers, for this configuration (quick mode has a database of its own).
pub async fn endpoints(config: &crate::config::Config) -> Result<Endpoints> {
    Ok(Endpoints {
        database_url: postgres(&config.servers, config.local_database()).await?,
        redis_url: redis(&config.servers).await?,
    })
}

/// Stops the embedded servers (those capbench started; servers given by URL are never touched).
/// Returns a line per server saying what happened.
pub fn stop(servers: &Servers) -> Result<Vec<String>> {
    let _lock = StackLock::acquire(&servers.home)?;
    let mut said = Vec::new();
    match LocalCluster::new(servers) {
        Ok(cluster) => said.push(cluster.stop()?),
        Err(_) => said.push("PostgreSQL: not installed, nothing to stop".into()),
    }
    said.push(LocalRedis::new(servers).stop()?);
    Ok(said)
}

/// A PostgreSQL client program (`pgbench`, `psql`): from the embedded installation when there is
/// one, else from PATH.
pub fn pg_program(servers: &Servers, name: &str) -> PathBuf {
    LocalCluster::new(servers)
        .map(|c| c.bindir.join(name))
        .ok()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

pub fn local_database_url(port: u16, database: &str) -> String {
    format!("postgres://{LOCAL_ROLE}@127.0.0.1:{port}/{database}")
}

pub fn local_redis_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

pub use crate::secrets::redact;

/// The same server, another database.
pub fn with_database(url: &str, database: &str) -> Result<String> {
    let mut parsed: url_parts::Url = url.parse()?;
    parsed.path = format!("/{database}");
    Ok(parsed.to_string())
}

/// Creates `database` on the server of `admin_url` when it does not exist.
pub async fn ensure_database(admin_url: &str, database: &str) -> Result<()> {
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(admin_url)))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let sql = format!("CREATE DATABASE {}", quote_ident(database));
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            // Another process may have created it between the check and now.
            let duplicate =
                e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04");
            if !duplicate {
                return Err(e).with_context(|| format!("creating database {database}"));
            }
        }
    }
    Ok(())
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A small URL splitter: enough to swap the database of a PostgreSQL URL.
mod url_parts {
    use std::fmt;
    use std::str::FromStr;

    pub struct Url {
        pub prefix: String,
        pub path: String,
        pub suffix: String,
    }

    impl FromStr for Url {
        type Err = anyhow::Error;
        fn from_str(s: &str) -> anyhow::Result<Self> {
            let scheme_end = s
                .find("://")
                .ok_or_else(|| anyhow::anyhow!("not a URL: {}", super::redact(s)))?;
            let after = scheme_end + 3;
            let path_start = s[after..].find('/').map(|i| after + i);
            let query_start = s[after..].find(['?', '#']).map(|i| after + i);
            let (path_start, path_end) = match (path_start, query_start) {
                (Some(p), Some(q)) if p < q => (p, q),
                (Some(p), None) => (p, s.len()),
                (_, Some(q)) => (q, q),
                (None, None) => (s.len(), s.len()),
            };
            Ok(Url {
                prefix: s[..path_start].to_string(),
                path: s[path_start..path_end].to_string(),
                suffix: s[path_end..].to_string(),
            })
        }
    }

    impl fmt::Display for Url {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}{}{}", self.prefix, self.path, self.suffix)
        }
    }
}

/// Serializes start/stop of the embedded servers across processes (parallel tests, benches).
struct StackLock {
    _file: File,
}

impl StackLock {
    fn acquire(home: &Path) -> Result<Self> {
        fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
        let path = home.join("stack.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

/// The unprivileged account the cluster runs as when we are root.
#[derive(Debug, Clone)]
struct ServerUser {
    name: String,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

fn server_user() -> Result<Option<ServerUser>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let name = std::env::var("CAPBENCH_PG_OS_USER").unwrap_or_else(|_| "nobody".into());
    let user = nix::unistd::User::from_name(&name)?.ok_or_else(|| {
        anyhow!(
            "PostgreSQL refuses to run as root and user '{name}' does not exist: \
             create it or set CAPBENCH_PG_OS_USER to an unprivileged user"
        )
    })?;
    Ok(Some(ServerUser {
        name,
        uid: user.uid,
        gid: user.gid,
    }))
}

/// A private PostgreSQL cluster under `home/pg`.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    user: Option<ServerUser>,
}

impl LocalCluster {
    /// The embedded cluster: binaries chosen by `setup/install-deps.sh` (or `CAPBENCH_PG_BINDIR`).
    pub fn new(servers: &Servers) -> Result<Self> {
        let bindir = match std::env::var_os("CAPBENCH_PG_BINDIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let marker = servers.home.join("pg-bindir");
                let text = fs::read_to_string(&marker).map_err(|_| {
                    anyhow!(
                        "PostgreSQL with pgvector is not installed for capbench ({} is missing): \
                         run setup/install-deps.sh, or set DATABASE_URL to your own server",
                        marker.display()
                    )
                })?;
                PathBuf::from(text.trim())
            }
        };
        Self::with_bindir(bindir, servers.home.join("pg"), servers.pg_port)
    }

    /// A cluster of the installation in `bindir`, with its files in `dir`.
    pub fn with_bindir(bindir: PathBuf, dir: PathBuf, port: u16) -> Result<Self> {
        if !bindir.join("postgres").is_file() {
            bail!(
                "no PostgreSQL server in {}: run setup/install-deps.sh (or fix CAPBENCH_PG_BINDIR)",
                bindir.display()
            );
        }
        Ok(Self {
            bindir,
            dir,
            port,
            user: server_user()?,
        })
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    pub fn url(&self, database: &str) -> String {
        local_database_url(self.port, database)
    }

    /// Runs a PostgreSQL program as the server user.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<Output> {
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.args(args)
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .env_remove("PGDATA");
        if let Some(user) = &self.user {
            cmd.uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &self.dir);
        }
        cmd.output()
            .with_context(|| format!("running {}", self.bindir.join(program).display()))
    }

    fn chown(&self, path: &Path) -> Result<()> {
        if let Some(user) = &self.user {
            nix::unistd::chown(path, Some(user.uid), Some(user.gid))
                .with_context(|| format!("giving {} to user {}", path.display(), user.name))?;
        }
        Ok(())
    }

    /// When we run as root the server user must be able to reach `dir` through its parents.
    fn check_reachable(&self) -> Result<()> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        for ancestor in self.dir.ancestors().skip(1) {
            let Ok(meta) = fs::metadata(ancestor) else {
                continue;
            };
            if meta.permissions().mode() & 0o001 == 0 {
                bail!(
                    "PostgreSQL runs as '{}' (you are root) and cannot reach {} through {}: \
                     chmod o+x {} or set CAPBENCH_HOME to a directory it can reach",
                    user.name,
                    self.dir.display(),
                    ancestor.display(),
                    ancestor.display()
                );
            }
        }
        Ok(())
    }

    fn is_running(&self) -> Result<bool> {
        if !self.data().join("PG_VERSION").exists() {
            return Ok(false);
        }
        let out = self.run(
            "pg_ctl",
            &["status".as_ref(), "-D".as_ref(), self.data().as_os_str()],
        )?;
        Ok(out.status.success())
    }

    /// What `capbench.conf` in the data directory should hold: setup/postgres.conf plus the
    /// settings that make the cluster private.
    fn conf(&self) -> String {
        format!(
            "# Written by capbench from setup/postgres.conf; edit that file, not this one.\n{POSTGRES_CONF}\n\
             # --- embedded stack: private, loopback only ---\n\
             port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
            self.port,
            self.dir.display()
        )
    }

    fn init(&self) -> Result<()> {
        let staging = self.dir.join("data.init");
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .with_context(|| format!("removing {}", staging.display()))?;
        }
        let out = self.run(
            "initdb",
            &[
                "-D".as_ref(),
                staging.as_os_str(),
                "-U".as_ref(),
                LOCAL_ROLE.as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        if !out.status.success() {
            bail!(
                "initdb failed for {}: {}",
                staging.display(),
                last_lines(&String::from_utf8_lossy(&out.stderr), 3)
            );
        }
        let mut main_conf = File::options()
            .append(true)
            .open(staging.join("postgresql.conf"))
            .context("opening postgresql.conf of the new cluster")?;
        writeln!(main_conf, "\ninclude 'capbench.conf'")?;
        // Rename into place last: a half-initialized directory never looks like a cluster.
        fs::rename(&staging, self.data()).context("moving the new cluster into place")?;
        Ok(())
    }

    /// Starts the cluster, or reuses it when it is already running with the same configuration.
    pub fn ensure_running(&self) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        self.chown(&self.dir)?;
        self.check_reachable()?;
        if !self.data().join("PG_VERSION").exists() {
            self.init()?;
        }
        let conf_path = self.data().join("capbench.conf");
        let wanted = self.conf();
        let changed = fs::read_to_string(&conf_path).ok().as_deref() != Some(wanted.as_str());
        if changed {
            fs::write(&conf_path, &wanted)
                .with_context(|| format!("writing {}", conf_path.display()))?;
            self.chown(&conf_path)?;
        }
        let running = self.is_running()?;
        if running && !changed {
            return Ok(());
        }
        let action = if running { "restart" } else { "start" };
        let log = self.log();
        let out = self.run(
            "pg_ctl",
            &[
                action.as_ref(),
                "-D".as_ref(),
                self.data().as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "120".as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
            ],
        )?;
        if !out.status.success() {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "the embedded PostgreSQL did not start on 127.0.0.1:{} ({}): see {}",
                self.port,
                last_lines(&tail, 2),
                log.display()
            );
        }
        Ok(())
    }

    pub fn stop(&self) -> Result<String> {
        if !self.is_running()? {
            return Ok("PostgreSQL: not running".into());
        }
        let out = self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-D".as_ref(),
                self.data().as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
            ],
        )?;
        if !out.status.success() {
            bail!(
                "pg_ctl stop failed: {}",
                last_lines(&String::from_utf8_lossy(&out.stderr), 2)
            );
        }
        Ok(format!("PostgreSQL: stopped (127.0.0.1:{})", self.port))
    }
}

/// A private Redis under `home/redis`, without persistence (it holds only rate-limiter state).
#[derive(Debug, Clone)]
struct LocalRedis {
    dir: PathBuf,
    port: u16,
}

impl LocalRedis {
    fn new(servers: &Servers) -> Self {
        Self {
            dir: servers.home.join("redis"),
            port: servers.redis_port,
        }
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("redis.pid")
    }

    fn pid(&self) -> Option<nix::unistd::Pid> {
        let pid: i32 = fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, None).ok().map(|_| pid)
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(local_redis_url(self.port)) else {
            return false;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut conn).is_ok()
    }

    /// Who answers on our port: (pid, working directory), if anyone.
    fn who_answers(&self) -> Option<(i32, PathBuf)> {
        let client = redis::Client::open(local_redis_url(self.port)).ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))?
            .trim()
            .parse()
            .ok()?;
        let dir: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("dir")
            .query(&mut conn)
            .ok()?;
        Some((pid, PathBuf::from(dir.get(1)?)))
    }

    fn wait_for_ping(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn ensure_running(&self) -> Result<()> {
        if let Some(pid) = self.pid() {
            // Ours is running. Never start a second one beside it: it would fail to bind and,
            // leaving, delete the pid file we stop ours by. A slow answer is only a busy machine.
            if self.wait_for_ping(Duration::from_secs(10)) {
                return Ok(());
            }
            bail!(
                "the embedded Redis (pid {pid}) does not answer on 127.0.0.1:{}: see {}",
                self.port,
                self.dir.join("redis.log").display()
            );
        }
        if let Some((pid, dir)) = self.who_answers() {
            let ours = fs::canonicalize(&dir).ok() == fs::canonicalize(&self.dir).ok();
            if ours {
                // Ours, but its pid file is gone: write it again so --stop can stop it.
                fs::write(self.pidfile(), format!("{pid}\n"))
                    .with_context(|| format!("writing {}", self.pidfile().display()))?;
                return Ok(());
            }
            bail!(
                "127.0.0.1:{} is served by another Redis (pid {pid}, dir {}): set CAPBENCH_REDIS_PORT to a free port, \
                 or REDIS_URL to use that one",
                self.port,
                dir.display()
            );
        }
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let log = self.dir.join("redis.log");
        let status = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
            ])
            .arg("--pidfile")
            .arg(self.pidfile())
            .arg("--logfile")
            .arg(&log)
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "no"])
            .status();
        match status {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "redis-server is not installed: run setup/install-deps.sh (or set REDIS_URL to your own Redis)"
            ),
            Err(e) => return Err(e).context("starting redis-server"),
            Ok(s) if !s.success() => {
                bail!("redis-server failed to start: see {}", log.display())
            }
            Ok(_) => {}
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let tail = fs::read_to_string(&log).unwrap_or_default();
        bail!(
            "the embedded Redis did not answer on 127.0.0.1:{} ({}): see {}",
            self.port,
            last_lines(&tail, 1),
            log.display()
        )
    }

    fn stop(&self) -> Result<String> {
        let Some(pid) = self.pid() else {
            return Ok("Redis: not running".into());
        };
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .with_context(|| format!("stopping redis-server (pid {pid})"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while nix::sys::signal::kill(pid, None).is_ok() {
            if Instant::now() > deadline {
                bail!("redis-server (pid {pid}) did not stop within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(format!("Redis: stopped (127.0.0.1:{})", self.port))
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}
