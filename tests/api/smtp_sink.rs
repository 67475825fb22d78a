//! The SMTP sink the tests send mail to: `latchkey::sim::smtp` (real SMTP over TCP on a
//! free port of 127.0.0.1; the demo runs the same one).

pub use latchkey::sim::smtp::{Received, SmtpSink, Stall};
