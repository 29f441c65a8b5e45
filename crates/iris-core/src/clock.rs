//! Time as every Iris API gives it.

/// Now, in Unix milliseconds (the timestamp unit of every Iris API).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
