//! Unit tests of indicator names and lists: what parses, what is refused and with
//! which words.

use std::collections::HashSet;

use super::*;

#[test]
fn names_parse() {
    let cases = [
        ("sma2", Indicator::Sma(2)),
        ("sma20", Indicator::Sma(20)),
        ("ema50", Indicator::Ema(50)),
        ("rsi14", Indicator::Rsi(14)),
        ("bb20", Indicator::Bb(20)),
        ("bb500", Indicator::Bb(500)),
        ("macd", Indicator::Macd),
    ];
    for (name, indicator) in cases {
        assert_eq!(Indicator::parse(name), Ok(indicator), "{name}");
    }
}

#[test]
fn every_name_round_trips_and_is_unique() {
    let mut all = vec![Indicator::Macd];
    for n in MIN_PERIOD..=MAX_PERIOD {
        all.extend([
            Indicator::Sma(n),
            Indicator::Ema(n),
            Indicator::Rsi(n),
            Indicator::Bb(n),
        ]);
    }
    let mut names = HashSet::new();
    for indicator in all {
        let name = indicator.name();
        assert_eq!(name, indicator.to_string());
        assert_eq!(Indicator::parse(&name), Ok(indicator), "{name}");
        assert!(names.insert(name));
    }
    assert_eq!(Indicator::Rsi(14).name(), "rsi14");
    assert_eq!(Indicator::Macd.name(), "macd");
}

#[test]
fn unknown_names_are_refused_with_the_grammar() {
    let unknown = [
        "foo",
        "",
        "RSI14",
        "Rsi14",
        "rsi",
        "bb",
        "rsi014",
        "rsi00",
        "rsi-5",
        "rsi+5",
        "rsi 14",
        " rsi14",
        "rsi14 ",
        "rsi14x",
        "rsi1.5",
        "macd12",
        "MACD",
        "bbands20",
        "wma20",
        "ema２０",
        "ema2٣",
    ];
    for raw in unknown {
        assert_eq!(
            Indicator::parse(raw),
            Err(BadIndicator::Unknown(raw.to_owned())),
            "{raw:?}"
        );
    }
    assert_eq!(
        Indicator::parse("foo").unwrap_err().to_string(),
        "unknown indicator \"foo\"; expected sma<N>, ema<N>, rsi<N>, bb<N> (N from 2 to 500) or macd"
    );
    // A long name is cut in the message, on a character boundary.
    let long = "é".repeat(100);
    let Err(BadIndicator::Unknown(shown)) = Indicator::parse(&long) else {
        panic!("not unknown")
    };
    assert_eq!(shown, format!("{}…", "é".repeat(32)));
}

#[test]
fn periods_out_of_range_are_refused() {
    for raw in [
        "rsi1",
        "sma0",
        "ema501",
        "bb1000",
        "rsi99999999999999999999999",
    ] {
        assert_eq!(
            Indicator::parse(raw),
            Err(BadIndicator::Period(raw.to_owned())),
            "{raw}"
        );
    }
    assert_eq!(
        Indicator::parse("rsi1").unwrap_err().to_string(),
        "rsi1: the period must be from 2 to 500"
    );
}

#[test]
fn lists_keep_order_and_skip_empty_items() {
    use Indicator::*;
    assert_eq!(
        parse_list("rsi14,ema20,bb20"),
        Ok(vec![Rsi(14), Ema(20), Bb(20)])
    );
    assert_eq!(parse_list(" macd , ,\tsma20,,"), Ok(vec![Macd, Sma(20)]));
    let eight = "sma2,sma3,ema2,ema3,rsi2,rsi3,bb2,macd";
    assert_eq!(parse_list(eight).map(|list| list.len()), Ok(MAX_INDICATORS));
}

#[test]
fn bad_lists_are_refused() {
    let error = |raw: &str| parse_list(raw).unwrap_err();
    assert_eq!(error(""), BadIndicator::Empty);
    assert_eq!(error(" , ,"), BadIndicator::Empty);
    assert_eq!(error("").to_string(), "no indicator given");
    let nine = "sma2,sma3,ema2,ema3,rsi2,rsi3,bb2,bb3,macd";
    assert_eq!(error(nine), BadIndicator::TooMany);
    assert_eq!(error(nine).to_string(), "at most 8 indicators");
    // The count is judged first, bad names or not.
    assert_eq!(error("foo,1,2,3,4,5,6,7,8"), BadIndicator::TooMany);
    assert_eq!(
        error("rsi14,ema20,rsi14"),
        BadIndicator::Twice(Indicator::Rsi(14))
    );
    assert_eq!(error("rsi14, rsi14").to_string(), "rsi14 is listed twice");
    assert_eq!(error("macd,macd").to_string(), "macd is listed twice");
    assert_eq!(error("rsi14,foo"), BadIndicator::Unknown("foo".into()));
    assert_eq!(error("rsi14,rsi1"), BadIndicator::Period("rsi1".into()));
    // The first bad item is the one reported.
    assert_eq!(error("rsi1,foo"), BadIndicator::Period("rsi1".into()));
}
