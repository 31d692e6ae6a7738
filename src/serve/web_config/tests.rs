//! Unit tests of `web_config`.

use super::*;

#[test]
fn a_cost_above_the_maximum_is_an_error_naming_the_user() {
    let ok = bcrypt::hash("secret", 4).expect("hash");
    let too_high = format!("$2b$15${}", &ok[7..]);
    let e = WebConfig::parse(&format!("basic_auth_users:\n  alice: {ok}\n  bob: {too_high}\n"), Path::new("."))
        .expect_err("cost 15");
    assert!(e.contains("bob") && e.contains("15") && e.contains("14"), "{e}");
    let at_max = format!("$2b$14${}", &ok[7..]);
    assert!(WebConfig::parse(&format!("basic_auth_users:\n  bob: {at_max}\n"), Path::new(".")).is_ok());
}

/// An unknown user is checked against a hash of the users' highest cost.
#[test]
fn the_dummy_hash_has_the_users_highest_cost_and_matches_nothing() {
    let low = bcrypt::hash("a", 4).expect("hash");
    let high = bcrypt::hash("b", 6).expect("hash");
    let config =
        WebConfig::parse(&format!("basic_auth_users:\n  a: {low}\n  b: {high}\n"), Path::new(".")).expect("valid");
    let parts: bcrypt::HashParts = config.dummy.parse().expect("a bcrypt hash");
    assert_eq!(parts.get_cost(), 6);
    assert!(!bcrypt::verify("", &config.dummy).expect("verifies"));
    assert!(!bcrypt::verify("orchmirror: not a user", &config.dummy).expect("verifies"));
}

#[test]
fn an_address_waits_after_its_free_failures_and_the_wait_doubles() {
    let now = Instant::now();
    let strikes = |count| Strikes { count, last: now };
    assert_eq!(strikes(FREE_FAILURES - 1).wait(), None);
    let first = strikes(FREE_FAILURES).wait().expect("waits");
    assert!(first <= Duration::from_secs(1) && first > Duration::from_millis(500), "{first:?}");
    let third = strikes(FREE_FAILURES + 2).wait().expect("waits");
    assert!(third > Duration::from_secs(3) && third <= Duration::from_secs(4), "{third:?}");
    assert!(strikes(FREE_FAILURES + 30).wait().expect("waits") <= MAX_BACKOFF);
    let old = Strikes { count: FREE_FAILURES + 3, last: now.checked_sub(STRIKE_WINDOW).unwrap_or(now) };
    assert_eq!(old.wait(), None, "failures older than the window are forgotten");
}

#[test]
fn the_toolkit_format_is_read_and_what_is_not_supported_is_named() {
    let hash = bcrypt::hash("secret", 4).expect("hash");
    let ok = WebConfig::parse(&format!(
        "basic_auth_users:\n  alice: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: \"\"\n"
    ), Path::new("."))
    .expect("valid");
    assert_eq!(ok.users.len(), 1);
    assert_eq!(ok.headers.len(), 1, "a blank header is unset");
    assert!(WebConfig::parse("", Path::new(".")).expect("empty").users.is_empty());
    for (text, key) in [
        ("tls_server_config:\n  cert_file: /nonexistent/a.crt\n  key_file: a.key\n", "cert_file"),
        ("tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "cipher_suites"),
        ("rate_limit:\n  interval: 1s\n  burst: 2\n", "rate_limit"),
        ("http_server_config:\n  http2: maybe\n", "http2"),
        ("basic_auth_user:\n  a: b\n", "basic_auth_user"),
        ("basic_auth_users:\n  bob: plaintext\n", "bob"),
        ("http_server_config:\n  headers:\n    X-Powered-By: me\n", "X-Powered-By"),
    ] {
        let e = WebConfig::parse(text, Path::new(".")).expect_err(text);
        assert!(e.contains(key), "{text}: {e}");
    }
}
