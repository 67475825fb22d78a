#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests of the TTLock and Shelly clients against their simulators, over
//! real HTTP on 127.0.0.1. Set `TEST_LOG=1` to see the clients' tracing output.

mod shelly;
mod sim_helpers;
mod ttlock;
