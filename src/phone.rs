//! Phone numbers: parsed and validated with libphonenumber's data, kept as E.164.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

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
    let key = (region, input.to_string());
    if let Some(known) = RECENT.lock().ok().and_then(|recent| recent.get(&key)) {
        return known;
    }
    let normalized = parse(input, region);
    if let Ok(mut recent) = RECENT.lock() {
        recent.insert(key, normalized.clone());
    }
    normalized
}

fn parse(input: &str, region: Option<Region>) -> Option<String> {
    let number = phonenumber::parse(region, input).ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    Some(number.format().mode(Mode::E164).to_string())
}

/// The answers for recent inputs. A login parses its phone three times
/// (getcode, verifycode, the otp grant) on whichever threads take its
/// requests, and libphonenumber's regexes made parsing 7% of the server's
/// CPU during logins. Two generations of at most `GENERATION` entries: the
/// older is dropped when the newer fills, so memory stays bounded (about
/// 0.5 MiB) whatever the inputs.
static RECENT: LazyLock<Mutex<Recent>> = LazyLock::new(Mutex::default);

const GENERATION: usize = 2048;

type Key = (Option<Region>, String);

#[derive(Default)]
struct Recent {
    newer: HashMap<Key, Option<String>>,
    older: HashMap<Key, Option<String>>,
}

impl Recent {
    fn get(&self, key: &Key) -> Option<Option<String>> {
        self.newer.get(key).or_else(|| self.older.get(key)).cloned()
    }

    fn insert(&mut self, key: Key, normalized: Option<String>) {
        if self.newer.len() >= GENERATION {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(key, normalized);
    }
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
    fn recent_answers_are_kept_within_two_generations() {
        let mut recent = Recent::default();
        let key = |i: usize| (None, format!("+1415555{i:04}"));
        for i in 0..GENERATION {
            recent.insert(key(i), Some(format!("#{i}")));
        }
        // The first of a full generation survives one turnover, not two.
        recent.insert(key(GENERATION), None);
        assert_eq!(recent.get(&key(0)), Some(Some("#0".into())));
        assert_eq!(recent.get(&key(GENERATION)), Some(None));
        for i in GENERATION + 1..2 * GENERATION + 1 {
            recent.insert(key(i), None);
        }
        assert_eq!(recent.get(&key(0)), None);
        assert!(recent.newer.len() + recent.older.len() <= 2 * GENERATION);
    }

    #[test]
    fn a_remembered_answer_is_the_parsed_one() {
        let india = parse_region("IN");
        for _ in 0..2 {
            assert_eq!(
                normalize(" 09876543210 ", india).as_deref(),
                Some("+919876543210")
            );
            // The same digits without a region are not a number.
            assert_eq!(normalize("09876543210", None), None);
        }
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "abc", "+1", "+999999999999999999", "1234567822"] {
            assert_eq!(normalize(bad, None), None, "{bad}");
        }
    }
}
