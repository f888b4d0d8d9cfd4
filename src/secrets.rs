//! Secrets stay secret: every URL or connection string capbench prints, logs or stores goes
//! through [`redact`], and every line it prints, every run record and every report page goes
//! through [`scrub`], which removes each secret the process has seen ([`remember`]) wherever it
//! appears — also inside another library's error message.
//!
//! Forms covered: `scheme://user:password@host` (also with a raw `/`, `@` or `:` in the password),
//! query parameters (`?password=…`, `sslpassword`, `passwd`, `pwd`, `secret`, `token`, `api_key`,
//! `apikey`, `key`, `access_token`, `auth`, `sig`), libpq key=value strings (`host=… password=…`,
//! quoted values too), and a user name alone (`redis://:password@host`).

use std::collections::BTreeSet;
use std::sync::{LazyLock, RwLock};

/// What replaces a secret.
pub const MASK: &str = "***";

/// Query and key=value parameter names whose values are secrets.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "sslpassword",
    "secret",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "auth",
    "sig",
];

/// Secrets shorter than this are not scrubbed from free text (they would mask ordinary words and
/// digits); they are still removed from the URLs they came in.
const MIN_SCRUB_LEN: usize = 3;

static SEEN: LazyLock<RwLock<BTreeSet<String>>> = LazyLock::new(RwLock::default);

fn is_secret_param(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    SECRET_PARAMS.contains(&name.as_str())
}

/// Remembers `secret` so that [`scrub`] removes it from any text (in clear and percent-encoded).
pub fn remember(secret: &str) {
    let secret = secret.trim();
    if secret.chars().count() < MIN_SCRUB_LEN {
        return;
    }
    let mut seen = SEEN.write().unwrap_or_else(|e| e.into_inner());
    seen.insert(secret.to_string());
    let encoded = percent_encode(secret);
    if encoded != secret {
        seen.insert(encoded);
    }
    if let Ok(decoded) = percent_decode(secret)
        && decoded != secret
        && decoded.chars().count() >= MIN_SCRUB_LEN
    {
        seen.insert(decoded);
    }
}

/// Remembers every secret inside a URL or connection string (see [`secrets_in`]).
pub fn remember_in(text: &str) {
    for s in secrets_in(text) {
        remember(&s);
    }
}

/// `text` with every remembered secret replaced by `***`, longest first.
pub fn scrub(text: &str) -> String {
    let seen = SEEN.read().unwrap_or_else(|e| e.into_inner());
    if seen.is_empty() {
        return text.to_string();
    }
    let mut secrets: Vec<&String> = seen.iter().collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// The secrets inside a URL or a key=value connection string: the userinfo password, secret query
/// parameters, secret key=value pairs.
pub fn secrets_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some((_, userinfo, _)) = split_userinfo(text)
        && let Some((_, password)) = userinfo.split_once(':')
        && !password.is_empty()
    {
        found.push(password.to_string());
    }
    for (name, value) in query_pairs(text).into_iter().chain(keyword_pairs(text)) {
        if is_secret_param(&name) && !value.is_empty() {
            found.push(value);
        }
    }
    found
}

/// `text` (a URL, a connection string, or a line holding them) with its passwords and secret
/// parameters replaced by `***`; the user name, host, port and database stay readable.
pub fn redact(text: &str) -> String {
    remember_in(text);
    let mut out = text.to_string();
    if let Some((before, userinfo, after)) = split_userinfo(&out)
        && let Some((user, password)) = userinfo.split_once(':')
        && !password.is_empty()
    {
        out = format!("{before}{user}:{MASK}@{after}");
    }
    out = redact_query(&out);
    out = redact_keywords(&out);
    scrub(&out)
}

/// Splits `scheme://userinfo@rest` into (`scheme://`, userinfo, rest). The userinfo ends at the
/// last `@` before the query or fragment, so a password with a raw `/`, `:` or `@` is covered
/// whole (a strict URL parser would have cut it at the `/`).
fn split_userinfo(text: &str) -> Option<(&str, &str, &str)> {
    let start = text.find("://")? + 3;
    let rest = &text[start..];
    // The authority cannot hold whitespace; stop there when the URL is inside a longer line.
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '?' || c == '#' || c == '"' || c == '\'')
        .unwrap_or(rest.len());
    let at = rest[..end].rfind('@')?;
    Some((&text[..start], &rest[..at], &rest[at + 1..]))
}

/// The `name=value` pairs of the query of a URL in `text`.
fn query_pairs(text: &str) -> Vec<(String, String)> {
    let Some(q) = text
        .find("://")
        .and_then(|s| text[s..].find('?').map(|q| s + q + 1))
    else {
        return Vec::new();
    };
    let end = text[q..]
        .find(|c: char| c.is_whitespace() || c == '#' || c == '"' || c == '\'')
        .map_or(text.len(), |e| q + e);
    text[q..end]
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            let v = percent_decode(v).unwrap_or_else(|_| v.to_string());
            (k.to_string(), v)
        })
        .collect()
}

