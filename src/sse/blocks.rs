//! Blocks the relay writes on its own: each is a complete block (it ends with
//! a blank line), so injected at an event boundary it changes no event.
//! Rendered once from config, then cloned (a refcount bump) per write.

use bytes::Bytes;

/// A heartbeat comment block: `": text\n\n"` (`": \n\n"` for empty text).
///
/// `text` should have passed [`validate_comment`]; if it still holds line
/// breaks, each piece becomes its own comment line so the block stays one
/// harmless block instead of leaking a field or an early blank line.
pub fn comment_block(text: &str) -> Bytes {
    let mut out = Vec::with_capacity(text.len() + 4);
    push_comment(&mut out, text);
    out.push(b'\n');
    Bytes::from(out)
}

/// The opening block written right after the response headers:
/// `": <comment>\n"`, then a padding comment line of exactly `padding` bytes
/// (`":"`, spaces, `"\n"`), then `"retry: N\n"`, then the blank line.
/// `None` when all three are absent (`comment` is `None`, `padding` is 0,
/// `retry_ms` is `None`).
///
/// The shortest comment line is `":\n"`, so a `padding` of 1 yields 2 bytes.
/// `padding` is not capped here; config validation bounds it.
pub fn open_block(comment: Option<&str>, padding: usize, retry_ms: Option<u64>) -> Option<Bytes> {
    if comment.is_none() && padding == 0 && retry_ms.is_none() {
        return None;
    }
    let padding_len = if padding == 0 { 0 } else { padding.max(2) };
    let mut out = Vec::with_capacity(comment.map_or(0, |c| c.len() + 3) + padding_len + 32);
    if let Some(text) = comment {
        push_comment(&mut out, text);
    }
    if padding_len > 0 {
        out.push(b':');
        out.resize(out.len() + padding_len - 2, b' ');
        out.push(b'\n');
    }
    if let Some(ms) = retry_ms {
        out.extend_from_slice(format!("retry: {ms}\n").as_bytes());
    }
    out.push(b'\n');
    Some(Bytes::from(out))
}

/// A reconnection-time hint block: `"retry: N\n\n"`.
pub fn retry_block(retry_ms: u64) -> Bytes {
    Bytes::from(format!("retry: {retry_ms}\n\n"))
}

/// Checks a configured comment text (`open_comment`, `heartbeat_comment`).
pub fn validate_comment(text: &str) -> Result<(), String> {
    match text.find(['\r', '\n']) {
        None => Ok(()),
        Some(at) => Err(format!(
            "comment text {text:?} contains a line break (CR or LF) at byte {at}: \
             it would end the comment line, and the rest would be read as an event \
             field or a blank line that ends the current event; use a single line"
        )),
    }
}

/// Appends `text` as comment line(s): `": " + line + "\n"` per line of `text`.
fn push_comment(out: &mut Vec<u8>, text: &str) {
    for line in text.split("\r\n").flat_map(|s| s.split(['\r', '\n'])) {
        out.extend_from_slice(b": ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_block_shapes() {
        assert_eq!(comment_block(""), Bytes::from_static(b": \n\n"));
        assert_eq!(comment_block("ping"), Bytes::from_static(b": ping\n\n"));
        // Line breaks never escape the comment.
        assert_eq!(
            comment_block("a\r\nb\rc\nd"),
            Bytes::from_static(b": a\n: b\n: c\n: d\n\n")
        );
    }

    #[test]
    fn open_block_shapes() {
        assert_eq!(open_block(None, 0, None), None);
        assert_eq!(
            open_block(Some("ok"), 0, None).unwrap(),
            Bytes::from_static(b": ok\n\n")
        );
        assert_eq!(
            open_block(Some(""), 0, None).unwrap(),
            Bytes::from_static(b": \n\n")
        );
        assert_eq!(
            open_block(Some("ok"), 5, Some(3000)).unwrap(),
            Bytes::from_static(b": ok\n:   \nretry: 3000\n\n")
        );
        assert_eq!(
            open_block(None, 0, Some(0)).unwrap(),
            Bytes::from_static(b"retry: 0\n\n")
        );
    }

    #[test]
    fn padding_line_is_exactly_padding_bytes() {
        for padding in [2usize, 3, 100, 2048] {
            let block = open_block(None, padding, None).unwrap();
            // Padding line plus the final blank line.
            assert_eq!(block.len(), padding + 1, "padding {padding}");
            assert!(block.starts_with(b":"));
            assert!(block.ends_with(b"\n\n"));
        }
        // One byte cannot be a comment line ("\n" alone would end the block).
        assert_eq!(
            open_block(None, 1, None).unwrap(),
            Bytes::from_static(b":\n\n")
        );
    }

    #[test]
    fn retry_block_shape() {
        assert_eq!(retry_block(1000), Bytes::from_static(b"retry: 1000\n\n"));
        assert_eq!(
            retry_block(u64::MAX),
            Bytes::from(format!("retry: {}\n\n", u64::MAX))
        );
    }

    #[test]
    fn validate_comment_rejects_line_breaks() {
        assert!(validate_comment("").is_ok());
        assert!(validate_comment("ok: fine \u{1F600}").is_ok());
        for bad in ["a\nb", "a\r", "\r\n"] {
            let err = validate_comment(bad).unwrap_err();
            assert!(err.contains("line break"), "{err}");
        }
    }
}
