//! A list entry that is either a value or `*`, meaning "all".

use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector<T> {
    All,
    Only(T),
}

impl<T: FromStr<Err = String>> FromStr for Selector<T> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "*" {
            Ok(Self::All)
        } else {
            s.parse().map(Self::Only)
        }
    }
}

/// `All` is `None`: no restriction.
impl<T> From<Selector<T>> for Option<T> {
    fn from(s: Selector<T>) -> Self {
        match s {
            Selector::All => None,
            Selector::Only(v) => Some(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortRange;

    #[test]
    fn star_or_a_value() {
        assert_eq!("*".parse::<Selector<PortRange>>(), Ok(Selector::All));
        assert_eq!(" * ".parse::<Selector<PortRange>>(), Ok(Selector::All));
        assert_eq!(
            "80".parse::<Selector<PortRange>>(),
            Ok(Selector::Only(PortRange::single(80)))
        );
        assert!("x".parse::<Selector<PortRange>>().is_err());
        assert_eq!(Option::<PortRange>::from(Selector::<PortRange>::All), None);
    }
}
