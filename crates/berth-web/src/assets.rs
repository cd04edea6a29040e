//! Static files, embedded in the binary: the dashboard's stylesheet and the vendored htmx
//! (checked against [`VENDORED`] by a test; see `assets/VENDORED.md`).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::RustEmbed)]
#[folder = "assets/"]
#[exclude = "*.md"]
#[exclude = "*LICENSE"]
struct Assets;

/// Third-party files committed as published: (file, package and version, license, sha256).
pub const VENDORED: &[(&str, &str, &str, &str)] = &[
    (
        "htmx.min.js",
        "htmx.org 4.0.1 (npm), dist/htmx.min.js",
        "0BSD",
        "a0abb04f2f45a1f89d1d4844023245537e5e6014c87b144553e0607b4cc32130",
    ),
    (
        "hx-sse.min.js",
        "htmx.org 4.0.1 (npm), dist/ext/hx-sse.min.js",
        "0BSD",
        "18ef2761356ec1fe0bb6d92612315b37517a7c1e9856b661c5ae81fef239d103",
    ),
];

pub async fn serve(Path(file): Path<String>) -> Response {
    let Some(f) = Assets::get(&file) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let ct = match file.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    let mut resp = f.data.into_owned().into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    resp
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    #[test]
    fn vendored_files_are_the_published_ones() {
        for (file, what, _, sha) in super::VENDORED {
            let data = super::Assets::get(file).unwrap_or_else(|| panic!("{file} is embedded"));
            assert_eq!(
                hex::encode(Sha256::digest(&data.data)),
                *sha,
                "{file} is not {what} as published"
            );
        }
        let notes = include_str!("../assets/VENDORED.md");
        for (file, _, license, sha) in super::VENDORED {
            assert!(
                notes.contains(file) && notes.contains(license) && notes.contains(sha),
                "VENDORED.md names {file}"
            );
        }
    }
}
