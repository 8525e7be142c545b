//! MongoDB connection strings, and keeping their passwords out of every log line.

use std::fmt;

/// A `MONGO_URI` that cannot be used; the message never holds the password. (The
/// driver's parse error is flattened into it: it can quote the string it read.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidMongoUri(String);

/// A MongoDB connection string. `Display` and `Debug` hide the password; only
/// [`MongoUri::expose`] gives the real string, for the driver.
///
/// Redaction works on the string's structure (the password component of the
/// userinfo, `scheme://user:password@hosts/…` per the MongoDB connection-string
/// spec), never by searching for the password's text, which could also be the user
/// name, the host or a piece of the scheme.
#[derive(Clone, PartialEq, Eq)]
pub struct MongoUri {
    raw: String,
}

impl MongoUri {
    /// Validates the connection string without contacting any server.
    ///
    /// # Errors
    /// [`InvalidMongoUri`] (its text already redacted) when the string is not `mongodb://` or
    /// `mongodb+srv://`, or the driver cannot parse it.
    pub fn parse(raw: &str) -> Result<Self, InvalidMongoUri> {
        let uri = Self {
            raw: raw.to_owned(),
        };
        if !(raw.starts_with("mongodb://") || raw.starts_with("mongodb+srv://")) {
            return Err(InvalidMongoUri(format!(
                "{uri} is not a MongoDB connection string; expected mongodb://host:port or mongodb+srv://host"
            )));
        }
        mongodb::options::ConnectionString::parse(raw).map_err(|err| {
            // A string the driver cannot split may hide its password anywhere: show
            // only what follows its last `@`, and none of the driver's words then.
            match raw.rfind('@') {
                Some(at) => InvalidMongoUri(format!(
                    "{}://***@{} is not a valid connection string; percent-encode any @ : / ? # [ ] % in the user name and password",
                    raw.split("://").next().unwrap_or("mongodb"),
                    &raw[at + 1..]
                )),
                None => InvalidMongoUri(format!(
                    "{uri} is not a valid connection string: {}",
                    err.kind
                )),
            }
        })?;
        Ok(uri)
    }

    /// The connection string with its password, for the driver only.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The password as written in the string (percent-encoded), if any.
    fn password(&self) -> Option<&str> {
        password_span(&self.raw).map(|(start, end)| &self.raw[start..end])
    }

    /// `text` with the password hidden: every connection string in it has its
    /// password component replaced by `***`, and any other appearance of the
    /// password (as written or percent-decoded) standing as a word of its own is
    /// replaced too, so a driver error can be logged safely.
    pub fn scrub(&self, text: &str) -> String {
        let password = self.password();
        let decoded = password.map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy());
        redact_uris(text, |prose| {
            let mut prose = prose.to_owned();
            if let (Some(password), Some(decoded)) = (password, &decoded) {
                prose = replace_word(&prose, password);
                prose = replace_word(&prose, decoded);
            }
            prose
        })
    }
}

/// Byte range of the password in a `mongodb://` or `mongodb+srv://` string, found
/// the way the driver splits it: the options start at the first `?`, the userinfo
/// ends at the last `@` before them, and the password follows the userinfo's first
/// `:`. (A password must percent-encode `@`, `/`, `?` and `:`; one that does not is
/// still found, so an invalid string never shows it either.)
fn password_span(uri: &str) -> Option<(usize, usize)> {
    let authority_start = uri.find("://")? + 3;
    let rest = &uri[authority_start..];
    let options = rest.find('?').unwrap_or(rest.len());
    let at = rest[..options].rfind('@')?;
    let colon = rest[..at].find(':')?;
    let (start, end) = (authority_start + colon + 1, authority_start + at);
    (start < end).then_some((start, end))
}

