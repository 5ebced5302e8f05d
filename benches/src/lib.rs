//! volley benchmarks.
