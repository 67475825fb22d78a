//! The run's trace: every scheduled step and every journalled fact, hashed (FNV-1a, 64 bit)
//! so two runs of one seed can be compared by one number, and printed with `--trace`.

use chrono::{DateTime, Utc};

use crate::store::Entry;

pub struct Trace {
    print: bool,
    hash: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    pub fn new(print: bool) -> Self {
        Trace {
            print,
            hash: FNV_OFFSET,
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    fn absorb(&mut self, line: &str) {
        for byte in line.bytes().chain(std::iter::once(b'\n')) {
            self.hash ^= u64::from(byte);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
    }

    /// A scheduling decision or an observation.
    pub fn note(&mut self, now: DateTime<Utc>, text: &str) {
        let line = format!("{} {text}", now.format("%H:%M:%S%.3f"));
        self.absorb(&line);
        if self.print {
            println!("{line}");
        }
    }

    /// A journalled event.
    pub fn fact(&mut self, entry: &Entry) {
        let line = format!(
            "    #{} {} {}#{} {} {}",
            entry.position,
            entry.aggregate_type,
            entry.aggregate_id,
            entry.sequence,
            entry.event_type,
            entry.payload
        );
        self.absorb(&line);
        if self.print {
            println!("{line}");
        }
    }
}