/// `text` with the password of every `mongodb://` or `mongodb+srv://` string in it
/// replaced by `***`, and the text between those strings passed through `prose`.
fn redact_uris(text: &str, prose: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("mongodb") {
        let (before, candidate) = rest.split_at(found);
        out.push_str(&prose(before));
        // The string runs to the first character that cannot be part of it.
        let len = candidate
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(candidate.len());
        let uri = &candidate[..len];
        match password_span(uri)
            .filter(|_| uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://"))
        {
            Some((start, end)) => {
                out.push_str(&uri[..start]);
                out.push_str("***");
                out.push_str(&uri[end..]);
            }
            None => out.push_str(uri),
        }
        rest = &candidate[len..];
        if len == 0 {
            // Not reachable ("mongodb" is never empty), but never loop forever.
            break;
        }
    }
    out.push_str(&prose(rest));
    out
}

/// `text` with each occurrence of `word` that is not part of a longer run of
/// letters and digits replaced by `***`.
fn replace_word(text: &str, word: &str) -> String {
    if word.is_empty() {
        return text.to_owned();
    }
    let is_word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in text.match_indices(word) {
        if at < last {
            continue; // overlaps the previous replacement
        }
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if is_word(before) || is_word(after) {
            continue;
        }
        out.push_str(&text[last..at]);
        out.push_str("***");
        last = at + word.len();
    }
    out.push_str(&text[last..]);
    out
}

impl fmt::Display for MongoUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match password_span(&self.raw) {
            Some((start, end)) => {
                write!(f, "{}***{}", &self.raw[..start], &self.raw[end..])
            }
            None => f.write_str(&self.raw),
        }
    }
}

impl fmt::Debug for MongoUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MongoUri({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_redacted_by_position_not_by_text() {
        // The password equal to the user name, or a piece of the scheme.
        for (raw, shown) in [
            ("mongodb://admin:admin@h", "mongodb://admin:***@h"),
            ("mongodb://svc:go@h", "mongodb://svc:***@h"),
            (
                "mongodb://db:db@db:27017/db?authSource=db",
                "mongodb://db:***@db:27017/db?authSource=db",
            ),
            (
                "mongodb+srv://u:mongodb@cluster.example/",
                "mongodb+srv://u:***@cluster.example/",
            ),
            (
                "mongodb://a:p%40ss@h1:1,h2:2/?replicaSet=rs",
                "mongodb://a:***@h1:1,h2:2/?replicaSet=rs",
            ),
            ("mongodb://onlyuser@h", "mongodb://onlyuser@h"),
        ] {
            let uri = MongoUri::parse(raw).unwrap();
            assert_eq!(uri.to_string(), shown, "{raw}");
            assert_eq!(format!("{uri:?}"), format!("MongoUri({shown})"));
        }
    }

    #[test]
    fn driver_errors_lose_the_password_but_keep_their_words() {
        let uri = MongoUri::parse("mongodb://svc:go@h").unwrap();
        assert_eq!(
            uri.scrub("cannot reach mongodb://svc:go@h: going away; pw go, (go)"),
            "cannot reach mongodb://svc:***@h: going away; pw ***, (***)"
        );
        let uri = MongoUri::parse("mongodb://admin:admin@h").unwrap();
        assert_eq!(
            uri.scrub("Kind: Authentication failed, labels: {}, uri mongodb://admin:admin@h/x"),
            "Kind: Authentication failed, labels: {}, uri mongodb://admin:***@h/x"
        );
    }

    #[test]
    fn an_unencoded_slash_or_question_mark_never_shows_the_password() {
        for raw in [
            "mongodb://app:Ab/Cd+e=@db:27017/x",
            "mongodb://app:p?ss@h/",
            "mongodb://app:p#ss@h:notaport/",
        ] {
            let err = MongoUri::parse(raw).map(|u| u.to_string());
            let shown = match err {
                Ok(shown) => shown,
                Err(err) => err.to_string(),
            };
            assert!(
                !shown.contains("Ab/Cd") && !shown.contains(":p") && !shown.contains("ss@"),
                "{shown}"
            );
        }
    }

    #[test]
    fn a_uri_without_password_is_shown_as_is() {
        let uri = MongoUri::parse("mongodb://127.0.0.1:27017").unwrap();
        assert_eq!(uri.to_string(), "mongodb://127.0.0.1:27017");
    }
}
