//! The distribution authentication handshake, done here rather than by a library so that each
//! step is bounded and checked: `GET /v2/` without credentials, the `WWW-Authenticate`
//! challenges of its 401 (RFC 9110 §11: schemes, `name=value` parameters with quoted strings,
//! several challenges per header and several headers), then for a Bearer challenge the token
//! request to its realm (a GET with the credentials as Basic auth, as docker does; the reply
//! read to at most [`MAX_TOKEN_BODY`]).
//!
//! The realm is a URL the registry chooses, so it is checked like one: no link-local or
//! metadata address, not denied by policy, and HTTPS unless the realm host itself may be
//! spoken to in plain HTTP (loopback or `--insecure-registry`) and the registry is too. It
//! may be on another host (Docker Hub's is `auth.docker.io`); credentials go there only
//! under these rules.

use super::address_policy::AddressPolicy;
use super::auth::{RegistryAuth, basic_header};
use super::client::classify_handshake_error;
use super::error::{PermanentCause, RegistryError, RegistryResult};
use futures_util::StreamExt;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use std::time::Duration;

/// Token replies are a few hundred bytes to a few KiB (a JWT); anything larger is refused.
pub const MAX_TOKEN_BODY: usize = 64 << 10;
/// An error body of a token endpoint: only its start goes into the message.
const MAX_ERROR_BODY: usize = 4 << 10;
/// A `WWW-Authenticate` value longer than this is refused unparsed.
const MAX_CHALLENGE_LEN: usize = 16 << 10;
/// Challenges, and parameters per challenge, beyond these are refused.
const MAX_CHALLENGES: usize = 16;
const MAX_PARAMS: usize = 32;
/// The token spec's default lifetime when the reply gives none (and its minimum).
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
/// Tokens are reused at most this long whatever the reply says.
const MAX_TOKEN_LIFETIME: u64 = 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lower case (`basic`, `bearer`).
    pub scheme: String,
    /// Names lower case, values unescaped.
    pub params: Vec<(String, String)>,
    /// The `token68` form (`Negotiate abc==`), when the challenge has one instead of params.
    pub token68: Option<String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_token68_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~+/".contains(&c)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn quoted(&mut self) -> Result<String, String> {
        // At the opening quote.
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string".into()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c) if c == b'\t' || (0x20..0x7f).contains(&c) => {
                            out.push(c);
                            self.i += 1;
                        }
                        _ => return Err("bad escape in quoted string".into()),
                    }
                }
                Some(c) if c == b'\t' || (0x20..0x7f).contains(&c) => {
                    out.push(c);
                    self.i += 1;
                }
                Some(c) => return Err(format!("byte 0x{c:02x} in quoted string")),
            }
        }
    }
    fn at_end_of_item(&mut self) -> bool {
        let save = self.i;
        self.skip_ws();
        let end = matches!(self.peek(), None | Some(b','));
        self.i = save;
        end
    }
}

/// Every challenge of the given `WWW-Authenticate` values, in order.
pub fn parse_challenges<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Challenge>, String> {
    let mut out = Vec::new();
    for value in values {
        if value.len() > MAX_CHALLENGE_LEN {
            return Err(format!(
                "WWW-Authenticate header of {} bytes (at most {MAX_CHALLENGE_LEN})",
                value.len()
            ));
        }
        parse_header(value, &mut out)?;
    }
    Ok(out)
}

