//! How pages show times, sizes and shares.

/// `2026-12-06T06:17:49Z` (RFC 3339) for milliseconds since the epoch.
pub fn time(ms: impl std::borrow::Borrow<i64>) -> String {
    berth_core::utc(*ms.borrow())
}

/// `0.42 s`, `12 s`, `3 min 5 s`, `2 h 5 min`, `3 d 4 h` between two instants.
pub fn took(from: i64, to: i64) -> String {
    let ms = (to - from).max(0);
    match ms {
        0..1_000 => format!("{:.2} s", ms as f64 / 1000.0),
        1_000..60_000 => format!("{} s", ms / 1000),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        3_600_000..86_400_000 => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
        _ => format!("{} d {} h", ms / 86_400_000, ms % 86_400_000 / 3_600_000),
    }
}

/// A duration in milliseconds, as [`took`] says it.
pub fn duration_ms(ms: impl std::borrow::Borrow<u64>) -> String {
    took(0, i64::try_from(*ms.borrow()).unwrap_or(i64::MAX))
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// How an operator's answer went, in a sentence.
pub fn input_status(i: &berth_api::wire::OperatorInputView) -> String {
    let what = match i.action.as_str() {
        "complete" => "Details",
        "fail" => "Failure",
        _ => "Cancellation",
    };
    let by = if i.submitted_by == "operator" {
        "an operator"
    } else {
        "the provider"
    };
    match (i.status.as_str(), &i.error) {
        ("applied", _) => format!("{what} sent by {by} at {}, applied by the agent", time(i.submitted_at)),
        ("not_applied", Some(e)) => format!("{what} sent by {by} at {} not applied: {e}", time(i.submitted_at)),
        _ => format!(
            "{what} sent by {by} at {}: waiting for the agent to take it",
            time(i.submitted_at)
        ),
    }
}

/// How much of `total` is used when `free` is left, in whole percent.
pub fn used_percent(total: u64, free: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    (total.saturating_sub(free) * 100).div_ceil(total).min(100)
}

/// `2 GiB` or `1536 MiB`.
pub fn mib(m: impl std::borrow::Borrow<u64>) -> String {
    let m = *m.borrow();
    if m >= 1024 && m % 1024 == 0 {
        format!("{} GiB", m / 1024)
    } else {
        format!("{m} MiB")
    }
}

/// `1 core · 2 GiB · 20 GiB disk`.
pub fn size(
    cores: impl std::borrow::Borrow<u32>,
    memory_mib: impl std::borrow::Borrow<u64>,
    disk_gib: impl std::borrow::Borrow<u64>,
) -> String {
    let cores = *cores.borrow();
    format!(
        "{cores} core{} · {} · {} GiB disk",
        if cores == 1 { "" } else { "s" },
        mib(memory_mib),
        disk_gib.borrow()
    )
}

/// A stage's name in words.
pub fn stage(s: &str) -> &str {
    match s {
        "clone_template" => "Create the VM from its template",
        "configure_vm" => "Configure CPU, memory, disk and cloud-init",
        "start_vm" => "Start the VM",
        "wait_network" => "Wait for its network address",
        "post_provision" => "Run the post-provision commands",
        "register" => "Register the machine",
        "waiting_for_operator" => "Wait for an operator to build it",
        "cleanup" => "Clean up what the failed attempt made",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
        assert_eq!(time(1_796_538_669_000), "2026-12-06T06:31:09Z");
        assert_eq!(time(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(took(0, 420), "0.42 s");
        assert_eq!(took(0, 185_000), "3 min 5 s");
        assert_eq!(took(0, 7_500_000), "2 h 5 min");
        assert_eq!(took(0, 3 * 86_400_000 + 4 * 3_600_000), "3 d 4 h");
        assert_eq!(used_percent(8, 2), 75);
        assert_eq!(used_percent(0, 0), 0);
        assert_eq!(used_percent(3, 2), 34);
        assert_eq!(mib(2048), "2 GiB");
        assert_eq!(mib(1536), "1536 MiB");
        assert_eq!(size(1u32, 1024u64, 10u64), "1 core · 1 GiB · 10 GiB disk");
        assert_eq!(size(4u32, 1536u64, 10u64), "4 cores · 1536 MiB · 10 GiB disk");
    }
}
