//! Numbers written for people: whole amounts with thousands separators (`1,234,567`) and
//! money with two decimals rounded half up (`12.35`). The usage table and the alert email
//! both write through here, so one amount never reads two ways. Machine output (the CSV
//! export, JSON) keeps exact, ungrouped digits and does not come here.

use bigdecimal::{BigDecimal, RoundingMode};

/// A whole amount (fractions cut off, as a counter shows them), grouped by thousands: `71,234`.
pub fn whole(value: &BigDecimal) -> String {
    group_thousands(&value.with_scale_round(0, RoundingMode::Down).to_string())
}

/// Money in cents, rounded half up (the rounding people check a bill with), grouped by
/// thousands and without a currency sign: `1,234.50`.
pub fn money(value: &BigDecimal) -> String {
    let text = value.with_scale_round(2, RoundingMode::HalfUp).to_string();
    let (units, cents) = text.split_once('.').unwrap_or((&text, "00"));
    format!("{}.{cents:0<2}", group_thousands(units))
}

/// `-1234567` → `-1,234,567`; `digits` is an optional sign and decimal digits.
fn group_thousands(digits: &str) -> String {
    let (sign, digits) = digits
        .strip_prefix('-')
        .map_or(("", digits), |rest| ("-", rest));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    out.push_str(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use std::str::FromStr;

    use super::*;

    /// A decimal from its text, for the tests of everything that formats amounts.
    pub(crate) fn dec(text: &str) -> BigDecimal {
        BigDecimal::from_str(text).unwrap()
    }

    #[test]
    fn money_rounds_half_up_to_cents_and_groups_thousands() {
        for (amount, text) in [
            ("12.345", "12.35"),
            ("0.005", "0.01"),
            ("0.004", "0.00"),
            ("1234567.891", "1,234,567.89"),
            ("1234.5", "1,234.50"),
            ("7", "7.00"),
        ] {
            assert_eq!(money(&dec(amount)), text, "{amount}");
        }
    }

    #[test]
    fn whole_amounts_are_cut_to_units_and_grouped_by_thousands() {
        for (amount, text) in [
            ("1234567", "1,234,567"),
            ("999.9", "999"),
            ("100", "100"),
            ("1000000", "1,000,000"),
            ("-1234", "-1,234"),
        ] {
            assert_eq!(whole(&dec(amount)), text, "{amount}");
        }
    }
}
