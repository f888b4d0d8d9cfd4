//! The private Redis: start, reuse, stop, and what answers on its port.

use std::fs::{self};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::*;
use crate::config::Servers;

/// What answers on the embedded Redis's port.
pub(super) enum RedisAnswer {
    /// Nothing, or nothing that speaks Redis within the probe's time.
    Nobody,
    /// A Redis that let us in, without a password (`open`) or with ours.
    Redis { pid: i32, dir: PathBuf, open: bool },
    /// A Redis that wants a password, and not ours.
    Locked,
}

/// A private Redis under `home/redis`, without persistence (it holds only rate-limiter state).
#[derive(Debug, Clone)]
pub(super) struct LocalRedis {
    pub(super) dir: PathBuf,
    pub(super) port: u16,
    pub(super) user: Option<ServerUser>,
    pub(super) password: Password,
    pub(super) secret: PathBuf,
}

impl LocalRedis {
    pub(super) fn new(servers: &Servers) -> Result<Self> {
        let secret = servers.home.join(SECRET_FILE);
        Ok(Self {
            dir: servers.home.join("redis"),
            port: servers.redis_port,
            user: server_user()?,
            password: stack_password(&secret)?,
            secret,
        })
    }

    pub(super) fn url(&self) -> String {
        format!(
            "redis://:{}@127.0.0.1:{}",
            self.password.as_str(),
            self.port
        )
    }

    /// For asking who answers, and for a Redis of an earlier capbench (which had no password).
    pub(super) fn url_without_password(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(super) fn pidfile(&self) -> PathBuf {
        self.dir.join("redis.pid")
    }

    pub(super) fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// The configuration the running Redis was started with (its password is not in it).
    pub(super) fn conf_path(&self) -> PathBuf {
        self.dir.join("redis.conf")
    }

    /// Ours, by its pid file, if it runs.
    pub(super) fn pid(&self) -> Option<nix::unistd::Pid> {
        let pid: i32 = fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, None).ok().map(|_| pid)
    }

    /// The port in the configuration ours was started with.
    pub(super) fn recorded_port(&self) -> Option<u16> {
        fs::read_to_string(self.conf_path())
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("port "))?
            .trim()
            .parse()
            .ok()
    }

    pub(super) fn conf(&self) -> Result<String> {
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
    pub(super) fn probe(&self) -> RedisAnswer {
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

    pub(super) fn is_ours(&self, dir: &Path) -> bool {
        fs::canonicalize(dir).ok() == fs::canonicalize(&self.dir).ok()
    }

    /// Starts our Redis, or reuses it when it runs on this port with this configuration. A
    /// running Redis is never restarted: asked for another port or configuration, this fails and
    /// says how to apply it. A Redis of someone else on the port is never used.
    pub(super) fn ensure_running(&self) -> Result<()> {
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
    pub(super) fn require_password(&self, pid: i32) -> Result<()> {
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

    pub(super) fn start(&self) -> Result<()> {
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
    pub(super) fn stop(&self) -> Result<String> {
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
pub(super) fn bounded_connection(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let limit = Duration::from_secs(2);
    let conn = client.get_connection_with_timeout(limit)?;
    conn.set_read_timeout(Some(limit))?;
    conn.set_write_timeout(Some(limit))?;
    Ok(conn)
}

/// The pid and working directory of the Redis at `url`; `Ok(None)` when nothing (or nothing
/// that speaks Redis) answers, `Err` when it answers with an error (NOAUTH: it wants a password).
pub(super) fn server_identity(url: &str) -> redis::RedisResult<Option<(i32, PathBuf)>> {
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
