//! A small static file server for the plain HTTP requests that arrive on the WebSocket port.
//!
//! Owns the mapping from a request target to bytes: the target is split on `/`, each segment
//! percent-decoded, and the result looked up either in the demo page built into the binary
//! (`web/` at compile time) or under a folder given at run time. It owns the safety rules of
//! that mapping, which hold for both sources:
//!
//! - a segment that decodes to `.` or `..`, or that contains `/`, `\` or NUL, is refused with
//!   `400`, so no path can climb out of the served folder, encoded (`%2e%2e`, `%2f`) or not;
//! - segments starting with a dot (`.git`, `.env`) are never served (`404`);
//! - a folder is canonicalized once at start, every file's canonical path must stay under it,
//!   so a symlink that points out of the folder is refused (`403`);
//! - a file is read whole into memory only up to [`DEFAULT_MAX_FILE_SIZE`] (configurable);
//!   a larger one is answered `500`, since the request is fine and it is the server that
//!   will not serve it;
//! - only `GET` and `HEAD` are served; any other method gets `405` with `Allow: GET, HEAD`.
//!
//! It must not touch sockets or the connection's keep-alive logic: it returns a
//! [`Response`] and the connection writes it (with `Content-Length`, `Connection`, and no body
//! for `HEAD`). Reads from disk are blocking and happen on the reactor thread, so it is meant
//! for small files on a local disk: the demo page and its assets, not a media library.

use std::borrow::Cow;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use wsreactor::Response;

/// Largest file read into memory by default: 8 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 8 << 20;

/// The demo page, compiled into the binary: request path (no leading slash), file bytes.
const EMBEDDED: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../web/index.html")),
    ("app.js", include_bytes!("../web/app.js")),
    ("style.css", include_bytes!("../web/style.css")),
];

/// Where files come from.
#[derive(Debug, Clone)]
enum Source {
    /// The demo page built into the binary.
    Embedded,
    /// A folder on disk; the path is canonical.
    Dir(PathBuf),
}

/// Answers plain HTTP requests from the built-in demo page or from a folder.
#[derive(Debug, Clone)]
pub struct StaticFiles {
    source: Source,
    max_file_size: u64,
}

/// Why a request target cannot name a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form target (`/...`), bad percent-encoding, or not UTF-8 once decoded.
    Malformed,
    /// A `.` or `..` segment, or a segment hiding `/`, `\` or NUL behind percent-encoding.
    Traversal,
    /// A hidden name (a segment starting with `.`): never served.
    Hidden,
}

impl PathError {
    /// The status this refusal is answered with.
    pub fn status(self) -> u16 {
        match self {
            PathError::Malformed | PathError::Traversal => 400,
            PathError::Hidden => 404,
        }
    }
}

/// A request target resolved to safe path segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    /// Decoded segments, none empty, none `.`/`..`, none containing `/`, `\` or NUL.
    pub segments: Vec<String>,
    /// The target named a folder (it ended with `/`, or had no segments).
    pub trailing_slash: bool,
    /// The path part of the target as sent (query and fragment stripped), for redirects.
    pub raw: String,
}

/// Resolves a request target (`/a/b%20c?x=1`) into decoded segments, applying every rule
/// that keeps a path inside the served folder. Empty segments (`//`) are skipped. An
/// absolute-form target (`http://host/path`) is reduced to its path.
pub fn parse_target(target: &str) -> Result<RequestPath, PathError> {
    let mut target = target;
    for scheme in ["http://", "https://"] {
        let prefix = target.get(..scheme.len());
        if prefix.is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme)) {
            let rest = &target[scheme.len()..];
            target = rest.find('/').map_or("/", |slash| &rest[slash..]);
            break;
        }
    }
    let end = target.find(['?', '#']).unwrap_or(target.len());
    let raw = &target[..end];
    if !raw.starts_with('/') {
        return Err(PathError::Malformed);
    }
    let mut segments = Vec::new();
    for piece in raw.split('/').filter(|piece| !piece.is_empty()) {
        let bytes = percent_decode(piece).ok_or(PathError::Malformed)?;
        let segment = String::from_utf8(bytes).map_err(|_| PathError::Malformed)?;
        if segment == "." || segment == ".." || segment.contains(['/', '\\', '\0']) {
            return Err(PathError::Traversal);
        }
        segments.push(segment);
    }
    // Checked after the loop so that a `..` anywhere wins over a hidden name before it.
    if segments.iter().any(|segment| segment.starts_with('.')) {
        return Err(PathError::Hidden);
    }
    Ok(RequestPath {
        trailing_slash: raw.ends_with('/') || segments.is_empty(),
        segments,
        raw: raw.to_string(),
    })
}

/// Decodes `%XX` escapes; `None` for a `%` not followed by two hex digits.
pub fn percent_decode(input: &str) -> Option<Vec<u8>> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let high = (hex[0] as char).to_digit(16)?;
            let low = (hex[1] as char).to_digit(16)?;
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The `Content-Type` for a file name, by its extension.
pub fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map_or("", |(_, ext)| ext);
    match extension.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

