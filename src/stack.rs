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
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// A private PostgreSQL cluster under `home/pg`.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    user: Option<ServerUser>,
    /// The role's password, from [`SECRET_FILE`] beside `dir`.
    password: Password,
    secret: PathBuf,
}

impl LocalCluster {
    /// The embedded cluster: binaries chosen by `setup/install-deps.sh` (or `CAPBENCH_PG_BINDIR`).
    pub fn new(servers: &Servers) -> Result<Self> {
        Self::with_bindir(
            installed_bindir(servers)?,
            servers.home.join("pg"),
            servers.pg_port,
        )
    }

    /// A cluster of the installation in `bindir`, with its files in `dir` and its password in the
    /// [`SECRET_FILE`] beside `dir` (made when missing): for `home/pg`, the stack's `home/secret`.
    pub fn with_bindir(bindir: PathBuf, dir: PathBuf, port: u16) -> Result<Self> {
        if !bindir.join("postgres").is_file() {
            bail!(
                "no PostgreSQL server in {}: run setup/install-deps.sh (or fix CAPBENCH_PG_BINDIR)",
                bindir.display()
            );
        }
        let secret = dir.parent().unwrap_or(&dir).join(SECRET_FILE);
        Ok(Self {
            password: stack_password(&secret)?,
            secret,
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

    /// The URL of `database` on this cluster, with the role's password.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{LOCAL_ROLE}:{}@127.0.0.1:{}/{database}",
            self.password.as_str(),
            self.port
        )
    }

    /// Runs a PostgreSQL program as the server user, with `input` on its standard input.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr], input: Option<&str>) -> Result<Output> {
        let path = self.bindir.join(program);
        let mut cmd = Command::new(&path);
        cmd.args(args)
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGDATA")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(user) = &self.user {
            user.apply(&mut cmd, &self.dir);
        }
        run_with_input(cmd, input).with_context(|| format!("running {}", path.display()))
    }

    fn pg_ctl(&self, action: &str, extra: &[&std::ffi::OsStr]) -> Result<Output> {
        let data = self.data();
        let mut args: Vec<&std::ffi::OsStr> =
            vec![action.as_ref(), "-D".as_ref(), data.as_os_str()];
        args.extend_from_slice(extra);
        self.run("pg_ctl", &args, None)
    }

    fn chown(&self, path: &Path) -> Result<()> {
        match &self.user {
            Some(user) => user.own(path),
            None => Ok(()),
        }
    }

    fn is_running(&self) -> Result<bool> {
        if !self.data().join("PG_VERSION").exists() {
            return Ok(false);
        }
        Ok(self.pg_ctl("status", &[])?.status.success())
    }

    /// The port the running server listens on (line 4 of `postmaster.pid`).
    fn running_port(&self) -> Option<u16> {
        fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .nth(3)?
            .trim()
            .parse()
            .ok()
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

    /// SQL that gives the role its password; the statement logs stay off, so the password is
    /// not written to postgres.log whatever the logging settings.
    fn password_sql(&self) -> String {
        format!(
            "SET log_statement = 'none';\nSET log_min_duration_statement = -1;\n\
             SET password_encryption = 'scram-sha-256';\n\
             ALTER ROLE {} PASSWORD '{}';\n",
            quote_ident(LOCAL_ROLE),
            self.password.as_str()
        )
    }

    /// Writes a file of the cluster (as its user, readable by it alone).
    fn write_owned(&self, path: &Path, text: &str) -> Result<()> {
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 600 {}", path.display()))?;
        self.chown(path)
    }

    fn init(&self) -> Result<()> {
        let staging = self.dir.join("data.init");
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .with_context(|| format!("removing {}", staging.display()))?;
        }
        // initdb reads the password from a file; it lives only while initdb runs.
        let pwfile = self.dir.join("initdb.pw");
        let _ = fs::remove_file(&pwfile);
        write_private(&pwfile, &format!("{}\n", self.password.as_str()))?;
        self.chown(&pwfile)?;
        let out = self.run(
            "initdb",
            &[
                "-D".as_ref(),
                staging.as_os_str(),
                "-U".as_ref(),
                LOCAL_ROLE.as_ref(),
                "--auth=scram-sha-256".as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
            None,
        );
        let _ = fs::remove_file(&pwfile);
        let out = out?;
        if !out.status.success() {
            bail!(
                "initdb failed for {}: {}",
                staging.display(),
                last_lines(&String::from_utf8_lossy(&out.stderr), 3)
            );
        }
        self.write_owned(&staging.join("pg_hba.conf"), PG_HBA)?;
        let mut main_conf = File::options()
            .append(true)
            .open(staging.join("postgresql.conf"))
            .context("opening postgresql.conf of the new cluster")?;
        writeln!(main_conf, "\ninclude 'capbench.conf'")?;
        // Rename into place last: a half-initialized directory never looks like a cluster.
        fs::rename(&staging, self.data()).context("moving the new cluster into place")?;
        Ok(())
    }

    /// Starts the cluster, or reuses it when it runs on this port with this configuration. A
    /// running cluster is never restarted: asked for another port or configuration, this fails
    /// and says how to apply it.
    pub fn ensure_running(&self) -> Result<()> {
        private_dir(&self.dir, self.user.as_ref())?;
        if !self.data().join("PG_VERSION").exists() {
            self.init()?;
        }
        let conf_path = self.data().join("capbench.conf");
        let wanted = self.conf();
        let hba_path = self.data().join("pg_hba.conf");
        let hba_ours = fs::read_to_string(&hba_path).ok().as_deref() == Some(PG_HBA);
        if self.is_running()? {
            if let Some(port) = self.running_port().filter(|&p| p != self.port) {
                bail!(
                    "the embedded PostgreSQL of {} runs on 127.0.0.1:{port}, not on {} as asked \
                     (CAPBENCH_PG_PORT / --pg-port): ask for {port} again, or stop it first \
                     (setup --stop) and it starts on {}",
                    self.dir.display(),
                    self.port,
                    self.port
                );
            }
            if fs::read_to_string(&conf_path).ok().as_deref() != Some(wanted.as_str()) {
                bail!(
                    "the embedded PostgreSQL on 127.0.0.1:{} runs with other settings than this \
                     capbench's setup/postgres.conf ({} differs): stop it first (setup --stop) \
                     to start it with them",
                    self.port,
                    conf_path.display()
                );
            }
            if !hba_ours {
                self.require_password_running()?;
            }
            return Ok(());
        }
        if fs::read_to_string(&conf_path).ok().as_deref() != Some(wanted.as_str()) {
            self.write_owned(&conf_path, &wanted)?;
        }
        if !hba_ours {
            self.write_owned(&hba_path, PG_HBA)?;
        }
        self.set_password_stopped()?;
        let log = self.log();
        let out = self.pg_ctl(
            "start",
            &[
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "120".as_ref(),
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

    /// Before each start, the role gets the password of the secret file (in single-user mode:
    /// no connection, no network), so a cluster from an earlier capbench (trust, no password)
    /// or a secret file made anew always agree with it.
    fn set_password_stopped(&self) -> Result<()> {
        let out = self.run(
            "postgres",
            &[
                "--single".as_ref(),
                "-D".as_ref(),
                self.data().as_os_str(),
                "postgres".as_ref(),
            ],
            Some(&self.password_sql()),
        )?;
        // Single-user mode reports a failed statement on stderr but still exits 0.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || stderr.contains("ERROR:") {
            bail!(
                "could not set the password of the embedded PostgreSQL's role {LOCAL_ROLE} in {}: {}",
                self.data().display(),
                last_lines(&stderr, 2)
            );
        }
        Ok(())
    }

    /// A running cluster of an earlier capbench (trust authentication) gets the password without
    /// a restart: the role's password first (its old rules still let us in), then the new rules
    /// (pg_hba.conf) and a reload.
    fn require_password_running(&self) -> Result<()> {
        let port = self.port.to_string();
        let words = [
            "-X",
            "-q",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            LOCAL_ROLE,
            "-d",
            "postgres",
        ];
        let args: Vec<&std::ffi::OsStr> = words.iter().map(|a| a.as_ref()).collect();
        let out = self.run("psql", &args, Some(&self.password_sql()))?;
        if !out.status.success() {
            bail!(
                "the embedded PostgreSQL on 127.0.0.1:{} does not use capbench's pg_hba.conf and \
                 its role's password could not be set ({}): stop it (setup --stop) and run again",
                self.port,
                last_lines(&String::from_utf8_lossy(&out.stderr), 2)
            );
        }
        self.write_owned(&self.data().join("pg_hba.conf"), PG_HBA)?;
        let out = self.pg_ctl("reload", &[])?;
        if !out.status.success() {
            bail!(
                "pg_ctl reload failed: {}",
                last_lines(&String::from_utf8_lossy(&out.stderr), 2)
            );
        }
        tracing::info!(
            "the embedded PostgreSQL on 127.0.0.1:{} now asks for the password kept in {} \
             (pg_hba.conf rewritten and reloaded, not restarted)",
            self.port,
            self.secret.display()
        );
        Ok(())
    }

    /// Stops the cluster (whatever port it runs on).
    pub fn stop(&self) -> Result<String> {
        if !self.is_running()? {
            return Ok("PostgreSQL: not running".into());
        }
        let port = self.running_port().unwrap_or(self.port);
        let out = self.pg_ctl("stop", &["-m".as_ref(), "fast".as_ref()])?;
        if !out.status.success() {
            bail!(
                "pg_ctl stop failed: {}",
                last_lines(&String::from_utf8_lossy(&out.stderr), 2)
            );
        }
        Ok(format!("PostgreSQL: stopped (127.0.0.1:{port})"))
    }
}

/// Runs `cmd`, writing `input` to its standard input (then closing it), and collects its output.
fn run_with_input(mut cmd: Command, input: Option<&str>) -> std::io::Result<Output> {
    let mut child = cmd.spawn()?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A program that exits early closes its end: its output says why, not this write.
        let _ = stdin.write_all(text.as_bytes());
    }
    child.wait_with_output()
}

/// What answers on the embedded Redis's port.
enum RedisAnswer {
    /// Nothing, or nothing that speaks Redis within the probe's time.
    Nobody,
    /// A Redis that let us in, without a password (`open`) or with ours.
    Redis { pid: i32, dir: PathBuf, open: bool },
    /// A Redis that wants a password, and not ours.
    Locked,
}

/// A private Redis under `home/redis`, without persistence (it holds only rate-limiter state).
#[derive(Debug, Clone)]
struct LocalRedis {
    dir: PathBuf,
    port: u16,
    user: Option<ServerUser>,
    password: Password,
    secret: PathBuf,
}

impl LocalRedis {
    fn new(servers: &Servers) -> Result<Self> {
        let secret = servers.home.join(SECRET_FILE);
        Ok(Self {
            dir: servers.home.join("redis"),
            port: servers.redis_port,
            user: server_user()?,
            password: stack_password(&secret)?,
            secret,
        })
    }

    fn url(&self) -> String {
        format!(
            "redis://:{}@127.0.0.1:{}",
            self.password.as_str(),
            self.port
        )
    }

    /// For asking who answers, and for a Redis of an earlier capbench (which had no password).
    fn url_without_password(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("redis.pid")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// The configuration the running Redis was started with (its password is not in it).
    fn conf_path(&self) -> PathBuf {
        self.dir.join("redis.conf")
    }

    /// Ours, by its pid file, if it runs.
    fn pid(&self) -> Option<nix::unistd::Pid> {
        let pid: i32 = fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, None).ok().map(|_| pid)
    }

    /// The port in the configuration ours was started with.
    fn recorded_port(&self) -> Option<u16> {
        fs::read_to_string(self.conf_path())
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("port "))?
            .trim()
            .parse()
            .ok()
    }

    fn conf(&self) -> Result<String> {
        let quoted = |p: &Path| -> Result<String> {
            let s = p
                .to_str()
                .ok_or_else(|| anyhow!("{} is not UTF-8", p.display()))?;
            Ok(format!(
                "\"{}\"",
                s.replace('\\', "\\\\").replace('"', "\\\"")
            ))
        };
        Ok(format!(
            "# Written by capbench for the embedded Redis; its password comes on standard input.\n\
             port {}\nbind 127.0.0.1\nprotected-mode yes\ndaemonize yes\n\
             pidfile {}\nlogfile {}\ndir {}\nsave \"\"\nappendonly no\n",
            self.port,
            quoted(&self.pidfile())?,
            quoted(&self.log())?,
            quoted(&self.dir)?
        ))
    }

    /// Who answers on our port: asked without a password first (a Redis that needs none, ours
    /// from an earlier capbench or someone else's), then with ours. Every step is bounded.
    fn probe(&self) -> RedisAnswer {
        match server_identity(&self.url_without_password()) {
            Ok(Some((pid, dir))) => RedisAnswer::Redis {
                pid,
                dir,
                open: true,
            },
            Ok(None) => RedisAnswer::Nobody,
            Err(e) if e.code() == Some("NOAUTH") => match server_identity(&self.url()) {
                Ok(Some((pid, dir))) => RedisAnswer::Redis {
                    pid,
                    dir,
                    open: false,
                },
                _ => RedisAnswer::Locked,
            },
            Err(_) => RedisAnswer::Nobody,
        }
    }

    fn is_ours(&self, dir: &Path) -> bool {
        fs::canonicalize(dir).ok() == fs::canonicalize(&self.dir).ok()
    }

    /// Starts our Redis, or reuses it when it runs on this port with this configuration. A
    /// running Redis is never restarted: asked for another port or configuration, this fails and
    /// says how to apply it. A Redis of someone else on the port is never used.
    fn ensure_running(&self) -> Result<()> {
        let running = self.pid();
        if let Some(pid) = running
            && let Ok(recorded) = fs::read_to_string(self.conf_path())
            && recorded != self.conf()?
        {
            match self.recorded_port() {
                Some(port) if port != self.port => bail!(
                    "the embedded Redis of {} (pid {pid}) runs on 127.0.0.1:{port}, not on {} as \
                     asked (CAPBENCH_REDIS_PORT / --redis-port): ask for {port} again, or stop it \
                     first (setup --stop) and it starts on {}",
                    self.dir.display(),
                    self.port,
                    self.port
                ),
                _ => bail!(
                    "the embedded Redis on 127.0.0.1:{} (pid {pid}) runs with other settings than \
                     this capbench's ({} differs): stop it first (setup --stop) to start it with them",
                    self.port,
                    self.conf_path().display()
                ),
            }
        }
        // Ours may be slow to answer on a busy machine: wait for it, never start a second one
        // beside it (it would fail to bind and, leaving, delete the pid file we stop ours by).
        let deadline = Instant::now() + ANSWER_WAIT;
        loop {
            match self.probe() {
                RedisAnswer::Redis { pid, dir, open } if self.is_ours(&dir) => {
                    if open {
                        self.require_password(pid)?;
                    }
                    if self.pid().map(|p| p.as_raw()) != Some(pid) {
                        // Ours, but its pid file is gone: write it again so --stop can stop it.
                        fs::write(self.pidfile(), format!("{pid}\n"))
                            .with_context(|| format!("writing {}", self.pidfile().display()))?;
                    }
                    return Ok(());
                }
                RedisAnswer::Redis { pid, dir, .. } => bail!(
                    "127.0.0.1:{} is served by another Redis (pid {pid}, dir {}): set \
                     CAPBENCH_REDIS_PORT to a free port, or REDIS_URL to use that one",
                    self.port,
                    dir.display()
                ),
                RedisAnswer::Locked => match running {
                    Some(pid) => bail!(
                        "the embedded Redis on 127.0.0.1:{} (pid {pid}) refuses the password in {}: \
                         stop it (setup --stop) and it starts again with that password",
                        self.port,
                        self.secret.display()
                    ),
                    None => bail!(
                        "127.0.0.1:{} is served by another Redis (it asks for a password): set \
                         CAPBENCH_REDIS_PORT to a free port, or REDIS_URL to use that one",
                        self.port
                    ),
                },
                RedisAnswer::Nobody => match running {
                    None => break,
                    Some(pid) if Instant::now() > deadline => bail!(
                        "the embedded Redis (pid {pid}) does not answer on 127.0.0.1:{}: see {} \
                         (if it runs on another port, stop it first: setup --stop)",
                        self.port,
                        self.log().display()
                    ),
                    Some(_) => std::thread::sleep(Duration::from_millis(50)),
                },
            }
        }
        self.start()
    }

    /// A passwordless Redis of ours (an earlier capbench) gets the password without a restart.
    fn require_password(&self, pid: i32) -> Result<()> {
        let client = redis::Client::open(self.url_without_password())?;
        let mut conn = bounded_connection(&client)?;
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg(self.password.as_str())
            .query::<()>(&mut conn)
            .with_context(|| format!("setting the password of the embedded Redis (pid {pid})"))?;
        let as_root = fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .map(|ids| ids.split_whitespace().next() == Some("0"))
            })
            .unwrap_or(false);
        tracing::warn!(
            "the embedded Redis on 127.0.0.1:{} (pid {pid}, from an earlier capbench) ran without \
             a password: it asks for the one in {} now (CONFIG SET, not restarted){}",
            self.port,
            self.secret.display(),
            if as_root {
                "; it still runs as root until it is restarted (setup --stop, then any command)"
            } else {
                ""
            }
        );
        Ok(())
    }

    fn start(&self) -> Result<()> {
        private_dir(&self.dir, self.user.as_ref())?;
        // Files an earlier capbench left (as root) must be the server user's now.
        let _ = fs::remove_file(self.pidfile());
        if let (Some(user), true) = (&self.user, self.log().exists()) {
            user.own(&self.log())?;
        }
        fs::write(self.conf_path(), self.conf()?)
            .with_context(|| format!("writing {}", self.conf_path().display()))?;
        // The password goes on standard input ("-"), never on the command line others can read.
        let mut cmd = Command::new("redis-server");
        cmd.arg(self.conf_path())
            .arg("-")
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(user) = &self.user {
            user.apply(&mut cmd, &self.dir);
        }
        let input = format!("requirepass {}\n", self.password.as_str());
        match run_with_input(cmd, Some(&input)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "redis-server is not installed: run setup/install-deps.sh (or set REDIS_URL to your own Redis)"
            ),
            Err(e) => return Err(e).context("starting redis-server"),
            Ok(out) if !out.status.success() => bail!(
                "redis-server failed to start ({}): see {}",
                last_lines(
                    &format!(
                        "{}\n{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                    2
                ),
                self.log().display()
            ),
            Ok(_) => {}
        }
        let deadline = Instant::now() + ANSWER_WAIT;
        while Instant::now() < deadline {
            if let RedisAnswer::Redis { .. } = self.probe() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let tail = fs::read_to_string(self.log()).unwrap_or_default();
        bail!(
            "the embedded Redis did not answer on 127.0.0.1:{} ({}): see {}",
            self.port,
            last_lines(&tail, 1),
            self.log().display()
        )
    }

    /// Stops ours (by its pid file, whatever port it runs on).
    fn stop(&self) -> Result<String> {
        let Some(pid) = self.pid() else {
            return Ok("Redis: not running".into());
        };
        let port = self.recorded_port().unwrap_or(self.port);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .with_context(|| format!("stopping redis-server (pid {pid})"))?;
        let deadline = Instant::now() + ANSWER_WAIT;
        while nix::sys::signal::kill(pid, None).is_ok() {
            if Instant::now() > deadline {
                bail!("redis-server (pid {pid}) did not stop within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(format!("Redis: stopped (127.0.0.1:{port})"))
    }
}

/// A Redis connection whose connect and every command are bounded (a port that accepts and
/// never answers must not hang a probe).
fn bounded_connection(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let limit = Duration::from_secs(2);
    let conn = client.get_connection_with_timeout(limit)?;
    conn.set_read_timeout(Some(limit))?;
    conn.set_write_timeout(Some(limit))?;
    Ok(conn)
}

/// The pid and working directory of the Redis at `url`; `Ok(None)` when nothing (or nothing
/// that speaks Redis) answers, `Err` when it answers with an error (NOAUTH: it wants a password).
fn server_identity(url: &str) -> redis::RedisResult<Option<(i32, PathBuf)>> {
    let client = redis::Client::open(url)?;
    let mut conn = match bounded_connection(&client) {
        Ok(conn) => conn,
        Err(e) if e.code().is_some() => return Err(e),
        Err(_) => return Ok(None),
    };
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn)?;
    let Some(pid) = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
    else {
        return Ok(None);
    };
    let dir: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query(&mut conn)?;
    Ok(dir.get(1).map(|d| (pid, PathBuf::from(d))))
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}
