//! The stats page: `GET /stats` on the admin listener (and `/` redirects
//! there), a live dashboard of the node and its cluster. Its files are plain
//! HTML, CSS and JavaScript in `assets/stats/`, embedded in the binary: no
//! build step, no CDN, nothing fetched from elsewhere at run time.
//!
//! The page is a client of the admin API like any script: it polls
//! `GET /api/v1/status` and sends the write actions with the admin token as
//! a bearer header. So it reads what the API's read endpoints allow (open on
//! the admin listener) and changes only what the token allows. Off with
//! `[admin] stats = false` (both paths answer 404).
//!
//! Every file goes out with a strict Content-Security-Policy (no inline
//! script or style, no other origin, no framing), `X-Frame-Options: DENY`,
//! `Referrer-Policy: no-referrer` and `X-Content-Type-Options: nosniff`;
//! `Cache-Control: no-cache` with an `ETag`, so a browser revalidates and a
//! new binary's page is never mixed with an old script.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{error, Shared};

/// The page's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file of the page.
pub struct File {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// Every file the page needs, by the path it is served at.
pub const FILES: &[File] = &[
    File {
        path: "/stats",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../assets/stats/index.html"),
    },
    File {
        path: "/stats/stats.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/stats/stats.js"),
    },
    File {
        path: "/stats/stats.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/stats/stats.css"),
    },
];

/// The ETag of each file of [`FILES`], by index: a hash of its bytes.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        FILES
            .iter()
            .map(|f| {
                let h = crate::balance::hash_str(f.body);
                HeaderValue::from_str(&format!("\"{h:016x}\"")).expect("hex is a valid header value")
            })
            .collect()
    })
}

/// `GET /stats` and its files.
pub async fn file(State(st): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    if !st.control.snapshot().config.admin.stats {
        return off();
    }
    let Some(i) = FILES.iter().position(|f| f.path == uri.path()) else {
        return error(StatusCode::NOT_FOUND, format!("no file {} in the stats page", uri.path()), vec![]);
    };
    let etag = &etags()[i];
    let fresh = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = FILES[i].body.into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FILES[i].content_type));
        r
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// `GET /` and `GET /stats/`: to the page.
pub async fn to_page(State(st): State<Shared>) -> Response {
    if !st.control.snapshot().config.admin.stats {
        return off();
    }
    (StatusCode::FOUND, [(header::LOCATION, "/stats")]).into_response()
}

fn off() -> Response {
    error(StatusCode::NOT_FOUND, "the stats page is off on this node ([admin] stats = false)".into(), vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_files_that_are_embedded() {
        let html = FILES[0].body;
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let url = part.split('"').next().unwrap_or_default();
                assert!(FILES.iter().any(|f| f.path == url), "{url} is referenced but not embedded");
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        // The CSP refuses them: the page would break, not the policy.
        let html = FILES[0].body;
        assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains("<style"));
        for handler in ["onclick=", "onload=", "onsubmit=", "onchange=", "oninput=", "javascript:"] {
            assert!(!html.contains(handler), "no inline event handlers: {handler}");
        }
        assert!(!FILES[1].body.contains("innerHTML"), "the script builds nodes, it does not parse HTML");
        assert!(!FILES[1].body.contains("eval("));
    }

    #[test]
    fn every_file_has_its_own_etag() {
        let tags = etags();
        assert_eq!(tags.len(), FILES.len());
        assert!(tags.iter().enumerate().all(|(i, t)| tags.iter().skip(i + 1).all(|u| u != t)));
    }
}
