//! The vendored actix-http is auditable (issue 32): `vendor/actix-http.patch`
//! is its whole difference from the published 3.20.0 (checked against the
//! download by `scripts/vendor-check.sh`, which CI runs), every hunk of a
//! source file in it is marked `orchmirror patch`, and the patch describes
//! the vendored files as they are (no edit left out of it).

use std::path::Path;

/// The patch's hunks: the file each changes, and its lines.
fn hunks(patch: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut file = String::new();
    for line in patch.lines() {
        if let Some(path) = line.strip_prefix("+++ b/") {
            file = path.to_owned();
        } else if line.starts_with("@@") {
            out.push((file.clone(), Vec::new()));
        } else if let Some((_, lines)) = out.last_mut()
            && !line.starts_with("diff ")
            && !line.starts_with("--- ")
        {
            lines.push(line.to_owned());
        }
    }
    out
}

#[test]
fn every_edit_of_the_vendored_crate_is_marked_and_in_the_patch() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let patch = std::fs::read_to_string(root.join("vendor/actix-http.patch")).expect("vendor/actix-http.patch");
    let hunks = hunks(&patch);
    assert!(hunks.len() >= 5, "the patch has its hunks: {}", hunks.len());
    for (file, lines) in &hunks {
        let vendored = std::fs::read_to_string(root.join("vendor/actix-http").join(file)).expect("a patched file");
        // The new side of the hunk (context and added lines) is in the vendored file, in order.
        let new_side: Vec<&str> =
            lines.iter().filter(|l| !l.starts_with('-')).map(|l| l.get(1..).unwrap_or_default()).collect();
        assert!(
            vendored.contains(&new_side.join("\n")),
            "{file}: a hunk of the patch is not what the vendored file holds:\n{}",
            lines.join("\n")
        );
        if file.ends_with(".rs") {
            assert!(
                lines.iter().any(|l| l.starts_with('+') && l.contains("orchmirror patch")),
                "{file}: an edit without the `orchmirror patch` marker:\n{}",
                lines.join("\n")
            );
        }
    }
    // And no marked edit outside the patch.
    for file in ["src/h1/codec.rs", "src/h1/dispatcher.rs"] {
        let vendored = std::fs::read_to_string(root.join("vendor/actix-http").join(file)).expect("read");
        let marked = vendored.matches("orchmirror patch").count();
        let in_patch = hunks
            .iter()
            .filter(|(f, _)| f == file)
            .flat_map(|(_, l)| l.iter())
            .filter(|l| l.starts_with('+') && l.contains("orchmirror patch"))
            .count();
        assert_eq!(marked, in_patch, "{file}: every marked edit is in the patch");
    }
}
