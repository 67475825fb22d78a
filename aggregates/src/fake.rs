//! Plumbing shared by the public fakes in each `services::testing` module: a queue of
//! scripted responses and a call log, both behind a mutex so the fakes are `Sync`.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex even if a panicking test poisoned it: a fake's log is still worth reading.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Scripted responses, consumed first in, first out.
#[derive(Debug)]
pub(crate) struct Script<T>(Mutex<VecDeque<T>>);

impl<T> Default for Script<T> {
    fn default() -> Self {
        Self(Mutex::new(VecDeque::new()))
    }
}

impl<T> Script<T> {
    pub(crate) fn push(&self, response: T) {
        lock(&self.0).push_back(response);
    }

    pub(crate) fn next(&self) -> Option<T> {
        lock(&self.0).pop_front()
    }
}

/// Every call a fake received, in order.
#[derive(Debug)]
pub(crate) struct CallLog<T>(Mutex<Vec<T>>);

impl<T> Default for CallLog<T> {
    fn default() -> Self {
        Self(Mutex::new(Vec::new()))
    }
}

impl<T: Clone> CallLog<T> {
    /// Records a call and returns how many calls were recorded before it.
    pub(crate) fn record(&self, call: T) -> usize {
        let mut calls = lock(&self.0);
        calls.push(call);
        calls.len() - 1
    }

    pub(crate) fn all(&self) -> Vec<T> {
        lock(&self.0).clone()
    }
}
