//! Prints a bcrypt hash of the password read from standard input, for the
//! web configuration file's `basic_auth_users` (what `htpasswd -nBC 10 ""`
//! prints after the colon): `echo -n 's3cret' | cargo run --example bcrypt_hash`.
//! `BCRYPT_COST` sets the cost (default 10).

use std::io::Read;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut password = String::new();
    std::io::stdin().read_to_string(&mut password)?;
    let password = password.strip_suffix('\n').unwrap_or(&password);
    let cost = std::env::var("BCRYPT_COST").ok().map(|c| c.parse()).transpose()?.unwrap_or(10);
    println!("{}", bcrypt::hash(password, cost)?);
    Ok(())
}
