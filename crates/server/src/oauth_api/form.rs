//! Reading OAuth requests: form bodies (no repeated parameters), HTTP Basic client credentials,
//! bearer tokens, and cookies.

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use oauth::{Challenge, ClientCredentials, OAuthError};

/// The cookie binding an authorization request to the browser that started it.
pub const BROWSER_COOKIE: &str = "portico_browser";
/// The sign-in session.
pub const SESSION_COOKIE: &str = "portico_session";

/// A form body's parameters. OAuth forbids repeating a parameter (RFC 6749 §3.1), so a repeat is
/// `invalid_request`; so is a body that is not a form.
pub fn form_params(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded"));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(body) {
        if pairs.iter().any(|(seen, _)| *seen == k) {
            return Err(OAuthError::invalid_request(format!("parameter {k} appears more than once")));
        }
        pairs.push((k.into_owned(), v.into_owned()));
    }
    Ok(pairs)
}

pub fn take(pairs: &mut Vec<(String, String)>, name: &str) -> Option<String> {
    let i = pairs.iter().position(|(k, _)| k == name)?;
    Some(pairs.remove(i).1).filter(|v| !v.is_empty())
}

/// `Authorization: Basic` client credentials, each part form-decoded (RFC 6749 §2.3.1). `None`
/// without a Basic header; an error when it is malformed.
pub fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default();
    let Some(encoded) = text.strip_prefix("Basic ").or_else(|| text.strip_prefix("basic ")) else { return Ok(None) };
    let malformed = || OAuthError::invalid_client("malformed HTTP Basic credentials", Challenge::Basic);
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes()).map(|(_, v)| v.into_owned()).next().unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
}

/// `Authorization: Bearer …`, if present.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let text = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = text.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Client credentials from the Basic header and the form.
pub fn client_credentials(
    headers: &HeaderMap,
    pairs: &mut Vec<(String, String)>,
) -> Result<ClientCredentials, OAuthError> {
    Ok(ClientCredentials {
        basic: basic_credentials(headers)?,
        client_id: take(pairs, "client_id"),
        client_secret: take(pairs, "client_secret"),
        assertion_type: take(pairs, "client_assertion_type"),
        assertion: take(pairs, "client_assertion"),
    })
}

/// A cookie's value.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for part in text.split(';') {
            if let Some((k, v)) = part.trim().split_once('=') {
                if k == name && !v.is_empty() {
                    return Some(v.to_owned());
                }
            }
        }
    }
    None
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (sent on the app's top-level redirect to
/// `/auth/authorize`, not on cross-site posts), Secure over HTTPS.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: Option<i64>, secure: bool) -> String {
    let mut out = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        out.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        out.push_str("; Secure");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let raw = STANDARD.encode("my%20app:s%3Acret+x");
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Basic {raw}")).unwrap());
        assert_eq!(basic_credentials(&h).unwrap(), Some(("my app".into(), "s:cret x".into())));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(basic_credentials(&h).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(basic_credentials(&h).unwrap(), None);
        assert_eq!(bearer_token(&h), Some("abc"));
    }

    #[test]
    fn forms_refuse_repeats_and_other_types() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        assert_eq!(form_params(&h, b"a=1&b=2").unwrap().len(), 2);
        assert!(form_params(&h, b"a=1&a=2").is_err());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(form_params(&h, b"a=1").is_err());
    }

    #[test]
    fn cookies() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; portico_session=xyz; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, BROWSER_COOKIE), None);
    }
}
