//! The web dashboard at `/admin`: one static page with a script and a stylesheet, compiled
//! into the binary (it must work without internet access: no CDN), reading and acting
//! through the admin API with the admin token the operator signs in with.
//!
//! The page carries no data itself, so it is served without a token; everything it shows
//! comes from `/admin/api`, which checks the token and role on every request. The script
//! builds every element with `textContent` (tool names, descriptions and arguments come from
//! agents and upstream servers), and a strict Content-Security-Policy allows only the
//! gateway's own script and stylesheet, no inline code, no framing.

use crate::body::{self, Body};
use http::{header, HeaderValue, Response, StatusCode};

const PAGE: &str = include_str!("../assets/dashboard.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");

/// The dashboard file at `path` (`/admin`, `/admin/dashboard.js`, `/admin/dashboard.css`).
pub(crate) fn asset(path: &str) -> Option<Response<Body>> {
    let (content, content_type) = match path {
        "/admin" | "/admin/" => (PAGE, "text/html; charset=utf-8"),
        "/admin/dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/admin/dashboard.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = body::text(StatusCode::OK, content);
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Some(response)
}
