//! The path as the target will read it: what the route match and the
//! forwarded path agree on.
//!
//! A route's policy guards what the target (a component or an HTTP
//! upstream) serves under the route's prefix. That holds only if the
//! gateway reads the path as the target does, and servers differ:
//!
//! - Percent-encoded unreserved characters (`%61` for `a`, `%2e` for `.`)
//!   are the same path as the characters themselves (RFC 3986 6.2.2.2), and
//!   every server decodes them. [`normalise`] decodes them before the route
//!   match, and the decoded path is what the target receives: both read
//!   the same segments. Other escapes (`%2F`, `%20`, ...) are kept as sent.
//! - `.` and `..` segments (after that decoding) are refused: servers
//!   resolve them differently or not at all, and no ordinary client sends
//!   them (browsers and curl resolve them before sending).
//! - Some servers ignore letter case (IIS, ASP.NET), cut `;` parameters off
//!   a segment (Tomcat, Jetty, Spring), route `admin.json` to `admin`'s
//!   handler (Rails' formats, Spring's suffix match), trim trailing dots
//!   and spaces (Windows), merge `//`, or decode `%2F` and `\` into `/`.
//!   The gateway's own match stays exact (case-sensitive, `admin;x` and
//!   `admin.json` are not `admin`), and [`loose_segments`] is the path under
//!   all of those readings at once: the gateway refuses a path that matches
//!   a route exactly but, read loosely, also matches a route as specific or
//!   more with other rules (`/legacy/Admin` next to a `/legacy/admin` that
//!   needs a token).

use std::borrow::Cow;

/// Why a path is refused before any route is matched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "path {0:?} has a '.' or '..' segment (perhaps percent-encoded): servers resolve those \
     differently; send the path they resolve to"
)]
pub struct DotSegment(pub String);

/// `path` with its percent-encoded unreserved characters (letters, digits,
/// `-`, `.`, `_`, `~`) decoded, or refused when it then has a `.` or `..`
/// segment. Borrowed when nothing was encoded.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, DotSegment> {
    let decoded = decode_unreserved(path);
    if decoded.split('/').skip(1).any(|s| s == "." || s == "..") {
        return Err(DotSegment(path.to_string()));
    }
    Ok(decoded)
}

fn decode_unreserved(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = escaped(bytes, i)
            && is_unreserved(byte)
        {
            out.push(byte as char);
            i += 3;
            continue;
        }
        // Copies whole UTF-8 sequences: `i` only ever stops on an ASCII
        // byte or the start of a character.
        let next = (i + 1..=bytes.len()).find(|&j| path.is_char_boundary(j)).unwrap_or(bytes.len());
        out.push_str(&path[i..next]);
        i = next;
    }
    Cow::Owned(out)
}

/// The byte `%XY` at `i` stands for, if `XY` are hex digits.
fn escaped(bytes: &[u8], i: usize) -> Option<u8> {
    let hex = bytes.get(i + 1..i + 3)?;
    u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// The segments of `path` as the most lenient server would read them:
/// every escape decoded, `\` as `/`, letters lower-cased, each segment cut
/// at `;` (or NUL) and trimmed of trailing spaces and dots, empty segments
/// dropped, `.` and `..` resolved.
pub fn loose_segments(path: &str) -> Vec<String> {
    let decoded = decode_all(path).replace('\\', "/").to_lowercase();
    let mut segments: Vec<String> = Vec::new();
    for segment in decoded.split('/') {
        let segment = segment.split([';', '\0']).next().unwrap_or_default();
        let segment = segment.trim_end_matches(|c: char| c.is_whitespace());
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            _ => {
                let segment = segment.trim_end_matches(['.', ' ']);
                if !segment.is_empty() {
                    segments.push(segment.to_string());
                }
            }
        }
    }
    segments
}

/// Whether `prefix` matches a path whose [`loose_segments`] are `loose`:
/// each of its segments, lower-cased, is the path's segment or the start
/// of it before a `.` (`admin` matches `admin.json`).
pub fn loosely_matches(prefix: &str, loose: &[String]) -> bool {
    let wanted: Vec<String> = prefix.split('/').skip(1).map(str::to_lowercase).collect();
    wanted.len() <= loose.len()
        && wanted.iter().zip(loose).all(|(want, seen)| {
            seen == want || seen.strip_prefix(want.as_str()).is_some_and(|r| r.starts_with('.'))
        })
}

/// Every escape decoded, invalid UTF-8 replaced.
fn decode_all(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = escaped(bytes, i)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept() {
        assert_eq!(normalise("/legacy/%61dmin/x").unwrap(), "/legacy/admin/x");
        assert_eq!(normalise("/legacy/adm%69n").unwrap(), "/legacy/admin");
        assert_eq!(normalise("/a%2Eb/%7e%5F%2d").unwrap(), "/a.b/~_-");
        assert_eq!(normalise("/kv/a%2Fb%20c%3B%25").unwrap(), "/kv/a%2Fb%20c%3B%25");
        assert_eq!(normalise("/caf\u{e9}/%zz/%4").unwrap(), "/caf\u{e9}/%zz/%4");
        assert!(matches!(normalise("/users/u1").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn dot_segments_are_refused_even_encoded() {
        for odd in ["/a/../b", "/a/./b", "/a/..", "/a/%2e%2E/b", "/a/.%2e", "/a/%2E"] {
            assert!(normalise(odd).is_err(), "{odd}");
        }
        for fine in ["/a/.b", "/a/..b", "/a/b.", "/a/...", "/a/%2e%2e%2e"] {
            assert!(normalise(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn the_loose_reading_matches_what_lenient_servers_route_to_a_prefix() {
        let matches = |path: &str| loosely_matches("/legacy/admin", &loose_segments(path));
        for path in [
            "/legacy/admin",
            "/legacy/Admin/x",
            "/legacy/ADMIN",
            "/legacy/admin;x/y",
            "/legacy/admin;jsessionid=1",
            "/legacy/admin%3Bx/y",
            "/legacy/admin.json",
            "/legacy/admin.tar.gz/x",
            "/legacy/admin./x",
            "/legacy/admin%20/x",
            "/legacy//admin",
            "/legacy\\admin",
            "/legacy/x%2F..%2Fadmin",
            "/legacy/admin%00.json",
        ] {
            assert!(matches(path), "{path}");
        }
        for path in ["/legacy", "/legacy/administrator", "/legacy/admin-x", "/legacy/x/admin"] {
            assert!(!matches(path), "{path}");
        }
    }
}
