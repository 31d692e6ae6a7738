//! A helper process of `tests/integration/commit_wake.rs`, run as a uid of
//! its own (a bin, built for the tests only: `test-util`): takes inotify
//! instances until the kernel refuses one (past the uid's
//! `fs.inotify.max_user_instances`), says how many, and holds them until
//! its stdin ends.

fn main() {
    // Raw inotify instances (no threads): the kernel refuses one past the
    // uid's fs.inotify.max_user_instances.
    let mut held = Vec::new();
    while held.len() < 100_000 {
        match nix::sys::inotify::Inotify::init(nix::sys::inotify::InitFlags::IN_CLOEXEC) {
            Ok(i) => held.push(i),
            Err(_) => break,
        }
    }
    println!("hog: holding {}", held.len());
    for line in std::io::stdin().lines() {
        if line.is_err() {
            break;
        }
    }
}