fn parse_header(value: &[u8], out: &mut Vec<Challenge>) -> Result<(), String> {
    let mut c = Cursor { s: value, i: 0 };
    let mut pending_scheme: Option<String> = None;
    loop {
        c.skip_ws_and_commas();
        let scheme = match pending_scheme.take() {
            Some(s) => s,
            None => {
                if c.peek().is_none() {
                    return Ok(());
                }
                c.token().ok_or_else(|| {
                    format!(
                        "expected an auth scheme at byte {} of {:?}",
                        c.i,
                        shown(value)
                    )
                })?
            }
        };
        if out.len() >= MAX_CHALLENGES {
            return Err(format!("more than {MAX_CHALLENGES} challenges"));
        }
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: Vec::new(),
            token68: None,
        };
        c.skip_ws();
        // Either nothing, a token68, or name=value parameters separated by commas; a name
        // not followed by `=` after a comma starts the next challenge.
        let mut first = true;
        loop {
            c.skip_ws();
            if c.peek().is_none() {
                break;
            }
            if !first {
                if c.peek() != Some(b',') {
                    return Err(format!(
                        "unexpected {:?} at byte {} of {:?}",
                        c.peek().map(char::from).unwrap_or(' '),
                        c.i,
                        shown(value)
                    ));
                }
                c.skip_ws_and_commas();
                if c.peek().is_none() {
                    break;
                }
            } else if c.peek() == Some(b',') {
                break;
            }
            if first {
                // `Scheme token68` (`Negotiate abc+/==`): one word up to the end of the item.
                let save = c.i;
                while c.peek().is_some_and(is_token68_char) {
                    c.i += 1;
                }
                if c.i > save {
                    while c.peek() == Some(b'=') {
                        c.i += 1;
                    }
                    if c.at_end_of_item() {
                        let word = String::from_utf8_lossy(&value[save..c.i]).into_owned();
                        challenge.token68 = Some(word);
                        first = false;
                        continue;
                    }
                }
                c.i = save;
            }
            let start = c.i;
            let Some(name) = c.token() else {
                return Err(format!(
                    "unexpected {:?} at byte {} of {:?}",
                    c.peek().map(char::from).unwrap_or(' '),
                    c.i,
                    shown(value)
                ));
            };
            c.skip_ws();
            if c.peek() != Some(b'=') {
                // The next challenge's scheme.
                c.i = start;
                pending_scheme = c.token();
                break;
            }
            c.i += 1;
            c.skip_ws();
            let value_text = match c.peek() {
                Some(b'"') => c.quoted()?,
                Some(ch) if is_tchar(ch) => c.token().unwrap_or_default(),
                _ => {
                    return Err(format!(
                        "parameter {name:?} has no value in {:?}",
                        shown(value)
                    ));
                }
            };
            let name = name.to_ascii_lowercase();
            if challenge.params.iter().any(|(n, _)| *n == name) {
                return Err(format!(
                    "parameter {name:?} given twice in one challenge of {:?}",
                    shown(value)
                ));
            }
            if challenge.params.len() >= MAX_PARAMS {
                return Err(format!("more than {MAX_PARAMS} parameters in a challenge"));
            }
            challenge.params.push((name, value_text));
            first = false;
        }
        out.push(challenge);
        if pending_scheme.is_none() && c.peek().is_none() {
            return Ok(());
        }
    }
}

/// The start of a header value, printable, for messages.
fn shown(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(&value[..value.len().min(120)]).into_owned();
    if value.len() > 120 {
        format!("{text}…")
    } else {
        text
    }
}

/// What the registry's challenge asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthScheme {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Bearer (with a realm) wins over Basic, as in docker; other schemes alone are an error.
pub fn choose_scheme(challenges: &[Challenge]) -> Result<AuthScheme, String> {
    if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
        let realm = b
            .param("realm")
            .filter(|r| !r.is_empty())
            .ok_or("Bearer challenge without a realm")?;
        return Ok(AuthScheme::Bearer {
            realm: realm.to_string(),
            service: b.param("service").map(str::to_string),
            scope: b.param("scope").map(str::to_string),
        });
    }
    if challenges.iter().any(|c| c.scheme == "basic") {
        return Ok(AuthScheme::Basic);
    }
    let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
    if schemes.is_empty() {
        Err("401 without a WWW-Authenticate challenge".into())
    } else {
        Err(format!(
            "unsupported authentication scheme(s) {}",
            schemes.join(", ")
        ))
    }
}

