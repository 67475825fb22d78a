//! Operator pages (issue 9). `shell` is the frame every one of them uses.

pub mod shell;
