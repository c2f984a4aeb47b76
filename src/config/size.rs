//! Human byte sizes: `512`, `64KiB`, `1MiB`, `2GiB` (binary units; `KB`, `MB`, `GB` are
//! accepted as the same binary units, since nobody means 1000 here).

/// Parses a size; `None` on anything else.
pub fn parse(text: &str) -> Option<usize> {
    let s = text.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 15 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let unit: u64 = match s[digits..].trim_start() {
        "" | "B" => 1,
        "KiB" | "KB" | "K" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        "GiB" | "GB" | "G" => 1 << 30,
        _ => return None,
    };
    usize::try_from(n.checked_mul(unit)?).ok()
}

/// Formats a size in the largest binary unit that represents it exactly.
pub fn format(n: usize) -> String {
    for (unit, name) in [(1usize << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{}{name}", n / unit);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_round_trip() {
        assert_eq!(parse("1MiB"), Some(1 << 20));
        assert_eq!(parse("64 KiB"), Some(64 << 10));
        assert_eq!(parse("256MB"), Some(256 << 20));
        assert_eq!(parse("100"), Some(100));
        for bad in ["", "MiB", "1.5MiB", "-1", "1TiB", "1 MiBs"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        for n in [0, 100, 1 << 20, 3 << 30, (1 << 20) + 1] {
            assert_eq!(parse(&format(n)), Some(n));
        }
    }
}
