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

pub(crate) fn counter(v: f64) -> CounterF {
    let c = CounterF::default();
    c.inc_by(v);
    c
}
