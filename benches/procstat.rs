//! `/proc` sampling cost per agent: one `procstat::sample` (stat read, zombie
//! and kernel-thread checks, pid-reuse guard). `cargo bench --bench procstat`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

fn own_start() -> Option<chrono::DateTime<chrono::Utc>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let start: u64 = stat.rsplit_once(") ")?.1.split_whitespace().nth(19)?.parse().ok()?;
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    let tps = orchmirror::test_util::clk_tck()?;
    chrono::DateTime::from_timestamp(btime + (start / tps) as i64, 0)
}

fn sampling(c: &mut Criterion) {
    let pid = std::process::id() as i32;
    let started = own_start();
    let tolerance = Duration::from_secs(10);
    assert!(orchmirror::test_util::sample(pid, started, tolerance).is_ok_and(|s| s.is_some()), "can sample itself");
    c.bench_function("procstat/sample_live_pid", |b| {
        b.iter(|| black_box(orchmirror::test_util::sample(black_box(pid), started, tolerance)))
    });
    c.bench_function("procstat/sample_dead_pid", |b| {
        b.iter(|| black_box(orchmirror::test_util::sample(black_box(i32::MAX - 1), started, tolerance)))
    });
}

criterion_group!(benches, sampling);
criterion_main!(benches);
