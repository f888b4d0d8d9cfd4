//! The embedded default: a private PostgreSQL+pgvector cluster and a private Redis under
//! `target/capbench/` (`CAPBENCH_HOME`), on loopback ports of their own, started on first use and
//! reused after.
//!
//! When `DATABASE_URL` / `REDIS_URL` are set, those servers are used and nothing is started.
//!
//! Private means private:
//! - both servers listen on 127.0.0.1 only, and both ask for a password generated on first use
//!   and kept in `home/secret` (mode 0600); the URLs this module hands out carry it, and
//!   [`crate::secrets`] remembers it so no output shows it (`setup --print-env` prints it: that
//!   is its job). PostgreSQL authenticates with scram-sha-256, on TCP and on its Unix socket,
//!   whose directory (`home/pg`) only the server's user may enter;
//! - neither server runs as root: when capbench runs as root, both run as an unprivileged user
//!   (`nobody`, or `CAPBENCH_PG_OS_USER`).
//!
//! A running server is never restarted or reconfigured by another command: a command that asks
//! for another port, or another configuration, than the one a server runs with fails with a line
//! naming both and the way out (`setup --stop` first, or ask for the running one). Servers of an
//! earlier capbench that ran without a password get one without a restart (PostgreSQL: the role's
//! password, then pg_hba.conf and a reload; Redis: `CONFIG SET requirepass`).
//! Every start, reuse and stop holds a lock file (`home/stack.lock`), so processes never race.
//!
//! PostgreSQL's configuration is `setup/postgres.conf`, included verbatim.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::config::Servers;

/// The capacity tuning, one source for the embedded stack and (by test) the compose file.
pub const POSTGRES_CONF: &str = include_str!("../setup/postgres.conf");

/// The superuser role of the embedded cluster.
pub const LOCAL_ROLE: &str = "capbench";

/// The file beside the servers' directories (`home/secret`) that holds their password.
pub const SECRET_FILE: &str = "secret";

/// Who may connect to the embedded cluster: anyone who gives the password, and nobody else.
const PG_HBA: &str = "\
# Written by capbench: every client of the embedded PostgreSQL gives the password kept in the
# stack's `secret` file (scram-sha-256), on the private socket or on 127.0.0.1. Nothing else.
local  all  all                scram-sha-256
host   all  all  127.0.0.1/32  scram-sha-256
";

/// How long a server that runs (by its pid) may take to answer before we say it does not.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

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
    if servers.redis_url.is_none() {
        check_ports(servers)?;
    }
    let servers = servers.clone();
    let cluster = tokio::task::spawn_blocking(move || {
        let _lock = StackLock::acquire(&servers.home)?;
        let cluster = LocalCluster::new(&servers)?;
        cluster.ensure_running()?;
        anyhow::Ok(cluster)
    })
    .await
    .context("starting the embedded PostgreSQL")??;
    if let Err(e) = ensure_database(&cluster.url("postgres"), database).await {
        return Err(if password_refused(&e) {
            // The secret file was made anew while the cluster ran with the old password.
            e.context(format!(
                "the embedded PostgreSQL refuses the password in {}: stop it (setup --stop) and \
                 it starts again with that password",
                cluster.secret.display()
            ))
        } else {
            e
        });
    }
    Ok(cluster.url(database))
}

/// The embedded PostgreSQL restarted with `settings` for this start only (`shared_buffers=128MB`),
/// or, with none, as setup/postgres.conf says; its OS page cache of the relation files `evict`
/// (`pg_relation_filepath`) dropped while it is stopped. Fails for a user's own server
/// (`DATABASE_URL`): capbench never restarts or reconfigures it. Returns the files evicted.
pub async fn restart_postgres(
    servers: &Servers,
    settings: &[String],
    evict: &[String],
) -> Result<usize> {
    if servers.database_url.is_some() {
        bail!("a server of DATABASE_URL is measured as it is, never restarted or reconfigured");
    }
    let (servers, settings, evict) = (servers.clone(), settings.to_vec(), evict.to_vec());
    tokio::task::spawn_blocking(move || {
        let _lock = StackLock::acquire(&servers.home)?;
        let cluster = LocalCluster::new(&servers)?;
        cluster.stop()?;
        let files = cluster.drop_os_cache(&evict)?;
        cluster.restart_with(&settings)?;
        anyhow::Ok(files)
    })
    .await
    .context("restarting the embedded PostgreSQL")?
}

