//! Why a request failed, as data (oha's pattern): a failed request never aborts a run, it is
//! counted per (method, name, failure). The text of each failure ([`Failure`]'s `Display`) is the
//! `Error` column of Locust's `_failures.csv` and the end-of-run table's `failure:` lines.

use std::fmt;

/// Why one request counts as a failure. A success (an expected 429 of a burst user included) has
/// none.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// An answer with a status its request does not expect: `HTTP 503`.
    Status(u16),
    /// An answer its request's `expect` does not accept: a status with the scenario's own
    /// failure text (the seeds' BurstAgent: `Unexpected status 500`), a body without the text or
    /// the JSON pointer it must have, a body that is not JSON.
    Expectation(String),
    /// A value to extract that the answer does not have: `no /api_key in the answer`.
    Extraction(String),
    /// A request that uses a value not extracted yet (its extraction failed or has not run): the
    /// variable's name. Not sent.
    Unset(String),
    /// The request (or reading its answer) outlasted --timeout, or the connect timeout; the
    /// transport's error chain.
    Timeout(String),
    /// No connection: refused, reset, a name that does not resolve, an address the loopback rule
    /// refuses; the transport's error chain.
    Connect(String),
    /// A redirect that was not followed (elsewhere than this machine, or too many); the
    /// transport's error chain.
    Redirect(String),
    /// An answer whose body could not be read; the transport's error chain.
    Body(String),
    /// Any other transport error; its chain.
    Request(String),
    /// THE search SQL failed, or no pooled connection came in time (open model); the error as one
    /// line.
    Database(String),
    /// A database user without a connection.
    NoConnection,
    /// A database user could not get ready (closed model): its connection or its ef_search; the
    /// error as one line.
    NotReady(String),
}

impl Failure {
    /// A transport error, by what went wrong, with its chain as one line (what failed and why).
    pub fn of_transport(e: &reqwest::Error) -> Self {
        let line = error_line(e);
        if e.is_timeout() {
            Failure::Timeout(line)
        } else if e.is_connect() {
            Failure::Connect(line)
        } else if e.is_redirect() {
            Failure::Redirect(line)
        } else if e.is_body() || e.is_decode() {
            Failure::Body(line)
        } else {
            Failure::Request(line)
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(s) => write!(f, "HTTP {s}"),
            Failure::Unset(name) => write!(
                f,
                "no value for {{{{{name}}}}} yet (its extraction has not succeeded)"
            ),
            Failure::Timeout(m)
            | Failure::Connect(m)
            | Failure::Redirect(m)
            | Failure::Body(m)
            | Failure::Request(m)
            | Failure::Expectation(m)
            | Failure::Extraction(m)
            | Failure::Database(m)
            | Failure::NotReady(m) => f.write_str(m),
            Failure::NoConnection => f.write_str("no connection"),
        }
    }
}

/// A transport error as one line (reqwest's chain: what failed and why).
fn error_line(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_reads_as_locust_files_show_it() {
        let cases = [
            (Failure::Status(503), "HTTP 503"),
            (
                Failure::Expectation("Unexpected status 500".into()),
                "Unexpected status 500",
            ),
            (
                Failure::Extraction("no /api_key in the answer".into()),
                "no /api_key in the answer",
            ),
            (
                Failure::Unset("token".into()),
                "no value for {{token}} yet (its extraction has not succeeded)",
            ),
            (Failure::NoConnection, "no connection"),
            (
                Failure::Timeout("error sending request: operation timed out".into()),
                "error sending request: operation timed out",
            ),
            (Failure::Connect("refused".into()), "refused"),
            (Failure::Redirect("redirect".into()), "redirect"),
            (Failure::Body("body".into()), "body"),
            (Failure::Request("request".into()), "request"),
            (
                Failure::Database("canceling statement".into()),
                "canceling statement",
            ),
            (Failure::NotReady("connecting".into()), "connecting"),
        ];
        for (failure, text) in cases {
            assert_eq!(failure.to_string(), text, "{failure:?}");
        }
    }

    #[test]
    fn failures_are_keys() {
        // Counted per (method, name, failure): equal failures are one key, a different status or
        // message another.
        let mut counts = std::collections::BTreeMap::new();
        for f in [
            Failure::Status(503),
            Failure::Status(503),
            Failure::Status(502),
            Failure::Connect("refused".into()),
            Failure::Connect("refused".into()),
            Failure::Connect("reset".into()),
        ] {
            *counts.entry(("POST", "/api/v1/keys", f)).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4);
        assert_eq!(counts[&("POST", "/api/v1/keys", Failure::Status(503))], 2);
        assert_eq!(
            counts[&("POST", "/api/v1/keys", Failure::Connect("refused".into()))],
            2
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure_with_its_chain() {
        // A port nothing listens on (bound, then closed): the transport's own error, classified.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        crate::install_tls_provider();
        let e = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .expect_err("nothing listens there");
        let failure = Failure::of_transport(&e);
        assert!(matches!(failure, Failure::Connect(_)), "{failure:?}");
        let text = failure.to_string();
        assert!(text.starts_with(&e.to_string()), "{text}");
        assert_eq!(text, error_line(&e));
    }
}
