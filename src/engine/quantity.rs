//! Kubernetes resource quantities (`500m`, `0.125Gi`, `1e3`), compared by value.
//!
//! Why: the API server stores quantities in canonical form, so a manifest's
//! `cpu: 0.5` reads back as `500m`. Comparing the strings would report that as a
//! change; comparing the values does not.

/// Whether `a` and `b` are the same quantity, written differently. `false` when
/// either is not a quantity.
pub(crate) fn same_value(a: &str, b: &str) -> bool {
    matches!((parse(a), parse(b)), (Some(a), Some(b)) if a == b)
}

/// A quantity as `sign × m × 2^twos × 5^fives` with `m` coprime to 10: unique for
/// every value, so equal values have equal forms and need no arithmetic to compare.
#[derive(Debug, PartialEq, Eq)]
struct Exact {
    negative: bool,
    m: u128,
    twos: i64,
    fives: i64,
}

fn parse(text: &str) -> Option<Exact> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = rest
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = whole.bytes().chain(fraction.bytes());
    if whole.is_empty() && fraction.is_empty() || !digits.clone().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut m: u128 = 0;
    for digit in digits {
        m = m.checked_mul(10)?.checked_add(u128::from(digit - b'0'))?;
    }
    let (binary, decimal) = suffix_exponents(suffix)?;
    // Checked: an exponent near i64's ends is not a quantity, and must not panic.
    let tens = decimal.checked_sub(i64::try_from(fraction.len()).ok()?)?;
    normalize(negative, m, binary.checked_add(tens)?, tens)
}

/// The suffix as (power of two, power of ten).
fn suffix_exponents(suffix: &str) -> Option<(i64, i64)> {
    let binary = match suffix {
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        "Ti" => 40,
        "Pi" => 50,
        "Ei" => 60,
        _ => 0,
    };
    if binary != 0 {
        return Some((binary, 0));
    }
    let decimal = match suffix {
        "n" => -9,
        "u" => -6,
        "m" => -3,
        "" => 0,
        "k" => 3,
        "M" => 6,
        "G" => 9,
        "T" => 12,
        "P" => 15,
        "E" => 18,
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            exponent.parse().ok()?
        }
    };
    Some((0, decimal))
}

fn normalize(negative: bool, mut m: u128, mut twos: i64, mut fives: i64) -> Option<Exact> {
    if m == 0 {
        return Some(Exact {
            negative: false,
            m: 0,
            twos: 0,
            fives: 0,
        });
    }
    while m % 2 == 0 {
        m /= 2;
        twos = twos.checked_add(1)?;
    }
    while m % 5 == 0 {
        m /= 5;
        fives = fives.checked_add(1)?;
    }
    Some(Exact {
        negative,
        m,
        twos,
        fives,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_numbers_and_extreme_exponents_are_not_quantities() {
        // Found by the property test below: these panicked on overflow.
        for text in [
            "..",
            "1.2.3",
            "1.5e-9223372036854775808",
            "10e9223372036854775807",
        ] {
            assert!(parse(text).is_none(), "{text}");
        }
    }

    #[test]
    fn equal_values_written_differently_are_the_same() {
        for (a, b) in [
            ("0.5", "500m"),
            ("0.125Gi", "128Mi"),
            ("1", "1000m"),
            ("1k", "1000"),
            ("1e3", "1k"),
            ("1E3", "1k"),
            ("1Ki", "1024"),
            ("+2", "2"),
            ("0", "0m"),
            ("-0.5", "-500m"),
            ("100m", "100m"),
            ("1.5Gi", "1536Mi"),
        ] {
            assert!(same_value(a, b), "{a} == {b}");
        }
    }

    #[test]
    fn different_values_or_non_quantities_are_not() {
        for (a, b) in [
            ("0.5", "501m"),
            ("1Gi", "1G"),
            ("1E", "1e0"),
            ("-1", "1"),
            ("abc", "abc"),
            ("1x", "1x"),
            ("", ""),
            (".", "."),
            ("1e", "1"),
            ("99999999999999999999999999999999999999999", "1"),
        ] {
            assert!(!same_value(a, b), "{a} != {b}");
        }
    }

    mod hostile {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

            /// Arbitrary text never panics nor hangs (an exponent of a billion
            /// included), and a quantity equals itself.
            #[test]
            fn arbitrary_quantities_never_panic(
                a in prop_oneof![
                    any::<String>(),
                    "[+-]?[0-9]{0,30}(\\.[0-9]{0,30})?([eE][+-]?[0-9]{1,12})?(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?",
                ],
                b in any::<String>(),
            ) {
                let started = std::time::Instant::now();
                let _ = same_value(&a, &b);
                let reflexive = same_value(&a, &a);
                prop_assert!(started.elapsed() < std::time::Duration::from_secs(1));
                prop_assert_eq!(reflexive, parse(&a).is_some());
            }
        }
    }
}