/// Whether PostgreSQL refused the password (SQLSTATE 28P01) somewhere in `e`.
fn password_refused(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<sqlx::Error>())
        .any(|s| s.as_database_error().and_then(|d| d.code()).as_deref() == Some("28P01"))
}

/// Redis URL to use: `REDIS_URL`, or the embedded Redis (started or reused).
pub async fn redis(servers: &Servers) -> Result<String> {
    if let Some(url) = &servers.redis_url {
        ping_redis(url).await?;
        return Ok(url.clone());
    }
    if servers.database_url.is_none() {
        check_ports(servers)?;
    }
    let servers = servers.clone();
    tokio::task::spawn_blocking(move || {
        let _lock = StackLock::acquire(&servers.home)?;
        let local = LocalRedis::new(&servers)?;
        local.ensure_running()?;
        anyhow::Ok(local.url())
    })
    .await
    .context("starting the embedded Redis")?
}

/// The embedded PostgreSQL and Redis need a port each.
fn check_ports(servers: &Servers) -> Result<()> {
    ensure!(
        servers.pg_port != servers.redis_port,
        "the embedded PostgreSQL and Redis would both use port {} (CAPBENCH_PG_PORT, CAPBENCH_REDIS_PORT): \
         give them a port each",
        servers.pg_port
    );
    Ok(())
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
    said.push(LocalRedis::new(servers)?.stop()?);
    Ok(said)
}

/// A PostgreSQL client program (`pgbench`, `psql`): from the embedded installation when there is
/// one, else from PATH.
pub fn pg_program(servers: &Servers, name: &str) -> PathBuf {
    installed_bindir(servers)
        .map(|dir| dir.join(name))
        .ok()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

pub use crate::secrets::redact;

/// The same server, another database: the user, password, host, port and parameters of `url`
/// are kept as they are.
pub fn with_database(url: &str, database: &str) -> Result<String> {
    let mut parsed =
        url::Url::parse(url).map_err(|e| anyhow!("not a URL ({e}): {}", redact(url)))?;
    ensure!(
        !parsed.cannot_be_a_base(),
        "not a server URL: {}",
        redact(url)
    );
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.into())
}

/// `url` without its password, and the password (percent-decoded): for client programs, which
/// take it from their environment (`PGPASSWORD`), where other users cannot read it, unlike their
/// command line.
pub fn split_password(url: &str) -> Result<(String, Option<String>)> {
    let mut parsed =
        url::Url::parse(url).map_err(|e| anyhow!("not a URL ({e}): {}", redact(url)))?;
    let Some(password) = parsed.password().map(str::to_string) else {
        return Ok((url.to_string(), None));
    };
    let password = percent_encoding::percent_decode_str(&password)
        .decode_utf8()
        .map_err(|_| anyhow!("the password in {} is not UTF-8", redact(url)))?
        .into_owned();
    parsed
        .set_password(None)
        .map_err(|()| anyhow!("cannot remove the password from {}", redact(url)))?;
    Ok((parsed.into(), Some(password)))
}

/// Creates `database` on the server of `admin_url` when it does not exist.
pub async fn ensure_database(admin_url: &str, database: &str) -> Result<()> {
    let mut conn = crate::db::connect(admin_url).await?;
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

/// The password of the embedded servers; its `Debug` shows `***`, so no `{:?}` prints it.
#[derive(Clone)]
struct Password(String);

impl Password {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(crate::secrets::MASK)
    }
}

