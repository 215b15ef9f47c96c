//! Phone numbers: parsed and validated with libphonenumber's data, kept as E.164.

use phonenumber::country;
use phonenumber::Mode;

/// A region (ISO 3166 alpha-2) that national numbers are read in.
pub type Region = country::Id;

/// Normalises `input` to E.164, or `None` when it is not a valid number.
/// National formats are read in `default_region` when one is configured.
/// Call it where requests are read (the HTTP workers), not in blocking
/// calls: libphonenumber grows regex caches on every thread that parses,
/// about 1.5 MiB each (measured: 20 threads of the blocking pool, 20 MiB).
pub fn normalize(input: &str, default_region: Option<Region>) -> Option<String> {
    let input = input.trim();
    if input.is_empty() || input.len() > 32 {
        return None;
    }
    let region = if input.starts_with('+') {
        None
    } else {
        default_region
    };
    let number = phonenumber::parse(region, input).ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    Some(number.format().mode(Mode::E164).to_string())
}

/// Parses an ISO 3166 alpha-2 region code such as `IN`.
pub fn parse_region(code: &str) -> Option<Region> {
    code.trim().to_ascii_uppercase().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_passes_through() {
        assert_eq!(
            normalize("+14155550123", None).as_deref(),
            Some("+14155550123")
        );
        assert_eq!(
            normalize("+91 98765 43210", None).as_deref(),
            Some("+919876543210")
        );
    }

    #[test]
    fn national_needs_a_region() {
        assert_eq!(normalize("9876543210", None), None);
        let india = parse_region("in");
        assert!(india.is_some());
        assert_eq!(
            normalize("09876543210", india).as_deref(),
            Some("+919876543210")
        );
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "abc", "+1", "+999999999999999999", "1234567822"] {
            assert_eq!(normalize(bad, None), None, "{bad}");
        }
    }
}
