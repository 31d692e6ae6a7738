//! What this binary was built from (recorded by `build.rs`).

/// The crate's version, the git revision it was built from and the compiler
/// that built it ("unknown" when they could not be read at build time).
pub const BUILD: Build = Build {
    version: env!("CARGO_PKG_VERSION"),
    revision: env!("ORCHMIRROR_GIT_REVISION"),
    rustc_version: env!("ORCHMIRROR_RUSTC_VERSION"),
};

/// See [`BUILD`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Build {
    /// `CARGO_PKG_VERSION`.
    pub version: &'static str,
    /// `git rev-parse --short=12 HEAD` at build time.
    pub revision: &'static str,
    /// `rustc --version` of the compiler.
    pub rustc_version: &'static str,
}
