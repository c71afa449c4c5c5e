//! The operator console: a web page served by the admin listener at `/`,
//! its script and stylesheet embedded in the binary (no CDN, no build step).
//!
//! The assets hold no secrets and are served without the admin token; the
//! page asks for the token, keeps it in the tab's `sessionStorage` (never in
//! a URL or a cookie, so no other site can make the browser send it), and
//! makes every call through the token-protected admin API (`/admin/...`,
//! `/metrics`). The page and its assets carry a content security policy
//! that allows only these same-origin assets: no inline script, no framing, so a
//! component name or a dead letter's payload, shown as text, cannot run as
//! code even if a rendering bug let it into the markup.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// What the console allows the page to load and do.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; form-action 'none'; \
                      frame-ancestors 'none'; base-uri 'none'";

/// The console's asset at `path`, if `path` names one.
pub fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let (body, content_type) = match path {
        "/" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/console/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/console/console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // A new binary may bring a new page: never serve a stale one.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_what_the_policy_allows() {
        for path in ["/", "/console/console.js", "/console/console.css"] {
            let response = asset(path).unwrap();
            assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], POLICY);
        }
        assert!(asset("/console/other.js").is_none());
        // Same-origin assets only, and no inline script for the policy to refuse.
        assert!(INDEX.contains(r#"src="/console/console.js""#));
        assert!(!INDEX.contains("<script>"), "no inline script");
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"), "nothing remote");
        for markup in
            ["innerHTML", "outerHTML", "insertAdjacentHTML", "DOMParser", "document.write"]
        {
            assert!(!SCRIPT.contains(markup), "data is shown as text, never parsed: {markup}");
        }
    }
}
