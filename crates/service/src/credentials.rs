//! Which credentials rl-v2 authenticates with, and URLs that are safe to log.
//!
//! Credentials come from the settings (`nats.user` + `nats.password`, `nats.token`,
//! `nats.creds_file`) or from the URL itself, as NATS clients accept it:
//! `nats://user:password@host` is user/password, `nats://token@host` (a user part without a
//! password) is a token. The client library does not read credentials out of a URL, so they are
//! taken out here, given to it explicitly, and the URLs it connects to carry none (its own debug
//! logs print server addresses). Two sources that say different things are refused at start-up,
//! naming the key: a token beside a user/password, a `.creds` file beside either, URLs whose
//! credentials differ from each other or from the settings.
//!
//! Every URL that reaches a log line or an error message goes through [`redact`].

use crate::settings::NatsSettings;

/// What the URL shows in place of a secret.
const REDACTED: &str = "***";

/// How rl-v2 authenticates to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials.
    None,
    /// User and password.
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// A token.
    Token(String),
    /// A `.creds` file (JWT and NKey seed).
    CredsFile(String),
}

/// A contradiction or a malformed URL, with the settings key it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` {problem}")]
pub struct CredentialsError {
    /// The settings key to fix.
    pub key: &'static str,
    /// What is wrong (never containing a secret).
    pub problem: String,
}

fn refuse(key: &'static str, problem: impl Into<String>) -> CredentialsError {
    CredentialsError {
        key,
        problem: problem.into(),
    }
}

/// `nats.url` with every secret replaced by `***`: the password of `user:password@`, and the
/// whole user part of `token@`. Entries that do not parse keep only what follows their `@`.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| redact_one(one.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    // The user part ends at the last `@` before the path.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_string(),
    };
    format!("{scheme}{shown}{}", &rest[at..])
}

/// Decodes `%XX` escapes, as URLs carry reserved characters of user names and passwords.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The servers of `nats.url`, parsed, with the credentials each carried removed.
fn parse_servers(s: &NatsSettings) -> Result<Vec<(String, Credentials)>, CredentialsError> {
    let mut out = Vec::new();
    for raw in s.servers() {
        let addr = raw.parse::<async_nats::ServerAddr>().map_err(|_| {
            refuse(
                "nats.url",
                format!("`{}` is not a NATS server URL", redact_one(&raw)),
            )
        })?;
        let found = match (addr.username(), addr.password()) {
            (Some(user), Some(password)) => Credentials::UserPassword {
                user: percent_decode(user),
                password: percent_decode(password),
            },
            (Some(token), None) => Credentials::Token(percent_decode(token)),
            (None, Some(_)) => {
                return Err(refuse(
                    "nats.url",
                    format!("`{}` has a password but no user", redact_one(&raw)),
                ))
            }
            (None, None) => Credentials::None,
        };
        let mut url = addr.into_inner();
        let _ = url.set_password(None);
        let _ = url.set_username("");
        out.push((url.to_string(), found));
    }
    Ok(out)
}

/// The URLs to connect to, without credentials.
pub fn connect_urls(s: &NatsSettings) -> Vec<String> {
    match parse_servers(s) {
        Ok(servers) => servers.into_iter().map(|(url, _)| url).collect(),
        // Validated at start-up; a bad URL here fails at connection time, redacted.
        Err(_) => s.servers().iter().map(|u| redact_one(u)).collect(),
    }
}

