//! INTERNALDATE (`"02-Dec-2026 05:11:11 +0000"`) as seconds since 1970,
//! which is all a message fingerprint needs of it.

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `None` for anything malformed or before 1970 or after 2105.
pub fn internal_date(s: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(s).ok()?.trim_start();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.split_once(' ')?;
    let mut d = date.split('-');
    let day: i64 = d.next()?.parse().ok()?;
    let name = d.next()?.as_bytes();
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(name))? as i64 + 1;
    let year: i64 = d.next()?.parse().ok()?;
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, sec) = (t.next()??, t.next()??, t.next()??);
    let z = zone.as_bytes();
    if z.len() != 5 || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let sign = match z[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let zh: i64 = zone[1..3].parse().ok()?;
    let zm: i64 = zone[3..5].parse().ok()?;
    let secs = days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + sec
        - sign * (zh * 3600 + zm * 60);
    u32::try_from(secs).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The day of `unix_secs` (UTC) as IMAP SEARCH writes dates: `2-Dec-2026`.
pub fn search_day(unix_secs: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = unix_secs.div_euclid(86400) + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let month = std::str::from_utf8(MONTHS[(m - 1) as usize]).unwrap_or("Jan");
    format!("{d}-{month}-{y}")
}

#[cfg(test)]
mod tests {
    use super::{internal_date, search_day};

    #[test]
    fn search_days() {
        assert_eq!(search_day(0), "1-Jan-1970");
        assert_eq!(search_day(1_796_188_271), "2-Dec-2026");
        assert_eq!(search_day(951_782_400), "29-Feb-2000");
        assert_eq!(search_day(-1), "31-Dec-1969");
    }

    /// Day `n` since 1970 as (year, month, day), by counting: the oracle
    /// both algorithms are checked against.
    fn civil_by_counting(mut n: i64) -> (i64, usize, i64) {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut year = 1970;
        while n >= if leap(year) { 366 } else { 365 } {
            n -= if leap(year) { 366 } else { 365 };
            year += 1;
        }
        let lengths = [
            31,
            if leap(year) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let mut month = 0;
        while n >= lengths[month] {
            n -= lengths[month];
            month += 1;
        }
        (year, month, n + 1)
    }

    #[test]
    fn every_day_a_u32_can_hold_reads_and_writes_as_the_calendar_says() {
        for n in 0..=i64::from(u32::MAX) / 86400 {
            let (y, m, d) = civil_by_counting(n);
            let name = std::str::from_utf8(super::MONTHS[m]).unwrap();
            assert_eq!(search_day(n * 86400 + 86399), format!("{d}-{name}-{y}"));
            let stamp = format!("{d:02}-{name}-{y} 00:00:00 +0000");
            assert_eq!(
                internal_date(stamp.as_bytes()),
                u32::try_from(n * 86400).ok(),
                "{stamp}"
            );
        }
    }

    #[test]
    fn times_zones_and_the_ends_of_the_range() {
        let at = |s: &str| internal_date(s.as_bytes());
        assert_eq!(at("01-Jan-1970 23:59:60 +0000"), Some(86400));
        assert_eq!(at("01-Jan-1970 01:02:03 +0000"), Some(3723));
        assert_eq!(at("02-jan-1970 01:30:00 +0130"), Some(86400));
        assert_eq!(at("01-JAN-1970 22:30:00 -0130"), Some(86400));
        assert_eq!(at("31-Jan-1970 00:00:00 +0000"), Some(30 * 86400));
        assert_eq!(at("07-Feb-2106 06:28:15 +0000"), Some(u32::MAX));
        for bad in [
            "07-Feb-2106 06:28:16 +0000",
            "31-Dec-1969 23:59:59 +0000",
            "01-Jan-1970 00:59:59 +0100",
            "00-Jan-2000 00:00:00 +0000",
            "01-Jan-2000 24:00:00 +0000",
            "01-Jan-2000 00:60:00 +0000",
            "01-Jan-2000 00:00:61 +0000",
            "01-Jan-2000 00:00:00 *0000",
            "01-Jan-2000 00:00:00 +00000",
            "01-Jan-2000 00:00:00 +000",
            "01-Jan-2000T00:00:00 +0000",
            "01-Jan-2000 00:00:00+0000",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(internal_date(b"01-Jan-1970 00:00:00 +0000"), Some(0));
        assert_eq!(
            internal_date(b"02-Dec-2026 05:11:11 +0000"),
            Some(1_796_188_271)
        );
        assert_eq!(
            internal_date(b" 2-Dec-2026 06:11:11 +0100"),
            Some(1_796_188_271)
        );
        for bad in [
            "",
            "32-Jan-2000 00:00:00 +0000",
            "01-Foo-2000 00:00:00 +0000",
            "01-Jan-2000 00:00 +0000",
            "01-Jan-2000 00:00:00 0000",
        ] {
            assert_eq!(internal_date(bad.as_bytes()), None, "{bad}");
        }
    }
}
