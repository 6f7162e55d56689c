//! Helpers for end-to-end tests with real `mokvd` processes.
