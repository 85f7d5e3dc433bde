//! Static files from a directory (the seed's `/static/`), with traversal
//! refused: the request path is percent-decoded, every segment is checked,
//! and the resolved file must lie inside the canonical root.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::proxy::outbound::response::ProxyBody;

#[derive(Debug, PartialEq, Eq)]
pub enum StaticError {
    /// The path tries to leave the directory or is not a valid path.
    Forbidden,
    NotFound,
    MethodNotAllowed,
}

/// Maps the part of the URL path after the route prefix to a file below
/// `root`, refusing anything that could leave it.
pub fn resolve(root: &Path, rest: &str) -> Result<PathBuf, StaticError> {
    let decoded = percent_encoding::percent_decode_str(rest).decode_utf8().map_err(|_| StaticError::Forbidden)?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return Err(StaticError::Forbidden);
    }
    let mut path = root.to_path_buf();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => continue,
            ".." => return Err(StaticError::Forbidden),
            s => {
                if Path::new(s).components().any(|c| !matches!(c, Component::Normal(_))) {
                    return Err(StaticError::Forbidden);
                }
                path.push(s);
            }
        }
    }
    Ok(path)
}

/// Serves `rest` (the path after the route's prefix) from `root`.
pub async fn serve(
    root: &Path,
    rest: &str,
    method: &Method,
    cache_control: Option<&str>,
    if_modified_since: Option<&HeaderValue>,
) -> Result<Response<ProxyBody>, StaticError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(StaticError::MethodNotAllowed);
    }
    let mut path = resolve(root, rest)?;
    let root_real = tokio::fs::canonicalize(root).await.map_err(|_| StaticError::NotFound)?;
    let mut meta = tokio::fs::metadata(&path).await.map_err(|_| StaticError::NotFound)?;
    if meta.is_dir() {
        path.push("index.html");
        meta = tokio::fs::metadata(&path).await.map_err(|_| StaticError::NotFound)?;
    }
    // Symlinks may point outside the root: check where the file really is.
    let real = tokio::fs::canonicalize(&path).await.map_err(|_| StaticError::NotFound)?;
    if !real.starts_with(&root_real) {
        return Err(StaticError::Forbidden);
    }
    if !meta.is_file() {
        return Err(StaticError::NotFound);
    }
    let modified = meta.modified().ok();
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, mime_guess::from_path(&path).first_or_octet_stream().as_ref())
        .header(header::ACCEPT_RANGES, "none");
    if let Some(cc) = cache_control {
        builder = builder.header(header::CACHE_CONTROL, cc);
    }
    if let Some(m) = modified {
        builder = builder.header(header::LAST_MODIFIED, httpdate::fmt_http_date(m));
        if not_modified(m, if_modified_since) {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(ProxyBody::empty())
                .map_err(|_| StaticError::NotFound);
        }
    }
    builder = builder.header(header::CONTENT_LENGTH, meta.len());
    let body = if method == Method::HEAD {
        ProxyBody::empty()
    } else {
        let file = tokio::fs::File::open(&real).await.map_err(|_| StaticError::NotFound)?;
        ProxyBody::file(file, meta.len())
    };
    builder.status(StatusCode::OK).body(body).map_err(|_| StaticError::NotFound)
}

fn not_modified(modified: SystemTime, ims: Option<&HeaderValue>) -> bool {
    let Some(since) = ims.and_then(|v| v.to_str().ok()).and_then(|s| httpdate::parse_http_date(s).ok()) else {
        return false;
    };
    // HTTP dates have one-second resolution.
    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    secs(modified) <= secs(since)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused() {
        let root = Path::new("/srv/static");
        assert_eq!(resolve(root, "app.js").unwrap(), Path::new("/srv/static/app.js"));
        assert_eq!(resolve(root, "css//a.css").unwrap(), Path::new("/srv/static/css/a.css"));
        for bad in ["../etc/passwd", "a/../../b", "%2e%2e/etc/passwd", "..%2fetc", "a\\..\\b", "x%00y", "%ff"] {
            assert_eq!(resolve(root, bad), Err(StaticError::Forbidden), "{bad}");
        }
    }
}
