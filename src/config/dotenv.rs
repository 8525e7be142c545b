//! Reading `.env` (through dotenvy) and what an operator should know of it: dotenv
//! replaces `$NAME` and `${NAME}` in unquoted and double-quoted values, so a
//! password with a `$` in it silently changes unless the value is single-quoted.

use std::path::Path;

/// What loading `.env` found.
#[derive(Debug, Default, Clone)]
pub struct Dotenv {
    /// Whether the variable the MongoDB connection string is taken from (`MONGO_URI`
    /// or the alias used, see [`super::MONGO_URI_VARIABLES`]) was set by the file, not
    /// by the real environment.
    pub mongo_uri_from_file: bool,
    /// Warnings for the log, one line each (variable names only, never values).
    pub warnings: Vec<String>,
}

/// A `.env` that exists but cannot be used. Its text names the line and the
/// variable, never the value (which may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum DotenvError {
    #[error(
        "line {line} ({name}) does not parse: a value with spaces, quotes, `#` or a backslash \
         needs single quotes, and a single quote cannot stand inside them"
    )]
    Line { line: usize, name: String },
    #[error("cannot be read")]
    Read(#[source] dotenvy::Error),
}

/// Loads `.env` from the working directory, if there is one; real environment
/// variables win, as dotenvy does.
///
/// # Errors
/// [`DotenvError`] for a file that exists but cannot be read or parsed.
pub fn load() -> Result<Dotenv, DotenvError> {
    let set_before: Vec<&str> = super::MONGO_URI_VARIABLES
        .iter()
        .copied()
        .filter(|name| std::env::var_os(name).is_some())
        .collect();
    match dotenvy::dotenv() {
        Ok(path) => {
            let chosen = super::chosen_variable(&|name| std::env::var(name).ok());
            let mut report = Dotenv {
                mongo_uri_from_file: chosen.is_some_and(|name| !set_before.contains(&name)),
                ..Dotenv::default()
            };
            report.warnings = substitution_warnings(&path);
            Ok(report)
        }
        Err(err) if err.not_found() => Ok(Dotenv::default()),
        Err(dotenvy::Error::LineParse(text, _)) => Err(unparsable(&text)),
        Err(err) => Err(DotenvError::Read(err)),
    }
}

/// Where the line dotenvy could not parse stands, and its variable's name.
fn unparsable(text: &str) -> DotenvError {
    let first = text.lines().next().unwrap_or_default();
    let line = std::fs::read_to_string(".env")
        .ok()
        .and_then(|file| file.lines().position(|l| l == first))
        .map_or(0, |index| index + 1);
    let name = first
        .trim_start()
        .trim_start_matches("export ")
        .split('=')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    DotenvError::Line { line, name }
}

/// One warning per variable whose value holds a `$` outside single quotes.
fn substitution_warnings(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let line = line
                .trim_start()
                .strip_prefix("export ")
                .unwrap_or(line)
                .trim_start();
            let (name, value) = line.split_once('=')?;
            let value = value.trim();
            let single_quoted = value.starts_with('\'');
            (!line.starts_with('#') && !single_quoted && value.contains('$')).then(|| {
                format!(
                    "{} in .env holds a `$` outside single quotes: dotenv replaces `$NAME` there, \
                     so the value the service sees may differ; write it as {}='…'",
                    name.trim(),
                    name.trim()
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dollar_outside_single_quotes_is_pointed_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            "MONGO_URI=mongodb://app:Pa$sw0rd@h/\nA=\"x$y\"\nB='x$y'\n# C=$z\nD=plain\n",
        )
        .unwrap();
        let warnings = substitution_warnings(&path);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("MONGO_URI in .env"));
        assert!(!warnings[0].contains("Pa$sw0rd"), "never the value");
        assert!(warnings[1].starts_with("A in .env"));
    }
}