/// The one set of credentials the settings and the URL agree on, or which key contradicts.
pub fn resolve(s: &NatsSettings) -> Result<Credentials, CredentialsError> {
    if s.password.is_empty() != s.user.is_empty() {
        let key = if s.user.is_empty() {
            "nats.user"
        } else {
            "nats.password"
        };
        return Err(refuse(key, "nats.user and nats.password go together"));
    }
    let mut from_settings = Vec::new();
    if !s.user.is_empty() {
        from_settings.push((
            "nats.user",
            Credentials::UserPassword {
                user: s.user.clone(),
                password: s.password.clone(),
            },
        ));
    }
    if !s.token.is_empty() {
        from_settings.push(("nats.token", Credentials::Token(s.token.clone())));
    }
    if !s.creds_file.is_empty() {
        from_settings.push((
            "nats.creds_file",
            Credentials::CredsFile(s.creds_file.clone()),
        ));
    }
    if from_settings.len() > 1 {
        let keys: Vec<&str> = from_settings.iter().map(|(k, _)| *k).collect();
        return Err(refuse(
            from_settings[1].0,
            format!(
                "contradicts {}: use one of user/password, token or creds_file",
                keys[0]
            ),
        ));
    }
    // Every URL that carries credentials must carry the same ones.
    let mut from_url: Option<Credentials> = None;
    for (_, found) in parse_servers(s)? {
        if found == Credentials::None {
            continue;
        }
        match &from_url {
            Some(first) if *first != found => {
                return Err(refuse(
                    "nats.url",
                    "its URLs carry different credentials: give them once (in the URLs or in \
                     nats.user/nats.password/nats.token)",
                ))
            }
            _ => from_url = Some(found),
        }
    }
    match (from_settings.pop(), from_url) {
        (None, None) => Ok(Credentials::None),
        (Some((_, c)), None) | (None, Some(c)) => Ok(c),
        (Some((_, settings)), Some(url)) if settings == url => Ok(settings),
        (Some((key, _)), Some(_)) => Err(refuse(
            key,
            "contradicts the credentials in nats.url: give them in one place",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nats(url: &str, user: &str, password: &str, token: &str, creds: &str) -> NatsSettings {
        let mut s = crate::settings::Settings::defaults().nats;
        s.url = url.into();
        s.user = user.into();
        s.password = password.into();
        s.token = token.into();
        s.creds_file = creds.into();
        s
    }

    #[test]
    fn url_credentials_are_used_and_removed_from_the_url() {
        let s = nats("nats://alice:s%40cret@127.0.0.1:4222", "", "", "", "");
        assert_eq!(
            resolve(&s).unwrap(),
            Credentials::UserPassword {
                user: "alice".into(),
                password: "s@cret".into()
            }
        );
        assert_eq!(connect_urls(&s), vec!["nats://127.0.0.1:4222"]);
        let t = nats("nats://tok3n@h:4222", "", "", "", "");
        assert_eq!(resolve(&t).unwrap(), Credentials::Token("tok3n".into()));
        assert_eq!(connect_urls(&t), vec!["nats://h:4222"]);
    }

    #[test]
    fn redaction_hides_passwords_and_tokens() {
        assert_eq!(
            redact("nats://alice:s3cret@h:4222, tls://tok3n@g:4443,nats://plain:4222"),
            "nats://alice:***@h:4222,tls://***@g:4443,nats://plain:4222"
        );
        assert_eq!(redact("alice:pw@h"), "alice:***@h");
        assert_eq!(redact("nats://h:4222/x@y"), "nats://h:4222/x@y");
    }

    #[test]
    fn contradictions_name_the_key() {
        let key = |s: NatsSettings| resolve(&s).unwrap_err().key;
        assert_eq!(key(nats("nats://h", "u", "p", "t", "")), "nats.token");
        assert_eq!(
            key(nats("nats://h", "", "", "t", "f.creds")),
            "nats.creds_file"
        );
        assert_eq!(key(nats("nats://u:p@h", "u", "other", "", "")), "nats.user");
        assert_eq!(key(nats("nats://tok@h", "u", "p", "", "")), "nats.user");
        assert_eq!(key(nats("nats://u:p@h", "", "", "t", "")), "nats.token");
        assert_eq!(
            key(nats("nats://u:p@a,nats://u:q@b", "", "", "", "")),
            "nats.url"
        );
        assert_eq!(key(nats("nats://h", "u", "", "", "")), "nats.password");
        // The same credentials twice are not a contradiction.
        assert!(resolve(&nats("nats://u:p@a,nats://b", "u", "p", "", "")).is_ok());
        assert_eq!(
            resolve(&nats("nats://a", "", "", "", "")).unwrap(),
            Credentials::None
        );
    }

    #[test]
    fn errors_never_carry_the_secret() {
        let err = resolve(&nats("nats://u:s3cret@a,nats://u:other@b", "", "", "", ""))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret") && !err.contains("other"), "{err}");
        let err = resolve(&nats("nats://u:s3cret@::bad::", "", "", "", ""))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
