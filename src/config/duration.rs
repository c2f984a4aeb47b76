//! Human durations: `250ms`, `15s`, `2m`, `1h`, compounds like `1m30s`, and `0`.

use std::time::Duration;

/// Parses `500ms`, `15s`, `2m`, `1h`, `1h30m`, `0`. Returns `None` on anything else.
pub fn parse(text: &str) -> Option<Duration> {
    let s = text.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    let mut rest = s.as_bytes();
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 12 {
            return None;
        }
        let n: u128 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit_ms: u128 = match &rest[..unit_len] {
            b"ms" => 1,
            b"s" => 1_000,
            b"m" => 60_000,
            b"h" => 3_600_000,
            b"d" => 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
    }
    u64::try_from(total).ok().map(Duration::from_millis)
}

/// Formats a duration in the largest unit that represents it exactly.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000)] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("0s"), Some(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "15",
            "s",
            "1.5s",
            "-1s",
            "15x",
            "1 h",
            "99999999999999999h",
            "1hh",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for d in [0u64, 1, 999, 1000, 90_000, 3_600_000, 5_400_000] {
            let d = Duration::from_millis(d);
            assert_eq!(parse(&format(d)), Some(d));
        }
    }
}