/// The realm as a URL we may send a token request (and the user's credentials) to.
/// `plain_http_ok(authority)` says whether `host[:port]` may be spoken to in plain HTTP.
pub fn check_realm(
    what: &str,
    realm: &str,
    registry_plain_http: bool,
    policy: &AddressPolicy,
    plain_http_ok: impl Fn(&str) -> bool,
) -> RegistryResult<Url> {
    let invalid = |why: String| RegistryError::permanent(PermanentCause::Invalid, what, why);
    let not_allowed = |why: String| RegistryError::permanent(PermanentCause::NotAllowed, what, why);
    let url = Url::parse(realm).map_err(|e| {
        invalid(format!(
            "token realm {:?} is not a URL: {e}",
            shown(realm.as_bytes())
        ))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("token realm carries user information".into()));
    }
    policy
        .check_url(&url)
        .map_err(|r| not_allowed(format!("token realm: {r}")))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" => {
            let authority = match (url.host_str(), url.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                (None, _) => String::new(),
            };
            if registry_plain_http && plain_http_ok(&authority) {
                Ok(url)
            } else {
                Err(not_allowed(format!(
                    "token realm {authority} is plain HTTP; a realm must be https unless both it and the registry are loopback or --insecure-registry"
                )))
            }
        }
        other => Err(not_allowed(format!("token realm scheme {other:?}"))),
    }
}

/// The token request URL: the realm with `service` and `scope` added.
pub fn token_url(mut realm: Url, service: Option<&str>, scope: &str) -> Url {
    {
        let mut q = realm.query_pairs_mut();
        if let Some(s) = service {
            q.append_pair("service", s);
        }
        q.append_pair("scope", scope);
    }
    realm
}

/// A token and how long it may be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub lifetime: Duration,
}

/// `{"token": ...}` or `{"access_token": ...}`, `expires_in` seconds (default and minimum 60,
/// capped at an hour; a missing, negative or non-numeric one is the default).
pub fn parse_token_reply(body: &[u8]) -> Result<Token, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("token reply is not JSON: {e}"))?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    let token = field("token")
        .or_else(|| field("access_token"))
        .ok_or("token reply has neither a token nor an access_token")?;
    if !token.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err("token reply's token is not printable ASCII".into());
    }
    let seconds = value
        .get("expires_in")
        .and_then(|v| v.as_u64())
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .clamp(DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME);
    Ok(Token {
        token: token.to_string(),
        lifetime: Duration::from_secs(seconds),
    })
}

