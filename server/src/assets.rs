//! Static files compiled into the binary: the JavaScript client at `/client/ringbearer.js`
//! (so a page loads it with no bundler) and the admin page at `/admin` with its script and
//! style. `GET` only; another method on these paths is `405`.
//!
//! The files are embedded with `include_str!`, so the binary serves exactly the client and
//! page it was built with; there is nothing to install beside it and no CDN. It does not
//! answer conditional requests (`If-None-Match`): the files are small and the caching
//! headers keep browsers from asking often.

use ringbearer_io::{HttpRequest, HttpResponse};

const CLIENT_JS: &str = include_str!("../../js/ringbearer.js");
const ADMIN_HTML: &str = include_str!("../assets/admin/index.html");
const ADMIN_JS: &str = include_str!("../assets/admin/admin.js");
const ADMIN_CSS: &str = include_str!("../assets/admin/admin.css");

/// The client may change between releases; a page revalidates it hourly at most. Any
/// origin may load it (an app's pages usually live on another origin than the server, and
/// a cross-origin `<script type="module">` needs CORS); it holds no secret.
const CLIENT_CACHE: &str =
    "Cache-Control: public, max-age=3600\r\nAccess-Control-Allow-Origin: *\r\n";
/// The admin page holds credentials in memory: never keep a copy.
const ADMIN_CACHE: &str = "Cache-Control: no-store\r\n";
/// The admin page loads only its own files and talks only to this server.
const ADMIN_CSP: &str = "Content-Security-Policy: default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'none'\r\n";

/// The answer for a static path, or `None` when the path is not one of ours.
pub fn serve(req: &HttpRequest) -> Option<HttpResponse> {
    let (content_type, body, extra) = match req.head.path.as_str() {
        "/client/ringbearer.js" => (
            "text/javascript; charset=utf-8",
            CLIENT_JS,
            CLIENT_CACHE.to_owned(),
        ),
        "/admin" | "/admin/" | "/admin/index.html" => (
            "text/html; charset=utf-8",
            ADMIN_HTML,
            format!("{ADMIN_CACHE}{ADMIN_CSP}X-Frame-Options: DENY\r\n"),
        ),
        "/admin/admin.js" => (
            "text/javascript; charset=utf-8",
            ADMIN_JS,
            ADMIN_CACHE.to_owned(),
        ),
        "/admin/admin.css" => ("text/css; charset=utf-8", ADMIN_CSS, ADMIN_CACHE.to_owned()),
        _ => return None,
    };
    if req.head.method != "GET" {
        return Some(HttpResponse {
            status: 405,
            content_type: "text/plain; charset=utf-8",
            body: b"GET only\n".to_vec(),
            headers: "Allow: GET\r\n".into(),
            stream: None,
        });
    }
    Some(HttpResponse {
        status: 200,
        content_type,
        body: body.as_bytes().to_vec(),
        headers: format!("{extra}X-Content-Type-Options: nosniff\r\n"),
        stream: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbearer_io::http::parse_head;

    fn get(method: &str, path: &str) -> Option<HttpResponse> {
        let raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (head, _) = parse_head(raw.as_bytes()).unwrap().unwrap();
        serve(&HttpRequest {
            head,
            body: Vec::new(),
            peer: None,
        })
    }

    #[test]
    fn serves_the_client_and_the_admin_page_with_their_types() {
        let r = get("GET", "/client/ringbearer.js").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "text/javascript; charset=utf-8");
        assert_eq!(r.body, include_bytes!("../../js/ringbearer.js"));
        assert!(r.headers.contains("max-age=3600"));
        for path in ["/admin", "/admin/", "/admin/index.html"] {
            let r = get("GET", path).unwrap();
            assert_eq!(r.content_type, "text/html; charset=utf-8");
            assert!(r.headers.contains("no-store"));
            assert!(r.headers.contains("Content-Security-Policy"));
        }
        assert_eq!(
            get("GET", "/admin/admin.css").unwrap().content_type,
            "text/css; charset=utf-8"
        );
        assert!(get("GET", "/admin/admin.js?v=1").is_some());
    }

    #[test]
    fn other_paths_and_methods() {
        assert!(get("GET", "/api/websocket/health").is_none());
        assert!(get("GET", "/admin/../etc/passwd").is_none());
        assert!(get("GET", "/client/other.js").is_none());
        let r = get("POST", "/admin").unwrap();
        assert_eq!(r.status, 405);
        assert_eq!(r.headers, "Allow: GET\r\n");
    }
}
