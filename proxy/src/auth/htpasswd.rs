//! An htpasswd file: `user:hash` lines, bcrypt (`$2y$`, `$2b$`) or SHA-512-crypt (`$6$`).
//! Weaker schemes (Apache MD5 `$apr1$`, `{SHA}`, DES crypt, plain text, `$1$`, `$5$`) are load
//! errors naming the line, so that a file that would be accepted with a weak hash is never half
//! used. Verification is constant-time in the hash (both crates compare in constant time) and
//! takes the same work for an unknown user (a dummy hash is checked).

use std::collections::HashMap;
use std::path::Path;

use sha_crypt::password_hash::PasswordVerifier;

/// One loaded file.
#[derive(Clone)]
pub(crate) struct Htpasswd {
    users: HashMap<String, Hash>,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd").field("users", &self.users.len()).finish()
    }
}

#[derive(Clone)]
enum Hash {
    Bcrypt(String),
    Sha512(String),
}

/// A bcrypt hash of a password nobody has, checked for unknown users so that they cost what a
/// known user costs.
const DUMMY: &str = "$2b$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z3h/7zn1hz5gT6z0W8Kq0X2u";

impl Htpasswd {
    /// Reads and checks the file.
    ///
    /// # Errors
    /// `FILE: cannot read (…)`, or `FILE:LINE: …` for the first bad line.
    pub(crate) fn load(path: &Path) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the htpasswd file ({e})", path.display()))?;
        Htpasswd::parse(&path.display().to_string(), &text)
    }

    /// Parses the text of a file named `name` (for messages).
    pub(crate) fn parse(name: &str, text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let at = format!("{name}:{}", n + 1);
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("{at}: not `user:hash`"));
            };
            if user.is_empty() || user.chars().any(char::is_control) {
                return Err(format!("{at}: empty user name or a control character in it"));
            }
            let hash = hash.trim();
            let parsed = if hash.starts_with("$2y$") || hash.starts_with("$2b$") {
                if bcrypt::verify("", hash).is_err() {
                    return Err(format!("{at}: user `{user}`: a malformed bcrypt hash"));
                }
                Hash::Bcrypt(hash.to_string())
            } else if hash.starts_with("$6$") {
                if sha_crypt::ShaCrypt::SHA512
                    .verify_password(b"", hash)
                    .is_err_and(|e| !matches!(e, sha_crypt::password_hash::Error::PasswordInvalid))
                {
                    return Err(format!("{at}: user `{user}`: a malformed SHA-512-crypt hash"));
                }
                Hash::Sha512(hash.to_string())
            } else {
                let scheme = if hash.starts_with("$apr1$") {
                    "Apache MD5 ($apr1$)"
                } else if hash.starts_with("{SHA}") {
                    "unsalted SHA-1 ({SHA})"
                } else if hash.starts_with("$2a$") {
                    "bcrypt $2a$ (re-hash with `htpasswd -B`, which writes $2y$)"
                } else if hash.starts_with("$1$") || hash.starts_with("$5$") {
                    "MD5-crypt or SHA-256-crypt"
                } else {
                    "DES crypt or plain text"
                };
                return Err(format!(
                    "{at}: user `{user}`: {scheme} is not accepted: use bcrypt (`htpasswd -B`) or SHA-512-crypt (`mkpasswd -m sha-512`)"
                ));
            };
            if users.insert(user.to_string(), parsed).is_some() {
                return Err(format!("{at}: user `{user}` is listed twice"));
            }
        }
        Ok(Htpasswd { users })
    }

    /// Whether `password` is `user`'s. CPU-bound (bcrypt's cost): run it off the event loop.
    pub(crate) fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(Hash::Bcrypt(h)) => bcrypt::verify(password, h).unwrap_or(false),
            Some(Hash::Sha512(h)) => {
                sha_crypt::ShaCrypt::SHA512.verify_password(password.as_bytes(), h.as_str()).is_ok()
            }
            None => {
                let _ = bcrypt::verify(password, DUMMY);
                false
            }
        }
    }

    /// How many users.
    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_bcrypt_and_sha512_crypt_and_refuses_weaker_schemes_by_line() {
        let bcrypt = bcrypt::hash("s3cret", 4).unwrap().replacen("$2b$", "$2y$", 1);
        // `mkpasswd -m sha-512 -S saltstring 'Hello world!'` (the reference test vector).
        let sha =
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        let file = format!("# users\nalice:{bcrypt}\n\nbob:{sha}\n");
        let h = Htpasswd::parse("u.htpasswd", &file).unwrap();
        assert_eq!(h.len(), 2);
        assert!(h.verify("alice", "s3cret"));
        assert!(!h.verify("alice", "s3cret "));
        assert!(h.verify("bob", "Hello world!"));
        assert!(!h.verify("bob", "hello world!"));
        assert!(!h.verify("carol", "s3cret"));
        for (line, why) in [
            ("dave:$apr1$abc$def", "u.htpasswd:2: user `dave`: Apache MD5 ($apr1$) is not accepted"),
            (
                "dave:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
                "u.htpasswd:2: user `dave`: unsalted SHA-1 ({SHA}) is not accepted",
            ),
            ("dave:abJnggxhB/yWI", "u.htpasswd:2: user `dave`: DES crypt or plain text is not accepted"),
            ("dave:$2y$10$short", "u.htpasswd:2: user `dave`: a malformed bcrypt hash"),
            ("dave", "u.htpasswd:2: not `user:hash`"),
            (&format!("alice:{bcrypt}"), "u.htpasswd:2: user `alice` is listed twice"),
        ] {
            let err = Htpasswd::parse("u.htpasswd", &format!("alice:{bcrypt}\n{line}\n")).unwrap_err();
            assert!(err.starts_with(why), "{line}: {err}");
        }
    }
}
