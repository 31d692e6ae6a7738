//! The benchmarks' writer: commits the orchestrator's pattern
//! (`orchmirror::tools::pattern`) to a database for a while, as a busy
//! orchestrator with a long history would.
//!
//! `cargo run --release --example pattern_writer -- DB RATE SECONDS [PROBE_HZ]`
//!
//! RATE commits a second (0: as many as it can make), for SECONDS, in the
//! database's own journal mode. With PROBE_HZ, that many commits a second
//! are probes (a task named `PROBE-<n>`), each printed as `probe <n>
//! <unix nanoseconds after COMMIT returned>` so a reader can time commit to
//! visible. Ends with `commits <n> seconds <s>` on stdout.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orchmirror::tools::pattern::PatternWriter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, rate, seconds, rest @ ..] = args.as_slice() else {
        return Err("usage: pattern_writer DB RATE SECONDS [PROBE_HZ]".into());
    };
    let rate: f64 = rate.parse().map_err(|e| format!("RATE {rate:?}: {e}"))?;
    let seconds: f64 = seconds.parse().map_err(|e| format!("SECONDS {seconds:?}: {e}"))?;
    let probe_hz: f64 = match rest.first() {
        Some(p) => p.parse().map_err(|e| format!("PROBE_HZ {p:?}: {e}"))?,
        None => 0.0,
    };
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut writer = PatternWriter::new(conn, 7);
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let gap = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let probe_gap = (probe_hz > 0.0).then(|| Duration::from_secs_f64(1.0 / probe_hz));
    let (mut next, mut next_probe) = (start, start + Duration::from_millis(100));
    let mut commits = 0u64;
    let mut out = std::io::stdout().lock();
    while Instant::now() < until {
        if let Some(pg) = probe_gap
            && Instant::now() >= next_probe
        {
            let n = writer.probe()?;
            let ns = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
            writeln!(out, "probe {n} {ns}")?;
            out.flush()?;
            // Probes at jittered moments, so they do not fall in step with the mirror's timers.
            next_probe += pg.mul_f64(0.5 + fastrand::f64());
        } else {
            writer.commit()?;
        }
        commits += 1;
        if let Some(gap) = gap {
            next += gap;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
    writeln!(out, "commits {commits} seconds {:.3}", start.elapsed().as_secs_f64())?;
    Ok(())
}
