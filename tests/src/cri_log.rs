//! The CRI container log format kubelet reads:
//! `<RFC 3339 timestamp> <stdout|stderr> <F|P> <content>`, one entry per line.

/// One parsed log line; fields borrow from the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CriLogLine<'a> {
    pub timestamp: &'a str,
    pub stream: &'a str,
    /// `F` for a full line, `P` for a partial one continued in the next entry.
    pub tag: &'a str,
    pub content: &'a str,
}

/// Splits a line (without its newline) into its four fields; no validation.
pub fn parse_cri_log_line(line: &str) -> Option<CriLogLine<'_>> {
    let mut fields = line.splitn(4, ' ');
    Some(CriLogLine {
        timestamp: fields.next()?,
        stream: fields.next()?,
        tag: fields.next()?,
        content: fields.next()?,
    })
}

/// Parses a line and checks every field against the format: timestamp
/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (exactly 9 fractional digits, UTC),
/// stream `stdout` or `stderr`, tag `F` or `P`.
pub fn validate_cri_log_line(line: &str) -> Result<CriLogLine<'_>, String> {
    let parsed = parse_cri_log_line(line).ok_or_else(|| format!("not 4 fields: {line:?}"))?;
    if !is_valid_timestamp(parsed.timestamp) {
        return Err(format!("bad timestamp in {line:?}"));
    }
    if !matches!(parsed.stream, "stdout" | "stderr") {
        return Err(format!("bad stream in {line:?}"));
    }
    if !matches!(parsed.tag, "F" | "P") {
        return Err(format!("bad tag in {line:?}"));
    }
    Ok(parsed)
}

/// Validates a whole log file's content, which must end with a newline.
pub fn parse_cri_log(text: &str) -> Result<Vec<CriLogLine<'_>>, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(format!("log does not end with a newline: {text:?}"));
    }
    text.lines().map(validate_cri_log_line).collect()
}

fn is_valid_timestamp(timestamp: &str) -> bool {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.dddddddddZ";
    let bytes = timestamp.as_bytes();
    let shaped = bytes.len() == SHAPE.len()
        && bytes.iter().zip(SHAPE).all(|(&byte, &want)| match want {
            b'd' => byte.is_ascii_digit(),
            _ => byte == want,
        });
    if !shaped {
        return false;
    }
    let number =
        |range: std::ops::Range<usize>| timestamp[range].parse::<u32>().unwrap_or(u32::MAX);
    (1..=12).contains(&number(5..7))
        && (1..=31).contains(&number(8..10))
        && number(11..13) < 24
        && number(14..16) < 60
        // 60 allows a leap second.
        && number(17..19) <= 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_containerd_style_line() {
        let line = "2016-10-06T00:17:09.669794202Z stdout F hello world";
        let parsed = validate_cri_log_line(line).expect("valid line");
        assert_eq!(parsed.stream, "stdout");
        assert_eq!(parsed.tag, "F");
        assert_eq!(parsed.content, "hello world");
    }

    #[test]
    fn accepts_empty_content() {
        let parsed =
            validate_cri_log_line("2016-10-06T00:17:09.669794202Z stderr P ").expect("valid line");
        assert_eq!(parsed.content, "");
    }

    #[test]
    fn rejects_bad_fields() {
        for line in [
            "2016-10-06T00:17:09.6697942Z stdout F short fraction",
            "2016-10-06T00:17:09.669794202+00:00 stdout F offset",
            "2016-13-06T00:17:09.669794202Z stdout F month",
            "2016-10-06T00:17:09.669794202Z stdin F stream",
            "2016-10-06T00:17:09.669794202Z stdout X tag",
            "2016-10-06T00:17:09.669794202Z stdout",
        ] {
            assert!(validate_cri_log_line(line).is_err(), "accepted {line:?}");
        }
    }

    #[test]
    fn whole_log_needs_trailing_newline() {
        let line = "2016-10-06T00:17:09.669794202Z stdout F a";
        assert_eq!(parse_cri_log(&format!("{line}\n")).map(|l| l.len()), Ok(1));
        assert!(parse_cri_log(line).is_err());
    }
}
