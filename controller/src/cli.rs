//! The `trireme` operator CLI (everything but `trireme cert`).
