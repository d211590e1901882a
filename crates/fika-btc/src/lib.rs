//! The Bitcoin-like chain.