impl StaticFiles {
    /// Serves the demo page built into the binary.
    pub fn embedded() -> Self {
        StaticFiles {
            source: Source::Embedded,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
        }
    }

    /// Serves the folder `root`, which must exist; it is canonicalized now, once.
    pub fn dir(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = fs::canonicalize(root)?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a folder", root.display()),
            ));
        }
        Ok(StaticFiles {
            source: Source::Dir(root),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
        })
    }

    /// Sets the largest file read into memory (larger: `500`).
    pub fn with_max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = bytes;
        self
    }

    /// The canonical folder served, or `None` for the built-in page.
    pub fn root(&self) -> Option<&Path> {
        match &self.source {
            Source::Embedded => None,
            Source::Dir(root) => Some(root),
        }
    }

    /// Answers one request. `HEAD` gets the same response as `GET`; the connection leaves the
    /// body out.
    pub fn respond(&self, method: &str, target: &str) -> Response {
        if method != "GET" && method != "HEAD" {
            return Response::plain(405).with_header("Allow", "GET, HEAD");
        }
        let path = match parse_target(target) {
            Ok(path) => path,
            Err(refusal) => return Response::plain(refusal.status()),
        };
        match &self.source {
            Source::Embedded => respond_embedded(&path),
            Source::Dir(root) => self.respond_dir(root, &path),
        }
    }

    fn respond_dir(&self, root: &Path, path: &RequestPath) -> Response {
        let mut file = root.to_path_buf();
        file.extend(&path.segments);
        // Resolves every symlink; the result must still be inside the root.
        let mut real = match fs::canonicalize(&file) {
            Ok(real) => real,
            Err(e) => return io_error_response(&e),
        };
        if !real.starts_with(root) {
            return Response::plain(403);
        }
        if real.is_dir() {
            if !path.trailing_slash {
                // Relative links in the folder's index only work below a trailing slash.
                return Response::new(301, "text/plain; charset=utf-8", &b"Moved Permanently"[..])
                    .with_header("Location", format!("{}/", path.raw));
            }
            real = match fs::canonicalize(real.join("index.html")) {
                Ok(index) => index,
                Err(e) => return io_error_response(&e),
            };
            if !real.starts_with(root) {
                return Response::plain(403);
            }
        }
        match read_capped(&real, self.max_file_size) {
            Ok(Some(bytes)) => file_response(&real.to_string_lossy(), Cow::Owned(bytes)),
            Ok(None) => Response::new(
                500,
                "text/plain; charset=utf-8",
                &b"File too large to serve\n"[..],
            ),
            Err(e) => io_error_response(&e),
        }
    }
}

fn respond_embedded(path: &RequestPath) -> Response {
    let name = if path.segments.is_empty() {
        "index.html".to_string()
    } else {
        path.segments.join("/")
    };
    match EMBEDDED.iter().find(|(file, _)| *file == name) {
        Some((file, bytes)) => file_response(file, Cow::Borrowed(bytes)),
        None => Response::plain(404),
    }
}

fn file_response(name: &str, body: Cow<'static, [u8]>) -> Response {
    Response::new(200, content_type(name), body)
        .with_header("Cache-Control", "no-cache")
        .with_header("X-Content-Type-Options", "nosniff")
}

fn io_error_response(error: &io::Error) -> Response {
    let not_a_path = matches!(
        error.raw_os_error(),
        Some(libc::ENOTDIR | libc::ENAMETOOLONG | libc::ELOOP)
    );
    match error.kind() {
        io::ErrorKind::NotFound => Response::plain(404),
        _ if not_a_path => Response::plain(404),
        io::ErrorKind::PermissionDenied => Response::plain(403),
        _ => Response::plain(500),
    }
}

