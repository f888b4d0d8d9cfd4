//! The private PostgreSQL cluster: init, start, reuse, stop.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

use super::*;
use crate::config::Servers;

/// A private PostgreSQL cluster under `home/pg`.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    pub(super) bindir: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) port: u16,
    pub(super) user: Option<ServerUser>,
    /// The role's password, from [`SECRET_FILE`] beside `dir`.
    pub(super) password: Password,
    pub(super) secret: PathBuf,
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

    pub(super) fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub(super) fn log(&self) -> PathBuf {
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
    pub(super) fn run(
        &self,
        program: &str,
        args: &[&std::ffi::OsStr],
        input: Option<&str>,
    ) -> Result<Output> {
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

    pub(super) fn pg_ctl(&self, action: &str, extra: &[&std::ffi::OsStr]) -> Result<Output> {
        let data = self.data();
        let mut args: Vec<&std::ffi::OsStr> =
            vec![action.as_ref(), "-D".as_ref(), data.as_os_str()];
        args.extend_from_slice(extra);
        self.run("pg_ctl", &args, None)
    }

    pub(super) fn chown(&self, path: &Path) -> Result<()> {
        match &self.user {
            Some(user) => user.own(path),
            None => Ok(()),
        }
    }

    pub(super) fn is_running(&self) -> Result<bool> {
        if !self.data().join("PG_VERSION").exists() {
            return Ok(false);
        }
        Ok(self.pg_ctl("status", &[])?.status.success())
    }

    /// The port the running server listens on (line 4 of `postmaster.pid`).
    pub(super) fn running_port(&self) -> Option<u16> {
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
    pub(super) fn conf(&self) -> String {
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
    pub(super) fn password_sql(&self) -> String {
        format!(
            "SET log_statement = 'none';\nSET log_min_duration_statement = -1;\n\
             SET password_encryption = 'scram-sha-256';\n\
             ALTER ROLE {} PASSWORD '{}';\n",
            quote_ident(LOCAL_ROLE),
            self.password.as_str()
        )
    }

    /// Writes a file of the cluster (as its user, readable by it alone).
    pub(super) fn write_owned(&self, path: &Path, text: &str) -> Result<()> {
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 600 {}", path.display()))?;
        self.chown(path)
    }

    pub(super) fn init(&self) -> Result<()> {
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
    pub(super) fn set_password_stopped(&self) -> Result<()> {
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
    pub(super) fn require_password_running(&self) -> Result<()> {
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

    /// Stops the cluster and starts it again, with `settings` (`shared_buffers=128MB`, …) given on
    /// the server's command line for this start only (`pg_ctl start -o "-c …"`): the next restart
    /// without them is back to setup/postgres.conf. Settings are checked to be `name=value` words.
    pub fn restart_with(&self, settings: &[String]) -> Result<()> {
        for s in settings {
            let ok = s.split_once('=').is_some_and(|(n, v)| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                    && !v.is_empty()
                    && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
            });
            if !ok {
                bail!("not a server setting of the form name=value: '{s}'");
            }
        }
        if self.is_running()? {
            self.stop()?;
        }
        let options: String = settings.iter().map(|s| format!("-c {s} ")).collect();
        let log = self.log();
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "-l".as_ref(),
            log.as_os_str(),
            "-w".as_ref(),
            "-t".as_ref(),
            "120".as_ref(),
        ];
        if !options.is_empty() {
            args.push("-o".as_ref());
            args.push(options.trim_end().as_ref());
        }
        let out = self.pg_ctl("start", &args)?;
        if !out.status.success() {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "the embedded PostgreSQL did not start again on 127.0.0.1:{} with [{}] ({}): see {}",
                self.port,
                settings.join(", "),
                last_lines(&tail, 2),
                log.display()
            );
        }
        Ok(())
    }

    /// Asks the kernel to drop the cached pages of the relation files `relative` (paths as
    /// `pg_relation_filepath` gives them, under the data directory; every 1 GB segment of each):
    /// `posix_fadvise(POSIX_FADV_DONTNEED)`, which needs no privilege and empties the OS page
    /// cache of exactly these files (of their clean pages: call it with the server stopped, after
    /// its shutdown checkpoint). Returns the files advised.
    pub fn drop_os_cache(&self, relative: &[String]) -> Result<usize> {
        let mut files = 0;
        for rel in relative {
            let base = self.data().join(rel);
            for segment in 0.. {
                let path = if segment == 0 {
                    base.clone()
                } else {
                    PathBuf::from(format!("{}.{segment}", base.display()))
                };
                let Ok(file) = File::open(&path) else {
                    if segment == 0 {
                        bail!("no relation file {}", path.display());
                    }
                    break;
                };
                nix::fcntl::posix_fadvise(
                    &file,
                    0,
                    0,
                    nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
                )
                .with_context(|| format!("posix_fadvise(DONTNEED) of {}", path.display()))?;
                files += 1;
            }
        }
        Ok(files)
    }
}

/// Runs `cmd`, writing `input` to its standard input (then closing it), and collects its output.
pub(super) fn run_with_input(mut cmd: Command, input: Option<&str>) -> std::io::Result<Output> {
    let mut child = cmd.spawn()?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A program that exits early closes its end: its output says why, not this write.
        let _ = stdin.write_all(text.as_bytes());
    }
    child.wait_with_output()
}
