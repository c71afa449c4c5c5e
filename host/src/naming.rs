//! The one rule for the names pitstop gives meaning to: a component's name
//! and each dot-separated word of a topic are `[a-z][a-z0-9-]*`. A leaf
//! module, so the bus and the control plane share it without importing
//! each other.

/// A component name: a word (see [`is_word`]) of at most 63 bytes.
pub fn is_valid_name(name: &str) -> bool {
    name.len() <= 63 && is_word(name)
}

/// `[a-z][a-z0-9-]*`: the rule for component names and for each word of a
/// topic.
pub fn is_word(word: &str) -> bool {
    let bytes = word.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}
