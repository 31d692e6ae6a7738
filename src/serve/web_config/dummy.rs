//! The hash an unknown user's password is checked against.

/// A bcrypt hash of `cost` for unknown users: verifying a password against
/// it takes what a known user's check of that cost takes. Made from one hash
/// of the lowest cost with its cost field raised (bcrypt's work is in the
/// check, and the result only has to match no password a client sends).
pub(super) fn dummy_hash(cost: u32) -> String {
    static BASE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let base = BASE.get_or_init(|| {
        bcrypt::hash_with_salt("orchmirror: not a user", bcrypt::DEFAULT_COST.min(4), *b"orchmirror-dummy")
            .ok()
            .map(|h| h.format_for_version(bcrypt::Version::TwoB))
    });
    match base.as_deref().and_then(|b| b.get(7..)) {
        Some(rest) => format!("$2b${cost:02}${rest}"),
        // Hashing at the lowest cost cannot fail; should it, no hash verifies, at no cost.
        None => String::new(),
    }
}
