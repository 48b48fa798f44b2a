//! Caught panics as values: the message a panic carried, for the error or the log that reports
//! it in the panic's place.

use std::any::Any;

/// What a panic said, when it said it with a string.
pub fn message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
