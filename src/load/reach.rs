//! The loopback rule: a load test is an attack on whatever it points at, so `load` sends traffic to
//! this machine only, unless `--allow-remote`. The rule is checked on the addresses actually
//! connected to, not on the text of the URL:
//!
//! - HTTP: every host name is resolved through [`LocalResolver`], which refuses a name with an
//!   address elsewhere; an IP literal skips name resolution, so the target's is checked before the
//!   run and every redirect's by the client's redirect policy; no proxy is used (it would receive
//!   the traffic).
//! - PostgreSQL: the URL is judged on the host sqlx connects to — the `host` and `hostaddr`
//!   parameters, PGHOST/PGHOSTADDR, a Unix socket — not on its authority.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result, bail};
use sqlx::postgres::PgConnectOptions;

use crate::secrets::redact;

/// Where load may go.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Reach {
    /// Anywhere (`--allow-remote`).
    Anywhere,
    /// This machine: every loopback address (127.0.0.0/8 and ::1, also IPv4-mapped).
    #[default]
    Loopback,
    /// These addresses only: a narrower "this machine", with which a test lets a second loopback
    /// address (127.0.0.2) stand for a remote host without a packet leaving the machine.
    Only(Vec<IpAddr>),
}

impl Reach {
    /// Whether traffic may go to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self {
            Reach::Anywhere => true,
            Reach::Loopback => ip.is_loopback(),
            Reach::Only(allowed) => allowed.iter().any(|a| a.to_canonical() == ip),
        }
    }

    /// The addresses `host` (a name or an IP literal) stands for, if traffic may go to every one of
    /// them; otherwise the refusal, naming them.
    pub async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .with_context(|| format!("resolving {bare}"))?
                .collect(),
        };
        if addrs.is_empty() {
            bail!("{bare} resolves to no address");
        }
        if !addrs.iter().all(|a| self.allows(a.ip())) {
            let ips: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            let shown = if ips.len() == 1 && ips[0] == bare {
                bare.to_string()
            } else {
                format!("{bare} ({})", ips.join(", "))
            };
            bail!(refusal(&shown));
        }
        Ok(addrs)
    }

    /// Refuses an http(s) URL whose host is not this machine (unless anywhere is allowed).
    pub async fn check_http(&self, url: &str) -> Result<()> {
        if *self == Reach::Anywhere {
            return Ok(());
        }
        let parsed =
            reqwest::Url::parse(url).with_context(|| format!("'{}' is not a URL", redact(url)))?;
        let Some(host) = parsed.host_str() else {
            bail!("'{}' has no host", redact(url));
        };
        self.addresses(host, parsed.port_or_known_default().unwrap_or(0))
            .await?;
        Ok(())
    }

    /// Refuses a postgres:// URL that connects elsewhere than this machine (unless anywhere is
    /// allowed), judged on the host sqlx connects to: a `host` or `hostaddr` parameter overrides the
    /// URL's authority, and PGHOST / PGHOSTADDR / PGPORT fill in what the URL leaves out.
    pub async fn check_postgres(&self, url: &str) -> Result<()> {
        if *self == Reach::Anywhere {
            return Ok(());
        }
        let options: PgConnectOptions = url
            .parse()
            .with_context(|| format!("invalid database URL {}", redact(url)))?;
        let host = options.get_host();
        if options.get_socket().is_some() || host.starts_with('/') {
            return Ok(()); // A Unix socket: this machine by nature.
        }
        self.addresses(host, options.get_port())
            .await
            .with_context(|| format!("{} connects to {host}", redact(url)))?;
        Ok(())
    }

    /// `builder` made to keep this rule: names resolved through [`LocalResolver`], redirects to an
    /// IP literal elsewhere refused, no proxy. Anywhere: `builder` as it is.
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        if *self == Reach::Anywhere {
            return builder;
        }
        let reach = self.clone();
        builder
            .no_proxy()
            .dns_resolver(LocalResolver(self.clone()))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                let literal = match attempt.url().host() {
                    Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                    Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                    // A name goes through the resolver, which checks what it resolves to.
                    Some(url::Host::Domain(_)) | None => None,
                };
                if let Some(ip) = literal.filter(|ip| !reach.allows(*ip)) {
                    let refused = format!(
                        "redirect to {}: {}",
                        attempt.url(),
                        refusal(&ip.to_string())
                    );
                    attempt.error(refused)
                } else if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                } else {
                    attempt.follow()
                }
            }))
    }
}

/// Redirects followed at most (reqwest's default).
const MAX_REDIRECTS: usize = 10;

fn refusal(host: &str) -> String {
    format!(
        "refusing to load {host}, which is not this machine: pass --allow-remote if you own it and mean it"
    )
}

/// A name resolver for the HTTP client that refuses a name resolving to an address load may not
/// send to: the check happens on the addresses the client then connects to.
#[derive(Debug, Clone)]
pub struct LocalResolver(pub Reach);

impl reqwest::dns::Resolve for LocalResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (reach, host) = (self.0.clone(), name.as_str().to_string());
        Box::pin(async move {
            let addrs = reach.addresses(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
