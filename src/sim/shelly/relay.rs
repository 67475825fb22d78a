//! One simulated relay output: its state, its device-side flip-back timer, its
//! `auto_off` config and a log of every change with its cause.
//!
//! Timers are evaluated lazily against the simulator clock ([`SimRelay::settle`] runs
//! before every read or write), and a change made by a timer is logged at the instant
//! the timer fell due, not when someone looked. So advancing the clock past a timer and
//! then reading shows exactly what a device left alone would have done.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Log entries kept per relay; older ones are dropped first.
const RELAY_LOG_MAX: usize = 1_000;

/// Why a relay changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelaySource {
    /// A Cloud or RPC command.
    Command,
    /// The device's own timer switched it OFF (`toggle_after` or `auto_off` config).
    AutoOff,
    /// The device's own timer switched it ON (`toggle_after` sent with an OFF).
    TimerOn,
    /// Switched behind Latchkey's back (button, app, another integration).
    External,
    /// Power cycle: back to the initial state, timers lost.
    Reboot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayLogEntry {
    pub at: DateTime<Utc>,
    pub at_ms: i64,
    pub on: bool,
    pub source: RelaySource,
    /// Which interface carried a command (`cloud_v2`, `local_rpc`, `control`), or `device`.
    pub via: String,
}

/// A relay as tests see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayView {
    pub channel: u32,
    pub output: bool,
    /// The device's `source` field (`SHC`, `http`, `timer`, `button`, `init`).
    pub source: String,
    pub timer_started_at_ms: Option<i64>,
    pub timer_duration_ms: Option<i64>,
    pub auto_off_delay_s: Option<u64>,
    pub log: Vec<RelayLogEntry>,
}

#[derive(Debug, Clone, Copy)]
struct Timer {
    started_ms: i64,
    duration_ms: i64,
    /// The output the timer sets when it falls due (the opposite of the commanded one).
    flips_to: bool,
}

/// What caused a write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cause {
    pub source: RelaySource,
    /// `via` for the log.
    pub via: &'static str,
    /// The device's `source` field after the change.
    pub device_source: &'static str,
}

#[derive(Debug, Clone)]
pub(crate) struct SimRelay {
    output: bool,
    device_source: String,
    timer: Option<Timer>,
    pub auto_off_delay_s: Option<u64>,
    log: Vec<RelayLogEntry>,
}

impl SimRelay {
    pub(crate) fn new(auto_off_delay_s: Option<u64>) -> Self {
        Self {
            output: false,
            device_source: "init".into(),
            timer: None,
            auto_off_delay_s,
            log: Vec::new(),
        }
    }

    /// Fires every timer due by `now_ms`, in order.
    pub(crate) fn settle(&mut self, now_ms: i64) {
        while let Some(timer) = self.timer {
            let due_ms = timer.started_ms.saturating_add(timer.duration_ms);
            if now_ms < due_ms {
                break;
            }
            self.output = timer.flips_to;
            self.device_source = "timer".into();
            self.timer = None;
            let source = if timer.flips_to {
                RelaySource::TimerOn
            } else {
                RelaySource::AutoOff
            };
            self.push_log(due_ms, timer.flips_to, source, "device");
            if timer.flips_to {
                self.arm_auto_off(due_ms);
            }
        }
    }

    /// Sets the output; returns `was_on`. `toggle_after_s` arms a flip-back timer; an ON
    /// without one arms the `auto_off` config, if any. Any write cancels a pending timer,
    /// except a repeated ON when `restart_on_repeat` is false (a knob: unconfirmed).
    pub(crate) fn set(
        &mut self,
        on: bool,
        toggle_after_s: Option<f64>,
        cause: Cause,
        now_ms: i64,
        restart_on_repeat: bool,
    ) -> bool {
        self.settle(now_ms);
        let was_on = self.output;
        let keep_timer = on && was_on && self.timer.is_some() && !restart_on_repeat;
        self.output = on;
        self.device_source = cause.device_source.into();
        if !keep_timer {
            self.timer = None;
            match toggle_after_s {
                Some(seconds) => {
                    self.timer = Some(Timer {
                        started_ms: now_ms,
                        duration_ms: (seconds * 1000.0).round() as i64,
                        flips_to: !on,
                    })
                }
                None if on => self.arm_auto_off(now_ms),
                None => {}
            }
        }
        self.push_log(now_ms, on, cause.source, cause.via);
        was_on
    }

    /// Power cycle: initial state OFF, timers lost (assumed; unconfirmed for real devices).
    pub(crate) fn reboot(&mut self, now_ms: i64) {
        self.settle(now_ms);
        self.output = false;
        self.device_source = "init".into();
        self.timer = None;
        self.push_log(now_ms, false, RelaySource::Reboot, "device");
    }

    pub(crate) fn output(&self) -> bool {
        self.output
    }

    /// The Gen2 `Switch.GetStatus` result / cloud `switch:<n>` object.
    pub(crate) fn status_json(&self, channel: u32) -> Value {
        let mut status = json!({
            "id": channel,
            "source": self.device_source,
            "output": self.output,
            "apower": if self.output { 1200.0 } else { 0.0 },
            "voltage": 230.1,
            "current": if self.output { 5.2 } else { 0.0 },
            "temperature": { "tC": 41.2, "tF": 106.2 },
        });
        if let Some(timer) = self.timer {
            status["timer_started_at"] = json!(timer.started_ms as f64 / 1000.0);
            status["timer_duration"] = json!(timer.duration_ms as f64 / 1000.0);
        }
        status
    }

    /// The Gen2 `Switch.GetConfig` result / cloud settings object.
    pub(crate) fn config_json(&self, channel: u32) -> Value {
        json!({
            "id": channel,
            "name": null,
            "in_mode": "follow",
            "initial_state": "off",
            "auto_on": false,
            "auto_on_delay": 60.0,
            "auto_off": self.auto_off_delay_s.is_some(),
            "auto_off_delay": self.auto_off_delay_s.map_or(60.0, |s| s as f64),
        })
    }

    pub(crate) fn view(&self, channel: u32) -> RelayView {
        RelayView {
            channel,
            output: self.output,
            source: self.device_source.clone(),
            timer_started_at_ms: self.timer.map(|t| t.started_ms),
            timer_duration_ms: self.timer.map(|t| t.duration_ms),
            auto_off_delay_s: self.auto_off_delay_s,
            log: self.log.clone(),
        }
    }

    fn arm_auto_off(&mut self, from_ms: i64) {
        if let Some(delay_s) = self.auto_off_delay_s {
            self.timer = Some(Timer {
                started_ms: from_ms,
                duration_ms: i64::try_from(delay_s).unwrap_or(i64::MAX / 1000) * 1000,
                flips_to: false,
            });
        }
    }

    fn push_log(&mut self, at_ms: i64, on: bool, source: RelaySource, via: &str) {
        if self.log.len() >= RELAY_LOG_MAX {
            self.log.remove(0);
        }
        self.log.push(RelayLogEntry {
            at: DateTime::from_timestamp_millis(at_ms).unwrap_or_default(),
            at_ms,
            on,
            source,
            via: via.to_owned(),
        });
    }
}
