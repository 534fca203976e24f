//! Signing a browser in with `[server] token_file`'s token.
//!
//! A browser cannot add `Authorization: Bearer` to a link or to an `EventSource`,
//! so with a token the page would be out of reach of the people it is for. The
//! token typed once into `/login` comes back as a cookie (`HttpOnly`,
//! `SameSite=Strict`: scripts cannot read it and other sites' pages cannot send
//! it), and the server's access rule takes that cookie for reads (`GET`/`HEAD`)
//! only: the control API still wants the header, so no page of any site can make
//! a browser steer the daemon.
//!
//! The cookie holds the token hex-encoded (a token may hold bytes a cookie may
//! not); it is compared with the token in constant time like the header.

use super::{Page, render_page};
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The cookie's name.
pub(crate) const COOKIE: &str = "converge_token";

/// What the login form says.
#[derive(Serialize)]
pub(super) struct LoginView {
    /// Set after a wrong token.
    pub problem: Option<String>,
    /// Whether this daemon has a token at all (else there is nothing to sign in
    /// with: only loopback clients are answered).
    pub has_token: bool,
}

/// The login page, answered with `code` (200 at `/login`, 401 where a page was
/// refused).
pub(crate) fn form(code: StatusCode, has_token: bool, problem: Option<String>) -> Response {
    let page = Page {
        title: "sign in".to_owned(),
        path: "/login".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        live: false,
    };
    let view = LoginView { problem, has_token };
    let mut response = render_page(code, "login.html", &view, &page);
    super::secure(response.headers_mut());
    response
}

/// The token a `POST /login` form carries (`token=…`, URL-encoded).
pub(super) fn submitted_token(body: &Bytes) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    let value = body
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    let value = value.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&value)
        .decode_utf8()
        .ok()?;
    Some(decoded.trim().to_owned())
}

/// The answer to a right token: the cookie, and on to the overview.
pub(super) fn signed_in(token: &str) -> Response {
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        hex::encode(token)
    );
    let mut response = (StatusCode::SEE_OTHER, "signed in").into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/"));
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The token a request's cookie carries, decoded.
pub(crate) fn cookie_token(headers: &HeaderMap) -> Option<Vec<u8>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .and_then(|hex_token| hex::decode(hex_token).ok())
}

/// Whether a refused request came from a browser asking for a page (it gets the
/// form; scripts keep their JSON error).
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_token_is_url_decoded() {
        let body = Bytes::from_static(b"x=1&token=s3cr%2Bt+word%21");
        assert_eq!(submitted_token(&body).as_deref(), Some("s3cr+t word!"));
        assert_eq!(submitted_token(&Bytes::from_static(b"nope=1")), None);
    }

    #[test]
    fn the_cookie_round_trips_a_token_with_any_bytes() {
        let response = signed_in("to;ken =");
        let set = response.headers()[header::SET_COOKIE]
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let value = set.split(';').next().expect("a pair");
        let mut headers = HeaderMap::new();
        let sent = format!("other=1; {value}");
        headers.insert(header::COOKIE, HeaderValue::from_str(&sent).expect("ASCII"));
        assert_eq!(cookie_token(&headers).as_deref(), Some(&b"to;ken ="[..]));
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
    }
}
