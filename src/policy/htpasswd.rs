//! htpasswd users for basic auth: `user:hash` lines (auth-file) or user -> hash pairs
//! (auth-map), and the hash formats nginx's `auth_basic_user_file` takes.
//!
//! | format | example prefix | verified by |
//! |---|---|---|
//! | bcrypt | `$2y$`, `$2b$`, `$2a$` | pwhash |
//! | Apache MD5 | `$apr1$` | RustCrypto md-5, Apache's 1000-round scheme (below) |
//! | MD5-crypt, SHA-crypt | `$1$`, `$5$`, `$6$` | pwhash |
//! | SHA-1 | `{SHA}` (base64 of SHA-1), `{SSHA}` (salted) | RustCrypto sha1 |
//! | plain text | `{PLAIN}` | compared as is |
//! | crypt(3) DES | 13 characters | pwhash |
//!
//! Every comparison of a computed hash with the stored one is constant-time.

use std::collections::BTreeMap;

use base64::Engine as _;
use md5::{Digest, Md5};
use sha1::Sha1;

/// One stored password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hash {
    /// Anything `pwhash::unix::verify` recognises (bcrypt, md5-crypt, sha-crypt, DES).
    Unix(String),
    Apr1 {
        salt: String,
        hash: String,
    },
    Sha1(Vec<u8>),
    Ssha {
        digest: Vec<u8>,
        salt: Vec<u8>,
    },
    Plain(String),
}

impl Hash {
    /// Recognise a stored hash; Err names the format problem.
    pub fn parse(s: &str) -> Result<Hash, String> {
        let b64 = |v: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|_| "is not valid base64".to_string())
        };
        if let Some(rest) = s.strip_prefix("$apr1$") {
            let (salt, hash) = rest
                .split_once('$')
                .ok_or("an $apr1$ hash needs `$apr1$salt$hash`")?;
            if salt.len() > 8 || hash.len() != 22 {
                return Err(
                    "an $apr1$ hash has a salt of up to 8 and a hash of 22 characters".into(),
                );
            }
            return Ok(Hash::Apr1 {
                salt: salt.into(),
                hash: hash.into(),
            });
        }
        if let Some(rest) = s.strip_prefix("{SHA}") {
            let d = b64(rest).map_err(|e| format!("{{SHA}} {e}"))?;
            if d.len() != 20 {
                return Err("{SHA} must hold a 20-byte SHA-1 digest".into());
            }
            return Ok(Hash::Sha1(d));
        }
        if let Some(rest) = s.strip_prefix("{SSHA}") {
            let d = b64(rest).map_err(|e| format!("{{SSHA}} {e}"))?;
            if d.len() <= 20 {
                return Err("{SSHA} must hold a SHA-1 digest and a salt".into());
            }
            return Ok(Hash::Ssha {
                digest: d[..20].to_vec(),
                salt: d[20..].to_vec(),
            });
        }
        if let Some(rest) = s.strip_prefix("{PLAIN}") {
            return Ok(Hash::Plain(rest.into()));
        }
        let unix = s.starts_with("$2a$")
            || s.starts_with("$2b$")
            || s.starts_with("$2y$")
            || s.starts_with("$1$")
            || s.starts_with("$5$")
            || s.starts_with("$6$")
            || (s.len() == 13
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/'));
        if unix {
            return Ok(Hash::Unix(s.into()));
        }
        Err("not a known htpasswd hash ($2y$/$2b$/$2a$ bcrypt, $apr1$, $1$, $5$, $6$, {SHA}, {SSHA}, {PLAIN} or crypt)".into())
    }

    /// Whether `password` matches. bcrypt takes milliseconds: call it off the event loop.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Unix(h) => pwhash::unix::verify(password, h),
            Hash::Apr1 { salt, hash } => {
                consteq(apr1(password, salt.as_bytes()).as_bytes(), hash.as_bytes())
            }
            Hash::Sha1(d) => consteq(&Sha1::digest(password), d),
            Hash::Ssha { digest, salt } => {
                let mut h = Sha1::new();
                h.update(password);
                h.update(salt);
                consteq(&h.finalize(), digest)
            }
            Hash::Plain(p) => consteq(password, p.as_bytes()),
        }
    }

    /// Whether checking costs enough to be done on a blocking thread.
    pub fn is_slow(&self) -> bool {
        matches!(self, Hash::Unix(_) | Hash::Apr1 { .. })
    }
}

