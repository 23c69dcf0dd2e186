//! Tools for trying and measuring Sluice on a laptop, never part of what
//! `sluice serve` runs in Azure: the demo, the benchmarks, the sample API,
//! the load generator, the local weighted router and the Prometheus
//! launcher. Built only with the `devtools` feature (on by default; the
//! Functions package is built without it).

pub mod azurite;
pub mod bench;
pub mod bench_idle;
pub mod bench_judge;
pub mod bench_scale;
pub mod bench_soak;
pub mod demo;
pub mod load;
pub mod prometheus;
pub mod router;
pub mod sample_app;
