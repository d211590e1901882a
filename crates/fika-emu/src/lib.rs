//! Emulation runtime.