fn consteq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Apache's `$apr1$` scheme: the FreeBSD MD5-crypt rounds with the magic `$apr1$`, encoded
/// in crypt's base64 alphabet (22 characters). Returns the encoded hash only.
fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];
    let alt = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(MAGIC);
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut sum = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(sum);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(sum);
        } else {
            c.update(password);
        }
        sum = c.finalize();
    }
    const ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut put = |v: u32, n: usize| {
        let mut v = v;
        for _ in 0..n {
            out.push(ALPHABET[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put(
            (u32::from(sum[a]) << 16) | (u32::from(sum[b]) << 8) | u32::from(sum[c]),
            4,
        );
    }
    put(u32::from(sum[11]), 2);
    out
}

/// The users of one auth Secret: user -> (the hash as stored, parsed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    pub users: BTreeMap<String, (String, Hash)>,
}

impl Users {
    /// An htpasswd file (`auth-file`): `user:hash` lines; blank lines and `#` comments are
    /// skipped. Returns the users and a problem per line that could not be used.
    pub fn from_file(text: &str) -> (Users, Vec<String>) {
        let mut users = Users::default();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                problems.push(format!("line {}: no `user:hash`", i + 1));
                continue;
            };
            // A third field (Apache's comment) is not part of the hash.
            let hash = hash.split(':').next().unwrap_or("");
            match Hash::parse(hash) {
                Ok(h) => {
                    users.users.insert(user.to_string(), (hash.to_string(), h));
                }
                Err(e) => problems.push(format!("line {} (user {user}): {e}", i + 1)),
            }
        }
        (users, problems)
    }

    /// An `auth-map`: each key a user, each value its hash.
    pub fn from_map<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (Users, Vec<String>) {
        let mut users = Users::default();
        let mut problems = Vec::new();
        for (user, hash) in pairs {
            match Hash::parse(hash.trim()) {
                Ok(h) => {
                    users
                        .users
                        .insert(user.to_string(), (hash.trim().to_string(), h));
                }
                Err(e) => problems.push(format!("user {user}: {e}")),
            }
        }
        (users, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors made by other tools: `openssl passwd -apr1 -salt S PW`, `openssl passwd -1`,
    // and glibc's crypt(3) (Python's `crypt.crypt`) for bcrypt and DES.
    const VECTORS: &[(&str, &str)] = &[
        ("$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00", "password"),
        ("$apr1$abcdefgh$QAJT99LhVgOB3PeV3AFLe1", "p@ss w0rd:x"),
        ("$1$5pZSV9va$azfrPr6af3Fc7dLblQXVa0", "password"),
        (
            "$2b$04$cHfEYuySRydidtszSn8ls.PrhdgMWc2eDRzHQJYwI6/8NTADWKtnS",
            "password",
        ),
        (
            "$2y$05$abcdefghijklmnopqrstuulXbhLU5N9MDcFlG1r2Raysvz.c5v0j2",
            "s3cret!",
        ),
        ("aZGJuE6EXrjEE", "test"),
        // printf password | openssl dgst -sha1 -binary | base64
        ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "password"),
        ("{PLAIN}hunter2", "hunter2"),
    ];

    #[test]
    fn hashes_from_real_tools_verify_and_wrong_passwords_do_not() {
        for (stored, pw) in VECTORS {
            let h = Hash::parse(stored).unwrap_or_else(|e| panic!("{stored}: {e}"));
            assert!(h.verify(pw.as_bytes()), "{stored} with {pw:?}");
            assert!(!h.verify(b"wrong"), "{stored} with a wrong password");
            assert!(!h.verify(format!("{pw}x").as_bytes()), "{stored}: longer");
        }
        // $2a$ is bcrypt too.
        let a = VECTORS[3].0.replacen("$2b$", "$2a$", 1);
        assert!(Hash::parse(&a).unwrap().verify(b"password"));
    }

    #[test]
    fn salted_sha_verifies() {
        let salt = b"NaCl";
        let mut d = Sha1::new();
        d.update(b"pw");
        d.update(salt);
        let mut raw = d.finalize().to_vec();
        raw.extend_from_slice(salt);
        let stored = format!(
            "{{SSHA}}{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        let h = Hash::parse(&stored).unwrap();
        assert!(h.verify(b"pw") && !h.verify(b"pW"));
    }

    #[test]
    fn unknown_or_broken_hashes_are_errors() {
        for bad in [
            "",
            "md5:abc",
            "$apr1$nosep",
            "$apr1$salt$short",
            "{SHA}notbase64!",
            "{SHA}YWJj",
            "$3$x",
            "toolongforcrypt!",
        ] {
            assert!(Hash::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn htpasswd_files_and_maps_name_their_bad_lines() {
        let text = "# users\nalice:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\n\nbob:{PLAIN}pw:comment\nbroken\ncarol:nope\r\n";
        let (u, problems) = Users::from_file(text);
        assert_eq!(u.users.keys().collect::<Vec<_>>(), ["alice", "bob"]);
        assert!(u.users["bob"].1.verify(b"pw"));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("line 5"), "{problems:?}");
        assert!(problems[1].contains("carol"), "{problems:?}");
        let (u, problems) = Users::from_map([("dave", "{PLAIN}x"), ("eve", "?")]);
        assert_eq!(u.users.len(), 1);
        assert!(problems[0].contains("eve"));
    }
}
