//! Unique, URL-safe identifiers.

/// A new id such as `usr_9f2c4e1a0b7d3e5f6a8c2d1e`: the prefix, an underscore and
/// 96 random bits in lower-case hex. Random rather than sequential so ids leak
/// nothing about volume and never collide across versions or restores.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the platform grants wasi:random");
    let mut id = String::with_capacity(prefix.len() + 1 + 24);
    id.push_str(prefix);
    id.push('_');
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// Whether `s` could be an id made by [`new_id`] (or any other URL-safe token):
/// non-empty, at most 128 bytes of `[A-Za-z0-9_-]`.
pub fn is_url_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
