//! Small helpers the built-in sections share to build their metric families.

use std::sync::atomic::AtomicU64;

pub(crate) use prometheus_client::metrics::family::Family;
pub(crate) use prometheus_client::metrics::gauge::Gauge;
pub(crate) use prometheus_client::registry::Registry;

use prometheus_client::metrics::counter::Counter;

/// A series' labels.
pub(crate) type Labels = Vec<(String, String)>;
/// A float gauge.
pub(crate) type GaugeF = Gauge<f64, AtomicU64>;
/// A float counter.
pub(crate) type CounterF = Counter<f64, AtomicU64>;

pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

pub(crate) fn gauge(v: f64) -> GaugeF {
    let g = GaugeF::default();
    g.set(v);
    g
}

/// A gauge of a count: printed as a whole number (`6`, not `6.0`), as every
/// count in the exposition is.
pub(crate) fn count_gauge(v: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

/// A counter of a count, printed as a whole number.
pub(crate) fn count_total(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

pub(crate) fn counter(v: f64) -> CounterF {
    let c = CounterF::default();
    c.inc_by(v);
    c
}

/// `text` (OpenMetrics or Prometheus text) with every family's series in a
/// stable order: by their labels, `le` and `quantile` aside, so that a
/// histogram's or summary's lines stay together in the order they were
/// written. A family's series would otherwise come in its hash map's order,
/// which changes from one scrape to the next.
pub(crate) fn stable_order(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut series: Vec<(String, Vec<&str>)> = Vec::new();
    let flush = |series: &mut Vec<(String, Vec<&str>)>, out: &mut String| {
        series.sort_by(|a, b| a.0.cmp(&b.0));
        for line in series.drain(..).flat_map(|(_, lines)| lines) {
            out.push_str(line);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            flush(&mut series, &mut out);
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let key = series_key(line);
        match series.iter_mut().find(|(k, _)| *k == key) {
            Some((_, lines)) => lines.push(line),
            None => series.push((key, vec![line])),
        }
    }
    flush(&mut series, &mut out);
    out
}

/// A sample line's labels without `le` and `quantile`, as one string.
fn series_key(line: &str) -> String {
    let Some(open) = line.find('{').filter(|&i| !line[..i].contains(' ')) else {
        return String::new();
    };
    let mut pairs = Vec::new();
    let (mut start, mut in_quotes, mut escaped) = (open + 1, false, false);
    for (i, c) in line[open + 1..].char_indices().map(|(i, c)| (i + open + 1, c)) {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            ',' | '}' if !in_quotes => {
                let pair = line[start..i].trim();
                if !pair.is_empty() && !pair.starts_with("le=") && !pair.starts_with("quantile=") {
                    pairs.push(pair);
                }
                start = i + 1;
                if c == '}' {
                    break;
                }
            }
            _ => {}
        }
    }
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_come_in_label_order_and_a_histogram_stays_together() {
        let text = "# HELP a A.\n# TYPE a gauge\na{s=\"q\"} 1\na{s=\"b,}\\\"\"} 2\na{s=\"c\"} 3\n\
                    # HELP h H.\n# TYPE h histogram\nh_sum{s=\"z\"} 1\nh_count{s=\"z\"} 1\nh_bucket{s=\"z\",le=\"1\"} 1\n\
                    h_bucket{s=\"z\",le=\"+Inf\"} 1\nh_sum{s=\"a\"} 2\nh_count{s=\"a\"} 2\nh_bucket{s=\"a\",le=\"1\"} 2\n\
                    h_bucket{s=\"a\",le=\"+Inf\"} 2\n# HELP u U.\nu 7\n# EOF\n";
        let want = "# HELP a A.\n# TYPE a gauge\na{s=\"b,}\\\"\"} 2\na{s=\"c\"} 3\na{s=\"q\"} 1\n\
                    # HELP h H.\n# TYPE h histogram\nh_sum{s=\"a\"} 2\nh_count{s=\"a\"} 2\nh_bucket{s=\"a\",le=\"1\"} 2\n\
                    h_bucket{s=\"a\",le=\"+Inf\"} 2\nh_sum{s=\"z\"} 1\nh_count{s=\"z\"} 1\nh_bucket{s=\"z\",le=\"1\"} 1\n\
                    h_bucket{s=\"z\",le=\"+Inf\"} 1\n# HELP u U.\nu 7\n# EOF\n";
        assert_eq!(stable_order(text), want);
    }
}