/// Reads a regular file whole if it is at most `cap` bytes; `Ok(None)` if it is larger.
/// Reading stops at `cap + 1` bytes, so a file that grows after the size check cannot make the
/// server read more.
fn read_capped(path: &Path, cap: u64) -> io::Result<Option<Vec<u8>>> {
    let file = fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    if meta.len() > cap {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Ok(None);
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(target: &str) -> Vec<String> {
        parse_target(target).expect("a valid target").segments
    }

    #[test]
    fn plain_paths_split_into_decoded_segments() {
        assert_eq!(segments("/"), Vec::<String>::new());
        assert_eq!(segments("/a/b.txt"), ["a", "b.txt"]);
        assert_eq!(segments("/a%20b/c%2Bd"), ["a b", "c+d"]);
        assert_eq!(segments("//a///b/"), ["a", "b"]);
        assert_eq!(segments("/%C3%A9t%C3%A9.html"), ["été.html"]);
    }

    #[test]
    fn query_and_fragment_are_stripped() {
        assert_eq!(segments("/app.js?v=3"), ["app.js"]);
        assert_eq!(segments("/x#top"), ["x"]);
        assert_eq!(segments("/?a=/../../etc/passwd"), Vec::<String>::new());
    }

    #[test]
    fn trailing_slash_marks_a_folder() {
        assert!(parse_target("/").unwrap().trailing_slash);
        assert!(parse_target("/docs/").unwrap().trailing_slash);
        assert!(!parse_target("/docs").unwrap().trailing_slash);
        assert_eq!(parse_target("/docs?x").unwrap().raw, "/docs");
    }

    #[test]
    fn dot_segments_are_refused_encoded_or_not() {
        for target in [
            "/..",
            "/../etc/passwd",
            "/a/../../b",
            "/a/./b",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/.%2e/x",
            "/%2e/x",
            "/a/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "/..%2f..%2fetc/passwd",
            "/..%5c..%5cwindows",
            "/a%5cb",
            "/a%00.html",
        ] {
            assert_eq!(parse_target(target), Err(PathError::Traversal), "{target}");
        }
    }

    #[test]
    fn non_origin_and_badly_encoded_targets_are_malformed() {
        for target in ["", "*", "etc/passwd", "/%", "/%2", "/%zz", "/%ff%fe"] {
            assert_eq!(parse_target(target), Err(PathError::Malformed), "{target}");
        }
    }

    #[test]
    fn absolute_form_keeps_only_the_path() {
        assert_eq!(segments("http://example.com/a/b"), ["a", "b"]);
        assert_eq!(segments("HTTP://example.com"), Vec::<String>::new());
        assert_eq!(
            parse_target("http://example.com/../x"),
            Err(PathError::Traversal)
        );
    }

    #[test]
    fn hidden_names_are_not_served() {
        assert_eq!(parse_target("/.git/config"), Err(PathError::Hidden));
        assert_eq!(parse_target("/a/.env"), Err(PathError::Hidden));
        assert_eq!(parse_target("/%2egit/HEAD"), Err(PathError::Hidden));
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("app.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("page.png"), "image/png");
        assert_eq!(content_type("README"), "application/octet-stream");
    }

    #[test]
    fn only_get_and_head_are_allowed() {
        let files = StaticFiles::embedded();
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "get"] {
            let response = files.respond(method, "/");
            assert_eq!(response.status, 405, "{method}");
            assert!(response
                .headers
                .iter()
                .any(|(n, v)| n == "Allow" && v == "GET, HEAD"));
        }
        assert_eq!(files.respond("HEAD", "/").status, 200);
    }

    #[test]
    fn embedded_page_is_served_at_the_root() {
        let files = StaticFiles::embedded();
        let index = files.respond("GET", "/");
        assert_eq!(index.status, 200);
        assert_eq!(index.content_type, "text/html; charset=utf-8");
        assert!(index.body.starts_with(b"<!doctype html>"));
        assert_eq!(files.respond("GET", "/index.html").body, index.body);
        assert_eq!(
            files.respond("GET", "/app.js?v=1").content_type,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(files.respond("GET", "/nope.txt").status, 404);
        assert_eq!(files.respond("GET", "/../Cargo.toml").status, 400);
    }

    /// A fresh folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("wsreactor-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn folder_files_symlinks_and_size_cap() {
        let tmp = TempDir::new("static-unit");
        let root = tmp.0.join("site");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("index.html"), "<p>home</p>").unwrap();
        fs::write(root.join("sub/index.html"), "<p>sub</p>").unwrap();
        fs::write(root.join("big.bin"), vec![0u8; 2048]).unwrap();
        fs::write(tmp.0.join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(tmp.0.join("secret.txt"), root.join("out.txt")).unwrap();
        std::os::unix::fs::symlink(&tmp.0, root.join("up")).unwrap();
        std::os::unix::fs::symlink(root.join("index.html"), root.join("in.html")).unwrap();

        let files = StaticFiles::dir(&root).unwrap().with_max_file_size(1024);
        let home = files.respond("GET", "/");
        assert_eq!((home.status, &*home.body), (200, &b"<p>home</p>"[..]));
        assert_eq!(files.respond("GET", "/sub/").body.as_ref(), b"<p>sub</p>");
        let redirect = files.respond("GET", "/sub?x=1");
        assert_eq!(redirect.status, 301);
        assert!(redirect
            .headers
            .iter()
            .any(|(n, v)| n == "Location" && v == "/sub/"));
        // A symlink inside the folder is fine; one that leads out is not.
        assert_eq!(files.respond("GET", "/in.html").status, 200);
        assert_eq!(files.respond("GET", "/out.txt").status, 403);
        assert_eq!(files.respond("GET", "/up/secret.txt").status, 403);
        assert_eq!(files.respond("GET", "/../secret.txt").status, 400);
        assert_eq!(files.respond("GET", "/missing").status, 404);
        assert_eq!(files.respond("GET", "/index.html/x").status, 404);
        assert_eq!(files.respond("GET", "/big.bin").status, 500);
    }
}
