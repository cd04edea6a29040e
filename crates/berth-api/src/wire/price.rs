//! Prices as people write and read them: `9.99EUR/month` in, `9.99 EUR/month` out, kept on
//! the wire in the currency's minor unit.

use std::fmt;

use super::{Price, PricePeriod};

impl Price {
    /// Digits after the point in `currency`'s major unit (ISO 4217): 0 for the yen and its
    /// kind, 3 for the dinars that have fils, 2 for every other.
    pub fn minor_digits(currency: &str) -> u32 {
        match currency {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
            | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }

    /// `AMOUNT CURRENCY/PERIOD` with the amount in major units: `9.99EUR/month`,
    /// `0.012 EUR/hour` is refused (EUR has 2 decimals), `1200JPY/month`. The error says what
    /// was expected.
    pub fn parse(s: &str) -> Result<Price, String> {
        let bad = |why: &str| format!("{s:?} is not a price like 9.99EUR/month ({why})");
        let (amount_cur, period) = s.split_once('/').ok_or_else(|| bad("no /month or /hour"))?;
        let period = match period.trim() {
            "hour" => PricePeriod::Hour,
            "month" => PricePeriod::Month,
            _ => return Err(bad("the period is hour or month")),
        };
        let split = amount_cur
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| bad("no currency"))?;
        let (number, currency) = (amount_cur[..split].trim(), amount_cur[split..].trim());
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(bad("the currency is an ISO 4217 code like EUR"));
        }
        let digits = Price::minor_digits(currency);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() || frac.len() > digits as usize || (number.contains('.') && frac.is_empty()) {
            return Err(bad(&format!("{currency} has {digits} decimals")));
        }
        let whole: u64 = whole.parse().map_err(|_| bad("the amount is a number"))?;
        let frac: u64 = format!("{frac:0<width$}", width = digits as usize)
            .parse::<u64>()
            .or_else(|e| if digits == 0 { Ok(0) } else { Err(e) })
            .map_err(|_| bad("the amount is a number"))?;
        let amount = whole
            .checked_mul(10u64.pow(digits))
            .and_then(|a| a.checked_add(frac))
            .ok_or_else(|| bad("too large"))?;
        Ok(Price {
            amount,
            currency: currency.to_owned(),
            period,
        })
    }
}

/// `9.99 EUR/month`.
impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = Price::minor_digits(&self.currency);
        let unit = 10u64.pow(digits);
        let period = match self.period {
            PricePeriod::Hour => "hour",
            PricePeriod::Month => "month",
        };
        if digits == 0 {
            write!(f, "{} {}/{period}", self.amount, self.currency)
        } else {
            let (major, minor) = (self.amount / unit, self.amount % unit);
            write!(f, "{major}.{minor:0w$} {}/{period}", self.currency, w = digits as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(amount: u64, currency: &str, period: PricePeriod) -> Price {
        Price {
            amount,
            currency: currency.into(),
            period,
        }
    }

    #[test]
    fn prices_read_and_print_in_major_units() {
        assert_eq!(Price::parse("9.99EUR/month"), Ok(p(999, "EUR", PricePeriod::Month)));
        assert_eq!(Price::parse("5EUR/month"), Ok(p(500, "EUR", PricePeriod::Month)));
        assert_eq!(Price::parse("0.5 USD/hour"), Ok(p(50, "USD", PricePeriod::Hour)));
        assert_eq!(Price::parse("1200JPY/month"), Ok(p(1200, "JPY", PricePeriod::Month)));
        assert_eq!(Price::parse("1.250KWD/month"), Ok(p(1250, "KWD", PricePeriod::Month)));
        for bad in [
            "EUR/month",
            "9.999EUR/month",
            "5EUR/week",
            "5eur/month",
            "5EUR",
            "5.EUR/month",
            "1.5JPY/month",
        ] {
            let e = Price::parse(bad).unwrap_err();
            assert!(e.contains("like 9.99EUR/month"), "{bad}: {e}");
        }
        assert!(
            Price::parse("9.999EUR/month")
                .unwrap_err()
                .contains("EUR has 2 decimals")
        );
        assert_eq!(p(999, "EUR", PricePeriod::Month).to_string(), "9.99 EUR/month");
        assert_eq!(p(5, "EUR", PricePeriod::Hour).to_string(), "0.05 EUR/hour");
        assert_eq!(p(1200, "JPY", PricePeriod::Month).to_string(), "1200 JPY/month");
        // What is printed reads back as the same price.
        let q = p(123_456, "BHD", PricePeriod::Month);
        assert_eq!(Price::parse(&q.to_string().replace(' ', "")), Ok(q));
    }
}
