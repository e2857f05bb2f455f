//! Credentials out of everything runner writes or says: a URI's user information
//! (`http://bob:S3cret@host/`) is shown as `***` (`http://***@host/`) in files, logs,
//! trackers and error messages. Applied where text leaves runner: run.log, summary.json,
//! config.toml (and so the hyperparameters TensorBoard and MLflow get), the CLI's errors.

use std::borrow::Cow;

/// `text` with the user information of every `scheme://user[:password]@host` in it replaced
/// by `***`.
pub fn credentials(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the path, query or fragment, or where the URI itself ends.
        let end = tail
            .find(|c: char| "/?#".contains(c) || c.is_whitespace() || "\"'<>`,;)]}".contains(c))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(i) if i > 0 => {
                out.push_str("***");
                out.push_str(&authority[i..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// For serde: a string field whose value may hold a URI with credentials.
pub(crate) fn serialize_redacted<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_some(credentials(v).as_ref()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::credentials;

    #[test]
    fn user_information_becomes_stars_and_nothing_else_changes() {
        assert_eq!(credentials("http://bob:S3cret@host:5000/api"), "http://***@host:5000/api");
        assert_eq!(credentials("failed at https://alice@h/x: HTTP 500"), "failed at https://***@h/x: HTTP 500");
        assert_eq!(
            credentials("mlflow: run 3 at http://a:p%40ss@h, then \"http://b:q@k?x=1\""),
            "mlflow: run 3 at http://***@h, then \"http://***@k?x=1\""
        );
        // An @ in the password itself: the last one ends the user information.
        assert_eq!(credentials("http://u:p@ss@host/"), "http://***@host/");
        for plain in ["no uri here", "mail bob@example.org", "http://host:5000/a@b", "http://host", "x://@h"] {
            assert_eq!(credentials(plain), plain);
        }
    }
}