fn redact_query(text: &str) -> String {
    let Some(q) = text
        .find("://")
        .and_then(|s| text[s..].find('?').map(|q| s + q + 1))
    else {
        return text.to_string();
    };
    let end = text[q..]
        .find(|c: char| c.is_whitespace() || c == '#' || c == '"' || c == '\'')
        .map_or(text.len(), |e| q + e);
    let redacted: Vec<String> = text[q..end]
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if is_secret_param(k) && !v.is_empty() => format!("{k}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{}{}{}", &text[..q], redacted.join("&"), &text[end..])
}

/// libpq's key=value form: `host=h port=5432 password='a b' user=u`. Only when the text is not a
/// URL (a URL's query is handled by [`query_pairs`]).
fn keyword_pairs(text: &str) -> Vec<(String, String)> {
    keyword_spans(text)
        .into_iter()
        .map(|(k, _, v)| (k, v))
        .collect()
}

/// (name, byte range of the value as written, unquoted value) of each key=value pair.
fn keyword_spans(text: &str) -> Vec<(String, std::ops::Range<usize>, String)> {
    if text.contains("://") {
        return Vec::new();
    }
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        // A name: letters, digits, '_' or '-', then optional spaces, then '='.
        let start = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'-')
        {
            i += 1;
        }
        let name = &text[start..i];
        let mut j = i;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if name.is_empty() || j >= bytes.len() || bytes[j] != b'=' {
            if i == start {
                // Not a name: step over one whole character (text may hold non-ASCII ones).
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        let value_start = j;
        let mut value = String::new();
        if j < bytes.len() && bytes[j] == b'\'' {
            j += 1;
            while j < bytes.len() && bytes[j] != b'\'' {
                if bytes[j] == b'\\' && j + 1 < bytes.len() {
                    j += 1;
                }
                let c = text[j..].chars().next().unwrap_or(' ');
                value.push(c);
                j += c.len_utf8();
            }
            j = (j + 1).min(bytes.len());
        } else {
            while j < bytes.len() && !bytes[j].is_ascii_whitespace() {
                let c = text[j..].chars().next().unwrap_or(' ');
                value.push(c);
                j += c.len_utf8();
            }
        }
        spans.push((name.to_string(), value_start..j, value));
        i = j;
    }
    spans
}

fn redact_keywords(text: &str) -> String {
    let mut out = text.to_string();
    for (name, range, value) in keyword_spans(text).into_iter().rev() {
        if is_secret_param(&name) && !value.is_empty() {
            out.replace_range(range, MASK);
        }
    }
    out
}

fn percent_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn percent_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_password_is_masked() {
        assert_eq!(
            redact("postgres://u:hunter22@127.0.0.1:5432/db"),
            "postgres://u:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            redact("redis://:sesame42@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("http://127.0.0.1:8000"), "http://127.0.0.1:8000");
        assert_eq!(
            redact("postgres://u@localhost/db"),
            "postgres://u@localhost/db"
        );
    }

    #[test]
    fn a_raw_slash_or_at_in_the_password_is_masked_whole() {
        let shown = redact("postgres://u:pa/ss@w0rd@127.0.0.1/db");
        assert_eq!(shown, "postgres://u:***@127.0.0.1/db");
        assert!(!shown.contains("pa/ss"));
    }

    #[test]
    fn query_and_keyword_passwords_are_masked() {
        let shown = redact("postgres://u@127.0.0.1/db?sslmode=disable&password=topsecret1");
        assert_eq!(
            shown,
            "postgres://u@127.0.0.1/db?sslmode=disable&password=***"
        );
        let shown = redact("host=127.0.0.1 port=5432 password='two words' user=u");
        assert_eq!(shown, "host=127.0.0.1 port=5432 password=*** user=u");
        let shown = redact("host=127.0.0.1 password=plainpw user=u");
        assert_eq!(shown, "host=127.0.0.1 password=*** user=u");
        let shown = redact("redis://127.0.0.1:6379/?password=redispw9");
        assert!(!shown.contains("redispw9"), "{shown}");
    }

    #[test]
    fn remembered_secrets_are_scrubbed_anywhere() {
        remember_in("postgres://u:c0rrect-h0rse@127.0.0.1/db");
        let line = "error: connecting failed: password authentication failed (c0rrect-h0rse)";
        assert!(!scrub(line).contains("c0rrect-h0rse"));
        // Percent-encoded too.
        remember("p@ss w0rd!");
        assert!(!scrub("url postgres://u:p%40ss%20w0rd%21@h/db").contains("w0rd"));
        // Short ones are not scrubbed from free text (they would eat ordinary words).
        remember("ab");
        assert_eq!(scrub("a tab"), "a tab");
    }

    #[test]
    fn secrets_in_lists_each_form() {
        assert_eq!(secrets_in("http://a:b1c2@127.0.0.1/"), vec!["b1c2"]);
        assert_eq!(secrets_in("postgres://h/db?password=x%2Fy"), vec!["x/y"]);
        assert_eq!(secrets_in("dbname=d password='q r'"), vec!["q r"]);
        assert!(secrets_in("postgres://u@127.0.0.1/db?host=127.0.0.2").is_empty());
    }
}
