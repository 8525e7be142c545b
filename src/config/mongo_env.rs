//! Which variable gives the MongoDB connection string: `MONGO_URI`, or one of the
//! names platforms and MongoDB's own documentation use for the same thing.

use crate::store::MongoUri;

use super::ConfigError;

/// The variables read as the MongoDB connection string, in order of precedence: the
/// first one set (and not blank) is used, except that an alias whose value is not a
/// `mongodb://` or `mongodb+srv://` string is passed over with a warning. Each name
/// is here because a platform or document in wide use sets or teaches it:
pub const MONGO_URI_VARIABLES: &[&str] = &[
    // Ours (DESIGN.md §2); wins over every alias.
    "MONGO_URI",
    // MongoDB's own documentation and drivers' quick starts, the Atlas integrations
    // for Vercel and Netlify, and Render's and DigitalOcean's guides.
    "MONGODB_URI",
    // Railway's MongoDB template: MONGO_PRIVATE_URL (older templates) reaches the
    // database over the project's private network; MONGO_URL is the private URL in
    // current templates and the public one in older ones (where MONGO_PRIVATE_URL,
    // set beside it, is then preferred); MONGO_PUBLIC_URL goes through Railway's TCP
    // proxy (slower, billed as egress), so it comes last. Also Dokku's and Meteor's.
    "MONGO_PRIVATE_URL",
    "MONGO_URL",
    "MONGO_PUBLIC_URL",
    // Spelled so by Koyeb, Clever Cloud's add-on (MONGODB_ADDON_URI is its own) and
    // many compose files.
    "MONGODB_URL",
    // Heroku add-ons that still provision MongoDB: ObjectRocket (ORMONGO_URL);
    // mLab (MONGOLAB_URI) and Compose (MONGOHQ_URL), whose clusters moved to Atlas
    // with their variables kept by the apps that used them.
    "ORMONGO_URL",
    "MONGOLAB_URI",
    "MONGOHQ_URL",
    // The generic name (Heroku, Render, Fly, Railway's Postgres): last, and only
    // when it holds a MongoDB string, since it usually names another database.
    "DATABASE_URL",
];

/// What the MongoDB variables say: the connection string to use (if any) and the
/// variable it came from, plus a warning for each alias passed over.
#[derive(Debug, Clone, Default)]
pub(super) struct MongoChoice {
    /// The connection string and the variable that gave it.
    pub(super) chosen: Option<(MongoUri, &'static str)>,
    /// One line each, naming the variable, never its value.
    pub(super) warnings: Vec<String>,
}

/// The name of the variable the configuration takes the connection string from,
/// if any: the first of [`MONGO_URI_VARIABLES`] that is set and not passed over.
/// `.env` handling uses it to tell whether that variable came from the file.
pub fn chosen_variable(lookup: &dyn Fn(&str) -> Option<String>) -> Option<&'static str> {
    MONGO_URI_VARIABLES
        .iter()
        .copied()
        .find(|var| matches!(read(lookup, var), Some(Candidate::Mongo(_))))
}

/// Reads [`MONGO_URI_VARIABLES`] in order.
///
/// # Errors
/// [`ConfigError`] naming the chosen variable when its `mongodb` string is malformed,
/// or `MONGO_URI` when it holds anything but a MongoDB string.
pub(super) fn choose(lookup: &dyn Fn(&str) -> Option<String>) -> Result<MongoChoice, ConfigError> {
    let mut choice = MongoChoice::default();
    for &var in MONGO_URI_VARIABLES {
        match read(lookup, var) {
            None => {}
            Some(Candidate::Mongo(raw)) if choice.chosen.is_none() => {
                let uri =
                    MongoUri::parse(&raw).map_err(|err| ConfigError::new(var, err.to_string()))?;
                choice.chosen = Some((uri, var));
            }
            // Shadowed by a variable earlier in the list: not read, not an error.
            Some(Candidate::Mongo(_)) => {}
            // Our own variable holds only MongoDB strings: anything else is a mistake.
            Some(Candidate::Other(raw)) if var == "MONGO_URI" => {
                return Err(ConfigError::new(
                    var,
                    MongoUri::parse(&raw)
                        .err()
                        .map_or_else(String::new, |err| err.to_string()),
                ));
            }
            Some(Candidate::Other(scheme)) => choice.warnings.push(format!(
                "{var} is set but is not a MongoDB connection string ({scheme}); it is ignored \
                 as a MongoDB alias: set MONGO_URI for MongoDB"
            )),
        }
    }
    Ok(choice)
}

/// One variable's value, read for what it is.
enum Candidate {
    /// A `mongodb://` or `mongodb+srv://` string (in any letter case), or a value of a
    /// MongoDB-named variable without any scheme: to be parsed, an error if malformed.
    Mongo(String),
    /// Another kind of URL: for `MONGO_URI` the value itself (to be reported as the
    /// error it is), for an alias a description of its scheme (never the value).
    Other(String),
}

fn read(lookup: &dyn Fn(&str) -> Option<String>, var: &str) -> Option<Candidate> {
    let raw = lookup(var)?;
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let scheme = scheme(raw);
    let is_mongo = match scheme {
        Some(scheme) => {
            scheme.eq_ignore_ascii_case("mongodb") || scheme.eq_ignore_ascii_case("mongodb+srv")
        }
        // `host:27017` under a Mongo name is a malformed MongoDB string; under
        // DATABASE_URL it may be anything.
        None => var != "DATABASE_URL",
    };
    Some(match (is_mongo, var) {
        (true, _) => Candidate::Mongo(raw.to_owned()),
        (false, "MONGO_URI") => Candidate::Other(raw.to_owned()),
        (false, _) => Candidate::Other(scheme.map_or_else(
            || "no scheme".to_owned(),
            |scheme| format!("scheme {scheme}"),
        )),
    })
}

/// The URL scheme of `raw` (RFC 3986: a letter, then letters, digits, `+`, `-`, `.`,
/// before `:`), if it has one followed by `//`.
fn scheme(raw: &str) -> Option<&str> {
    let (scheme, _) = raw.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}