/// The password of the embedded servers, kept in `path` (mode 0600): read, or made (32 random
/// letters and digits) when the file does not exist. Remembered by [`crate::secrets`] so that no
/// output shows it.
fn stack_password(path: &Path) -> Result<Password> {
    let text = match fs::read_to_string(path) {
        Ok(text) => {
            keep_private(path)?;
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_secret(path)?;
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let password = text.trim();
    ensure!(
        password.len() >= 16 && password.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{} does not hold a password of 16 or more letters and digits: delete it and stop the \
         embedded servers (setup --stop); a new password is made for their next start",
        path.display()
    );
    crate::secrets::remember(password);
    Ok(Password(password.to_string()))
}

/// Writes a new random password to `path` unless another process did first (then its password
/// stays): the file is written aside and linked into place, so it is never seen half-written.
fn create_secret(path: &Path) -> Result<()> {
    use rand::distr::{Alphanumeric, SampleString};
    let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
    // Unique to this call: threads of one process may race here too.
    let staging = path.with_extension(format!(
        "{}.{}.new",
        std::process::id(),
        Alphanumeric.sample_string(&mut rand::rng(), 8)
    ));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(&staging, &format!("{password}\n"))?;
    let claimed = fs::hard_link(&staging, path);
    let _ = fs::remove_file(&staging);
    match claimed {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(e).with_context(|| format!("creating {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Creates `path` readable by its owner only, holding `text`.
fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A secret file others can read is made private again, with a warning: they may have read it.
fn keep_private(path: &Path) -> Result<()> {
    let mode = fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private (chmod 600)", path.display()))?;
        tracing::warn!(
            "{} was readable by others (mode {mode:o}): made private (0600); \
             delete it while the embedded servers are stopped to get a new password",
            path.display()
        );
    }
    Ok(())
}

/// The unprivileged account the servers run as when we are root.
#[derive(Debug, Clone)]
struct ServerUser {
    name: String,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

impl ServerUser {
    /// Gives `path` to this user.
    fn own(&self, path: &Path) -> Result<()> {
        nix::unistd::chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("giving {} to user {}", path.display(), self.name))
    }

    /// Runs `cmd` as this user (with its supplementary groups dropped).
    fn apply(&self, cmd: &mut Command, home: &Path) {
        cmd.uid(self.uid.as_raw())
            .gid(self.gid.as_raw())
            .env("HOME", home);
    }
}

/// Who the servers run as: `None` (ourselves) unless we are root.
fn server_user() -> Result<Option<ServerUser>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let name = std::env::var("CAPBENCH_PG_OS_USER").unwrap_or_else(|_| "nobody".into());
    let user = nix::unistd::User::from_name(&name)?.ok_or_else(|| {
        anyhow!(
            "the embedded servers do not run as root and user '{name}' does not exist: \
             create it or set CAPBENCH_PG_OS_USER to an unprivileged user"
        )
    })?;
    Ok(Some(ServerUser {
        name,
        uid: user.uid,
        gid: user.gid,
    }))
}

/// Creates `dir` for a server: owned by the server's user, entered by nobody else (it holds
/// PostgreSQL's socket), and reachable by that user through its parents.
fn private_dir(dir: &Path, user: Option<&ServerUser>) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private (chmod 700)", dir.display()))?;
    let Some(user) = user else {
        return Ok(());
    };
    user.own(dir)?;
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        if meta.permissions().mode() & 0o001 == 0 {
            bail!(
                "the embedded servers run as '{}' (you are root) and cannot reach {} through {}: \
                 chmod o+x {} or set CAPBENCH_HOME to a directory it can reach",
                user.name,
                dir.display(),
                ancestor.display(),
                ancestor.display()
            );
        }
    }
    Ok(())
}

/// The PostgreSQL bin directory chosen by `setup/install-deps.sh` (or `CAPBENCH_PG_BINDIR`).
fn installed_bindir(servers: &Servers) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CAPBENCH_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let marker = servers.home.join("pg-bindir");
    let text = fs::read_to_string(&marker).map_err(|_| {
        anyhow!(
            "PostgreSQL with pgvector is not installed for capbench ({} is missing): \
             run setup/install-deps.sh, or set DATABASE_URL to your own server",
            marker.display()
        )
    })?;
    Ok(PathBuf::from(text.trim()))
}

mod local_postgres;
mod local_redis;
pub use local_postgres::LocalCluster;
use local_postgres::run_with_input;
use local_redis::*;

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}