/// Reads a body of at most `limit` bytes, stopping as soon as it is longer.
pub async fn read_capped(response: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadCapped> {
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadCapped::Transport)?;
        if out.len() + chunk.len() > limit {
            return Err(ReadCapped::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[derive(Debug)]
pub enum ReadCapped {
    TooLarge,
    Transport(reqwest::Error),
}

/// The start of a body for an error message, at most `MAX_ERROR_BODY` read.
pub async fn error_text(response: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ERROR_BODY - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    out
}

/// What one handshake needs from the client.
pub struct Handshake<'a> {
    pub http: &'a reqwest::Client,
    /// "authenticating to `<registry>`", for messages.
    pub what: &'a str,
    /// `scheme://api-host` of the registry.
    pub origin: &'a str,
    pub repository: &'a str,
    pub push: bool,
    pub credentials: &'a RegistryAuth,
    /// Whether the registry itself is spoken to in plain HTTP.
    pub registry_plain_http: bool,
    pub policy: &'a AddressPolicy,
    /// Whether `host[:port]` may be spoken to in plain HTTP (loopback, `--insecure-registry`).
    pub plain_http_ok: &'a (dyn Fn(&str) -> bool + Sync),
    /// For each request, its body included.
    pub timeout: Duration,
}

/// The `Authorization` value to send (`None`: anonymous) and, for a token, how long it may
/// be reused (`None`: until the registry refuses it).
pub async fn handshake(h: Handshake<'_>) -> RegistryResult<(Option<String>, Option<Duration>)> {
    let what = h.what;
    let probe = format!("{}/v2/", h.origin);
    let probe_url = Url::parse(&probe).map_err(|e| {
        RegistryError::permanent(PermanentCause::Invalid, what, format!("{probe}: {e}"))
    })?;
    h.policy
        .check_url(&probe_url)
        .map_err(|r| RegistryError::permanent(PermanentCause::NotAllowed, what, r.to_string()))?;
    let response = h
        .http
        .get(probe_url)
        .timeout(h.timeout)
        .send()
        .await
        .map_err(|e| classify_handshake_error(what, &e))?;
    let status = response.status().as_u16();
    if matches!(status, 408 | 429 | 500..=599) {
        let body = error_text(response).await;
        return Err(RegistryError::from_status(
            &format!("{what}: GET /v2/"),
            status,
            &body,
            None,
        ));
    }
    if status != 401 {
        // No challenge: what the credentials give by themselves (Basic, or nothing).
        return Ok((h.credentials.header_text(), None));
    }
    let values: Vec<&[u8]> = response
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if values.is_empty() {
        return Ok((h.credentials.header_text(), None));
    }
    let scheme = parse_challenges(values)
        .and_then(|c| choose_scheme(&c))
        .map_err(|e| {
            RegistryError::permanent(
                PermanentCause::Invalid,
                what,
                format!("unusable WWW-Authenticate challenge from {}: {e}", h.origin),
            )
        })?;
    drop(response);
    let (realm, service) = match scheme {
        AuthScheme::Basic => return Ok((h.credentials.header_text(), None)),
        AuthScheme::Bearer { realm, service, .. } => (realm, service),
    };
    let realm = check_realm(
        what,
        &realm,
        h.registry_plain_http,
        h.policy,
        h.plain_http_ok,
    )?;
    let actions = if h.push { "pull,push" } else { "pull" };
    let scope = format!("repository:{}:{actions}", h.repository);
    let url = token_url(realm, service.as_deref(), &scope);
    let shown_realm = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.path()
    );
    let token_what = format!("{what}: token request to {shown_realm}");
    let mut request = h.http.get(url).timeout(h.timeout);
    // `check_realm` allowed this realm, so it is HTTPS or plain HTTP both ends allow.
    if let RegistryAuth::Basic(user, password) = h.credentials {
        let mut value = reqwest::header::HeaderValue::from_str(&basic_header(user, password))
            .map_err(|_| {
                RegistryError::permanent(
                    PermanentCause::Invalid,
                    what,
                    "credentials are not a valid header",
                )
            })?;
        value.set_sensitive(true);
        request = request.header(AUTHORIZATION, value);
    }
    let response = request
        .send()
        .await
        .map_err(|e| classify_handshake_error(&token_what, &e))?;
    let status = response.status().as_u16();
    if status != 200 {
        let body = error_text(response).await;
        let mut e = RegistryError::from_status(&token_what, status, &body, None);
        if matches!(status, 401 | 403) {
            e.cause = format!("token request refused: {}", e.cause);
        }
        return Err(e);
    }
    let body = match read_capped(response, MAX_TOKEN_BODY).await {
        Ok(b) => b,
        Err(ReadCapped::TooLarge) => {
            return Err(RegistryError::permanent(
                PermanentCause::Invalid,
                &token_what,
                format!("token reply larger than {} KiB", MAX_TOKEN_BODY >> 10),
            ));
        }
        Err(ReadCapped::Transport(e)) => return Err(classify_handshake_error(&token_what, &e)),
    };
    let token = parse_token_reply(&body)
        .map_err(|e| RegistryError::permanent(PermanentCause::Invalid, &token_what, e))?;
    Ok((
        Some(format!("Bearer {}", token.token)),
        Some(token.lifetime),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Challenge>, String> {
        parse_challenges([s.as_bytes()])
    }

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn docker_hub_and_distribution_challenges() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(
            params(&c[0]),
            vec![
                ("realm", "https://auth.docker.io/token"),
                ("service", "registry.docker.io"),
                ("scope", "repository:library/busybox:pull"),
            ]
        );
        assert_eq!(
            choose_scheme(&c).unwrap(),
            AuthScheme::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }
        );
        let basic = parse(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(basic[0].scheme, "basic");
        assert_eq!(choose_scheme(&basic).unwrap(), AuthScheme::Basic);
    }

    #[test]
    fn quoted_strings_escapes_spacing_and_case() {
        let c = parse(
            r#"  BEARER  Realm = "https://a.example/t?x=\"1\"" , service=reg.example,scope="a,b\\c" "#,
        )
        .unwrap();
        assert_eq!(
            params(&c[0]),
            vec![
                ("realm", r#"https://a.example/t?x="1""#),
                ("service", "reg.example"),
                ("scope", r"a,b\c"),
            ]
        );
    }

    #[test]
    fn several_challenges_in_one_and_in_several_headers() {
        let c =
            parse(r#"Basic realm="r", Bearer realm="https://t.example/token",service=s"#).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("service"), Some("s"));
        assert!(matches!(
            choose_scheme(&c).unwrap(),
            AuthScheme::Bearer { .. }
        ));
        let c = parse("Negotiate abc+/=, Basic, Bearer realm=\"https://x/\"").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].token68.as_deref(), Some("abc+/="));
        assert_eq!(c[1].scheme, "basic");
        assert!(c[1].params.is_empty());
        let c = parse_challenges([
            b"Basic realm=\"r\"".as_slice(),
            b"Bearer realm=\"https://t/\"".as_slice(),
        ])
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(parse("Basic").unwrap()[0].scheme, "basic");
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn garbage_challenges_are_clear_errors() {
        for (bad, expect) in [
            (r#"Bearer realm="https://unterminated"#, "unterminated"),
            (r#"Bearer realm"#, ""),
            ("Bearer realm=", "realm"),
            ("Bearer realm=,service=x", "realm"),
            ("Bearer service=x,realm=", "no value"),
            (r#"Bearer realm="a" service="b""#, "unexpected"),
            (r#"Bearer realm="a",realm="b""#, "twice"),
            ("=Bearer", "auth scheme"),
            ("\"quoted\" realm=x", "auth scheme"),
            (r#"Bearer realm="bad\"#, "escape"),
            ("Bearer realm=\"a\u{1}b\"", "0x01"),
            ("Bearer realm=a;b", "unexpected"),
        ] {
            let result = parse(bad).and_then(|c| choose_scheme(&c).map(|_| c));
            let e = result.expect_err(bad);
            assert!(e.contains(expect), "{bad:?}: {e}");
        }
        assert!(
            parse("Bearer realm=x,")
                .and_then(|c| choose_scheme(&c))
                .is_ok()
        );
        let long = format!("Bearer realm=\"{}\"", "a".repeat(MAX_CHALLENGE_LEN));
        assert!(parse(&long).unwrap_err().contains("bytes"));
        let many = "Basic, ".repeat(MAX_CHALLENGES + 1);
        assert!(parse(&many).unwrap_err().contains("challenges"));
        let params: String = (0..=MAX_PARAMS).map(|i| format!("p{i}=v,")).collect();
        assert!(
            parse(&format!("Bearer {params}"))
                .unwrap_err()
                .contains("parameters")
        );
    }

    #[test]
    fn schemes_we_cannot_answer() {
        let e = choose_scheme(&parse("Negotiate abc").unwrap()).unwrap_err();
        assert!(e.contains("negotiate"), "{e}");
        let e = choose_scheme(&parse("Bearer service=x").unwrap()).unwrap_err();
        assert!(e.contains("realm"), "{e}");
        let e = choose_scheme(&parse(r#"Bearer realm="""#).unwrap()).unwrap_err();
        assert!(e.contains("realm"), "{e}");
        assert!(choose_scheme(&[]).unwrap_err().contains("without"));
    }

    #[test]
    fn token_replies() {
        let t = parse_token_reply(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.token, "abc");
        assert_eq!(t.lifetime, Duration::from_secs(300));
        let t = parse_token_reply(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.token, "xyz");
        assert_eq!(t.lifetime, Duration::from_secs(60));
        for (body, secs) in [
            (r#"{"token":"a","expires_in":1e300}"#, 60),
            (r#"{"token":"a","expires_in":-5}"#, 60),
            (r#"{"token":"a","expires_in":"300"}"#, 60),
            (r#"{"token":"a","expires_in":1}"#, 60),
            (r#"{"token":"a","expires_in":18446744073709551615}"#, 3600),
        ] {
            assert_eq!(
                parse_token_reply(body.as_bytes()).unwrap().lifetime,
                Duration::from_secs(secs),
                "{body}"
            );
        }
        for bad in [
            &b"not json"[..],
            br#"{"token":""}"#,
            br#"{"token":42}"#,
            br#"{}"#,
            br#"{"token":"a\r\nX-Injected: 1"}"#,
            br#"{"token":"a b"}"#,
        ] {
            assert!(
                parse_token_reply(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn realm_rules() {
        let policy = AddressPolicy::default();
        let loopback = |a: &str| super::super::reference::is_loopback_host(a);
        let check = |realm: &str, registry_plain: bool| {
            check_realm("auth", realm, registry_plain, &policy, loopback)
        };
        assert!(check("https://auth.docker.io/token", false).is_ok());
        assert!(check("https://auth.example:8443/token", true).is_ok());
        assert!(check("http://127.0.0.1:5001/token", true).is_ok());
        // Plain HTTP realms need both the realm host and the registry allowed plain.
        let e = check("http://auth.example/token", true).unwrap_err();
        assert_eq!(e.permanent_cause, Some(PermanentCause::NotAllowed));
        assert!(e.cause.contains("plain HTTP"), "{e}");
        let e = check("http://127.0.0.1:5001/token", false).unwrap_err();
        assert_eq!(e.permanent_cause, Some(PermanentCause::NotAllowed));
        let e = check("https://169.254.169.254/latest/meta-data", false).unwrap_err();
        assert_eq!(e.permanent_cause, Some(PermanentCause::NotAllowed));
        let e = check("http://metadata.google.internal/token", true).unwrap_err();
        assert_eq!(e.permanent_cause, Some(PermanentCause::NotAllowed));
        let e = check("file:///etc/passwd", false).unwrap_err();
        assert_eq!(e.permanent_cause, Some(PermanentCause::NotAllowed));
        let e = check("/relative/token", false).unwrap_err();
        assert_eq!(e.permanent_cause, Some(PermanentCause::Invalid));
        let e = check("https://user:pw@auth.example/token", false).unwrap_err();
        assert_eq!(e.permanent_cause, Some(PermanentCause::Invalid));
        let insecure = |a: &str| a == "auth.internal:5001";
        assert!(
            check_realm(
                "auth",
                "http://auth.internal:5001/t",
                true,
                &policy,
                insecure
            )
            .is_ok()
        );
    }

    #[test]
    fn token_urls_keep_the_realm_query() {
        let u = token_url(
            Url::parse("https://auth.example/token?account=x").unwrap(),
            Some("reg service"),
            "repository:a/b:pull,push",
        );
        assert_eq!(
            u.as_str(),
            "https://auth.example/token?account=x&service=reg+service&scope=repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
