//! shiplog's benchmarks, its demo generator, and the event generator that the tests and
//! the benchmarks share.
//!
//! - [`sample`]: the one generator of valid events (`tests/support` re-exports it) and
//!   request bodies of them;
//! - [`ingest`]: `shiplog bench ingest` (durable ingest against a no-op server in the same
//!   run), `bench decode` (the request decoder's two paths), `bench freshness` (ack to
//!   visible in a query);
//! - [`soak`]: `shiplog bench soak` and `bench rss`, on a child `shiplog serve`;
//! - [`dashboards`]: `shiplog bench dashboards`, shiplog's engine against plain DuckDB over
//!   the same Parquet files of [`history`] events;
//! - [`judgement`]: `shiplog bench judgement`, the rollback judge on seeded simulations
//!   (false rollbacks and detection, per method, with and without counts);
//! - [`demo`]: 90 days of realistic data for `shiplog demo` and `serve --demo`.
//!
//! Every benchmark prints figures, with a peer measured in the same run where there is one;
//! none asserts on time. The HTTP server and the dashboards engine come in from the binary
//! (a router builder, a [`dashboards::DashboardEngine`]): only the binary depends on
//! `shiplog-web`.
//!
//! Errors are `anyhow`, unlike the other library crates: a benchmark is a program whose
//! every failure ends the run with its message, and no caller chooses among variants.

pub mod dashboards;
pub mod demo;
pub mod history;
pub mod ingest;
pub mod judgement;
pub mod sample;
pub mod soak;
