//! Locking a mutex that guards plain data.
//!
//! A poisoned lock only means another thread panicked mid-update of plain data (counters, a
//! handle, a list); the data is still usable, and a key-frame request or a status read must
//! never take a streaming thread down with it. Every mutex in the daemon is taken this way.

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
